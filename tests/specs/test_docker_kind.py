"""``kernelfleet spec install docker`` without an engine: the kind's kernel.json (argv inside the
image, provisioner config the provisioner reads as meant), its checks (each naming its flag,
hostile values refused in one line), its value parsers for any input (property tests), and the
command line."""

from __future__ import annotations

import json
import os
import re
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernelfleet import __version__
from kernelfleet.cli.spec import DockerInstallApp, SpecApp
from kernelfleet.errors import BadRequest
from kernelfleet.provisioners import docker_spec
from kernelfleet.provisioners.docker_options import DockerOptions
from kernelfleet.provisioners.k8s_pod import quantity
from kernelfleet.specs import builders, kinds
from kernelfleet.specs.kinds import KINDS
from kernelfleet.specs.kinds import docker as docker_kind
from kernelfleet.specs.kinds.docker import (
    DockerKind,
    cpu_limit,
    engine_address,
    gives_root,
    memory_limit,
    mount_entry,
    network_name,
    placement_constraint,
)
from kernelfleet.specs.options import SpecError, SpecOptions
from tests.fuzz.strategies import HOSTILE_WORDS, any_text, fuzz_settings
from tests.specs.test_yarn_kind import kf

DIR = "/srv/kernels/docker_python"
IMAGE = "kernelfleet.test/kernel-python:0.1.0"
ARGV = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
R_ARGV = ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]
#: What a shell, kernel.json's ${VAR} substitution or an HTTP path would read as more than a value.
ACTIVE = re.compile(r"[\x00-\x1f\x7f$`'\"\\;|&<>(){}\s?#%]")


def opts(**kw: Any) -> SpecOptions:
    kw.setdefault("image", IMAGE)
    return SpecOptions(kind="docker", **kw)


def kj(**kw: Any) -> dict[str, Any]:
    return builders.build_kernel_json(opts(**kw), DIR)


def cfg(**kw: Any) -> dict[str, Any]:
    config: dict[str, Any] = kj(**kw)["metadata"]["kernel_provisioner"]["config"]
    return config


# -- kernel.json ---------------------------------------------------------------------------------


def test_a_python_spec_runs_the_images_python_with_messages_for_interrupts() -> None:
    assert kj(python="/opt/py/bin/python3") == {
        "argv": ARGV,
        "display_name": "Python in Docker",
        "language": "python",
        "interrupt_mode": "message",
        "env": {},
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": "kernelfleet-docker",
                "config": {"image": IMAGE, "launch_timeout": 60},
            },
            "kernelfleet": {
                "installer": f"kernelfleet {__version__}",
                "kind": "docker",
                "language": "python",
                "python": "/opt/py/bin/python3",
                "spark": None,
            },
        },
    }
    assert kj(python="/elsewhere/python")["argv"] == ARGV  # the image's python3, always


def test_an_r_spec_is_irkernel_and_a_kernel_class_is_passed_to_ipykernel() -> None:
    spec = kj(language="r")
    assert spec["argv"] == R_ARGV and spec["language"] == "R"
    assert spec["display_name"] == "R in Docker" and spec["interrupt_mode"] == "message"
    assert kj(ipykernel_subclass_name="my.kernels.K")["argv"] == [
        *ARGV,
        "--IPKernelApp.kernel_class=my.kernels.K",
    ]


def test_the_spec_is_its_kernel_json_alone() -> None:
    files = builders.build_spec(opts(), DIR)
    assert files.name == "docker_python"
    assert files.files == {} and files.launchers == {}
    assert builders.build_run_sh(opts()) is None


def test_every_option_maps_onto_the_provisioner_config_only_when_not_default() -> None:
    defaults = cfg(network="bridge", max_cpus=8.0, max_memory="16Gi", max_pids=4096,
                   kernel_uid=1000, kernel_gid=1000, pids=0, stop_grace=5)  # fmt: skip
    assert defaults == {"image": IMAGE, "launch_timeout": 60}
    config = cfg(
        allowed_images=("reg.example:5000/team/kernel-r:2@sha256:" + "a" * 64,),
        docker_host="tcp://10.0.0.5:2376",
        tls_ca="/etc/kf/ca.pem",
        tls_cert="/etc/kf/cert.pem",
        tls_key="/etc/kf/key.pem",
        swarm=True,
        placement=("node.role==worker", " node.labels.gpu != no "),
        network="kernels",
        cpus=" 500m",
        memory="2Gi",
        pids=512,
        max_cpus=4.0,
        max_memory="8Gi",
        max_pids=1024,
        kernel_uid=1500,
        kernel_gid=1600,
        impersonation=True,
        user_ids={"alice": "2001:2002", "bob": " 3000 "},
        user_ids_only=True,
        volume=(
            "/srv/home/{username}:/home/{username}",
            "datasets:/data:ro",
            "/scratch/:/tmp/s:rw",
        ),
        stop_grace=20,
        launch_timeout=30,
        authorized_users=("alice",),
    )
    assert config == {
        "image": IMAGE,
        "allowed_images": ["reg.example:5000/team/kernel-r:2@sha256:" + "a" * 64],
        "docker_host": "tcp://10.0.0.5:2376",
        "tls_ca": "/etc/kf/ca.pem",
        "tls_cert": "/etc/kf/cert.pem",
        "tls_key": "/etc/kf/key.pem",
        "swarm": True,
        "placement": ["node.role==worker", "node.labels.gpu != no"],
        "network": "kernels",
        "impersonation_enabled": True,
        "user_ids": {"alice": "2001:2002", "bob": "3000:3000"},
        "host_users": False,
        "cpus": "500m",
        "memory": "2Gi",
        "max_cpus": 4,
        "max_memory": "8Gi",
        "volumes": [
            {"source": "/srv/home/{username}", "target": "/home/{username}", "read_only": False},
            {"source": "datasets", "target": "/data", "read_only": True},
            {"source": "/scratch", "target": "/tmp/s", "read_only": False},
        ],
        "kernel_uid": 1500,
        "kernel_gid": 1600,
        "pids": 512,
        "max_pids": 1024,
        "stop_grace": 20,
        "authorized_users": ["alice"],
        "launch_timeout": 30,
    }
    assert cfg(docker_host="unix:///run/kf-docker/docker.sock", max_cpus=2.5) == {
        "image": IMAGE,
        "docker_host": "unix:///run/kf-docker/docker.sock",
        "max_cpus": 2.5,
        "launch_timeout": 60,
    }


def test_every_config_key_the_docker_kind_writes_is_read_by_its_provisioner_as_meant() -> None:
    (entry,) = entry_points(group="jupyter_client.kernel_provisioners", name="kernelfleet-docker")
    provisioner = entry.load()
    settings = set(provisioner.class_traits())
    written = cfg(
        allowed_images=("reg/k:1",),
        docker_host="tcp://engine.example:2376",
        tls_ca="/c",
        tls_cert="/t",
        tls_key="/k",
        swarm=True,
        placement=("node.labels.zone==a",),
        network="kernels",
        cpus="1",
        memory="1Gi",
        pids=256,
        max_cpus=2.5,
        max_memory="4Gi",
        max_pids=1000,
        kernel_uid=1500,
        kernel_gid=1600,
        impersonation=True,
        user_ids={"alice": "2001"},
        user_ids_only=True,
        volume=("/srv/home/{username}:/home/{username}:ro",),
        stop_grace=9,
        authorized_users=("a",),
        unauthorized_users=("b",),
    )
    assert set(written) <= settings, set(written) - settings
    prov = provisioner(**written)
    prov.check_options("docker_python")  # nothing the provisioner refuses at launch
    assert (prov.image, prov.network, prov.swarm) == (IMAGE, "kernels", True)
    assert prov.placement == ["node.labels.zone==a"] and prov.stop_grace == 9
    assert prov.endpoint().url == "tcp://engine.example:2376" and prov.endpoint().tls_key == "/k"
    assert prov.user({"KERNEL_USERNAME": "alice"}) == ("alice", 2001, 2001)
    assert prov.host_users is False and prov.impersonation_enabled is True
    assert prov.limits() == docker_spec.Limits("1", "1Gi", 256, 2.5, "4Gi", 1000)
    assert prov.mounts() == (docker_spec.Mount("/srv/home/{username}", "/home/{username}", True),)
    # the defaults the spec leaves out are the provisioner's own
    traits = DockerOptions.class_traits()
    for name, value in (
        ("network", docker_kind.DEFAULT_NETWORK),
        ("kernel_uid", docker_kind.DEFAULT_UID),
        ("kernel_gid", docker_kind.DEFAULT_UID),
        ("max_cpus", docker_kind.DEFAULT_MAX_CPUS),
        ("max_memory", docker_kind.DEFAULT_MAX_MEMORY),
        ("max_pids", docker_kind.DEFAULT_MAX_PIDS),
        ("stop_grace", docker_kind.DEFAULT_STOP_GRACE),
        ("pids", 0),
        ("host_users", True),
    ):
        assert traits[name].default_value == value, name


def test_the_kind_is_registered_with_its_own_command() -> None:
    assert KINDS["docker"] is DockerKind and DockerInstallApp.kind_class is DockerKind
    assert kinds.by_provisioner("kernelfleet-docker") is DockerKind
    assert list(DockerKind.option_traits())[:3] == ["image", "allowed_images", "docker_host"]
    for name, trait in DockerKind.option_traits().items():
        (env,) = trait.metadata["env"]
        assert env.startswith("KF_SPEC_DOCKER_"), name
        assert "Default:" in (trait.help or "") or name == "image", name


# -- refusals ------------------------------------------------------------------------------------

SHELL = ["$(id)", "`id`", "a;id", "a|id", "a&&id", "a\nb", "a\x00b", "${HOME}", "a b", "'a'"]


def _refusals() -> list[tuple[dict[str, Any], str]]:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"image": ""}, "--image is required"),
        ({"image": "kernelfleet.test/kernel-python"}, "has no tag: name the version"),
        ({"image": "Kernel:1"}, "--image 'Kernel:1' is not an image reference"),
        ({"image": "../k:1"}, "--image"),
        ({"image": "k:" + "1" * 200}, "--image"),
        ({"allowed_images": ("ok:1", "a/../b:1")}, "--allowed-images: 'a/../b:1'"),
        ({"docker_host": "ssh://me@host"}, "ssh:// is not supported"),
        ({"docker_host": "tcp://engine.example"}, "--docker-host 'tcp://engine.example' is not"),
        ({"docker_host": "tcp://h:99999999999999999999"}, "--docker-host"),
        ({"docker_host": "tcp://h:0"}, "--docker-host"),
        ({"docker_host": "tcp://u:p@h:2376"}, "--docker-host"),
        ({"docker_host": "unix://run/docker.sock"}, "--docker-host"),
        ({"docker_host": "unix:///run/../etc/docker.sock"}, "--docker-host"),
        ({"docker_host": "http://h:2375/x"}, "--docker-host"),
        ({"tls_ca": "/c"}, "--tls-ca applies to a tcp:// engine only"),
        ({"docker_host": "unix:///d.sock", "tls_cert": "/c"}, "--tls-cert applies to a tcp://"),
        ({"docker_host": "tcp://h:2376", "tls_key": "/k"}, "--tls-key applies with --tls-cert"),
        ({"docker_host": "tcp://h:2376", "tls_ca": "ca.pem"}, "--tls-ca must be an absolute"),
        ({"docker_host": "tcp://h:2376", "tls_cert": "/c", "tls_key": "/k\n"}, "--tls-key must"),
        ({"placement": ("node.role==worker",)}, "--placement applies with --swarm only"),
        ({"swarm": True, "placement": ("node.role=worker",)}, "is not a placement constraint"),
        ({"swarm": True, "placement": ("ok.attr==x",)}, "--placement 'ok.attr==x' is not"),
        ({"swarm": True, "placement": ("node.role==" + "w" * 300,)}, "--placement"),
        ({"network": "host"}, "--network 'host' cannot hold kernels"),
        ({"network": "none"}, "--network 'none' cannot hold kernels"),
        ({"network": ".."}, "--network '..' is not a Docker network name"),
        ({"network": "-x"}, "--network '-x' is not a Docker network name"),
        ({"network": "a/b"}, "--network"),
        ({"network": "n" * 200}, "--network"),
        ({"cpus": "lots"}, "--cpus 'lots' is not an amount"),
        ({"cpus": "0.001"}, "--cpus '0.001' is out of range: from 0.01 to 8 \\(--max-cpus\\)"),
        ({"cpus": "9"}, "--cpus '9' is out of range"),
        ({"cpus": "9" * 400}, "--cpus .* is too large"),
        ({"memory": "2GB"}, "--memory '2GB' is not an amount"),
        ({"memory": "4Mi"}, "--memory '4Mi' is less than 6Mi"),
        ({"memory": "32Gi"}, "--memory '32Gi' is more than --max-memory 16Gi"),
        ({"pids": 8}, "--pids 8 is out of range: from 16 to 4096"),
        ({"pids": 10**30}, "--pids"),
        ({"pids": -1}, "--pids"),
        ({"max_cpus": float("nan")}, "--max-cpus must be a number of CPUs"),
        ({"max_cpus": float("inf")}, "--max-cpus"),
        ({"max_cpus": 1e300}, "--max-cpus"),
        ({"max_cpus": 0.0}, "--max-cpus"),
        ({"max_memory": "lots"}, "--max-memory 'lots' is not an amount"),
        ({"max_memory": "99999999Ti"}, "--max-memory '99999999Ti' is more than 1024Ti"),
        ({"max_memory": "1" * 400}, "--max-memory .* is too large"),
        ({"max_pids": 2**40}, "--max-pids 1099511627776 is out of range"),
        ({"max_pids": 0}, "--max-pids"),
        ({"kernel_uid": 0}, "--kernel-uid 0 is out of range: from 1"),
        ({"kernel_gid": 2**63}, "--kernel-gid"),
        ({"user_ids": {"alice": "2001"}}, "--user-ids applies with --impersonation only"),
        ({"user_ids_only": True}, "--user-ids-only applies with --impersonation only"),
        ({"impersonation": True, "user_ids": {"Alice": "2001"}}, "--user-ids 'Alice' is not a"),
        ({"impersonation": True, "user_ids": {"a": "0"}}, "--user-ids a=0: uid and gid must"),
        ({"impersonation": True, "user_ids": {"a": "9" * 40}}, "--user-ids a="),
        ({"volume": ("/srv",)}, "--volume '/srv' is not SOURCE:TARGET"),
        ({"volume": ("/a:/b:rx",)}, "--volume '/a:/b:rx' is not SOURCE:TARGET"),
        ({"volume": ("/srv/../etc:/x",)}, "the host path must be an absolute path .* '\\.\\.'"),
        ({"volume": ("/srv:/x/../y",)}, "the target must be an absolute path"),
        ({"volume": ("../srv:/x",)}, "the source must be an absolute host path or a volume"),
        ({"volume": ("/:/host",)}, "/ may not be mounted into kernels"),
        ({"volume": ("/var:/v",)}, "/var may not be mounted"),
        ({"volume": ("/var/run/docker.sock:/s",)}, "may not be mounted"),
        ({"volume": ("/proc/1:/p",)}, "may not be mounted"),
        ({"volume": ("/{username}:/u",)}, "may not be mounted"),
        ({"volume": ("/var/lib/{username}:/u",)}, "may not be mounted"),
        ({"volume": ("/srv:/",)}, "the target may not be /"),
        ({"volume": ("/a:/x", "/b:/x/")}, "--volume: target /x is given twice"),
        (
            {"docker_host": "unix:///run/kf-docker/docker.sock", "volume": ("/run/kf-docker:/d",)},
            "/run/kf-docker may not be mounted",
        ),
        ({"stop_grace": -1}, "--stop-grace -1 is out of range: from 0 to 3600 seconds"),
        ({"stop_grace": 10**12}, "--stop-grace"),
        ({"spark": True}, "Spark and Scala kernels are not supported by 'spec install docker'"),
        ({"language": "scala", "toree_jar": "/t.jar"}, "Spark and Scala kernels"),
        ({"remote_hosts": ("h1",)}, "--remote-hosts only applies to 'spec install ssh'"),
        ({"namespace": "team-a"}, "--namespace only applies to 'spec install k8s'"),
        ({"launch_timeout": 0.0}, "--launch-timeout must be a positive"),
    ]
    for bad in SHELL:
        cases += [
            ({"image": f"k:1{bad}"}, "--image"),
            ({"docker_host": f"tcp://h{bad}:2376"}, "--docker-host"),
            ({"docker_host": "tcp://h:2376", "tls_ca": f"/c{bad}"}, "--tls-ca"),
            ({"swarm": True, "placement": (f"node.role==w{bad}",)}, "--placement"),
            ({"network": f"n{bad}"}, "--network"),
            ({"cpus": f"1{bad}"}, "--cpus"),
            ({"memory": f"1Gi{bad}"}, "--memory"),
            ({"max_memory": f"1Gi{bad}"}, "--max-memory"),
            ({"impersonation": True, "user_ids": {f"a{bad}": "2001"}}, "--user-ids"),
            ({"impersonation": True, "user_ids": {"a": f"2001{bad}"}}, "--user-ids"),
            ({"volume": (f"/srv/x{bad}:/x",)}, "--volume"),
            ({"volume": (f"/srv:/x{bad}",)}, "--volume"),
        ]
    return cases


@pytest.mark.parametrize(("values", "match"), _refusals())
def test_a_value_that_cannot_make_a_working_spec_is_refused_naming_its_flag(
    values: dict[str, Any], match: str
) -> None:
    with pytest.raises(SpecError, match=match) as caught:
        kj(**values)
    assert "\n" not in str(caught.value)  # one line: cause, then what to do


def test_hostile_free_text_is_stored_as_inert_json() -> None:
    name = "Py $(touch /tmp/x) `id` ${HOME} 'q' \"d\""
    files = builders.build_spec(opts(display_name=name), DIR)
    assert files.kernel_json["display_name"] == name and files.kernel_json["env"] == {}
    assert files.files == {} and files.launchers == {}
    assert json.loads(json.dumps(files.kernel_json))["display_name"] == name


# -- any value given to a flag: refused, or JSON data and nothing else ----------------------------

hostile = st.sampled_from(HOSTILE_WORDS) | any_text
image_like = st.from_regex(
    r"([a-z0-9.]{1,8}(:[0-9]{1,5})?/)?[a-z0-9._-]{1,10}(/[a-z0-9_-]{1,6})?(:[A-Za-z0-9_.-]{0,8})?",
    fullmatch=True,
)
network_like = st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True)
constraint_like = st.from_regex(
    r"(node\.(role|hostname|labels\.[a-z.]{1,6})|engine\.labels\.[a-z]{1,5})"
    r" ?(==|!=) ?[a-z0-9.]{1,6}",
    fullmatch=True,
)


def _inert(value: str) -> bool:
    return not ACTIVE.search(value)


def _only_as_data(flag: str, text: str, **values: Any) -> dict[str, Any] | None:
    """The config of a spec with *values*, or None when it is refused (in one line, naming
    *flag*); an accepted spec's argv is the fixed one, whatever the value."""
    try:
        spec = kj(**values)
    except SpecError as exc:
        assert str(exc).startswith(flag) and "\n" not in str(exc)
        return None
    assert spec["argv"] == ARGV and spec["env"] == {}  # the value reached no command line
    config: dict[str, Any] = json.loads(json.dumps(spec))["metadata"]["kernel_provisioner"][
        "config"
    ]
    return config


@fuzz_settings(400)
@given(text=image_like | hostile)
def test_any_image_is_refused_or_stored_verbatim_as_json_data(text: str) -> None:
    config = _only_as_data("--image", text, image=text)
    if config is not None:
        assert config["image"] == text.strip() and _inert(config["image"])


@fuzz_settings(400)
@given(text=network_like | hostile)
def test_any_network_is_refused_or_stored_verbatim_as_json_data(text: str) -> None:
    config = _only_as_data("--network", text, network=text)
    if config is not None:
        assert config.get("network", "bridge") == text.strip() and _inert(text.strip())
        assert docker_spec.check_network(text.strip()) is None


@fuzz_settings(400)
@given(text=constraint_like | hostile)
def test_any_placement_is_refused_or_stored_verbatim_as_json_data(text: str) -> None:
    config = _only_as_data("--placement", text, swarm=True, placement=(text,))
    if config is not None:
        (stored,) = config["placement"]
        assert stored == text.strip() and not re.search(r"[\x00-\x1f\x7f$`'\"\\;|&<>]", stored)
        assert docker_spec.check_constraints([stored]) is None


# -- the value parsers, for any input ------------------------------------------------------------


@fuzz_settings(300)
@given(
    text=st.from_regex(r"(unix:///[a-z/.]{1,12}|tcp://[a-z0-9.-]{1,10}(:\d{1,6})?)", fullmatch=True)
    | hostile
)
def test_an_accepted_engine_address_is_one_the_provisioner_connects_to(text: str) -> None:
    from kernelfleet.transport.docker_api import parse_host

    try:
        value = engine_address(text)
    except SpecError as exc:
        assert str(exc).startswith("--docker-host ")
        return
    assert _inert(value) and value.startswith(("unix:///", "tcp://"))
    scheme, where = parse_host(value)
    assert scheme in ("unix", "tcp") and ".." not in where.split("/")


quantity_like = st.from_regex(r"[0-9]{1,6}(\.[0-9]{1,3})?(m|k|Ki|M|Mi|G|Gi|T|Ti)?", fullmatch=True)


@fuzz_settings(300)
@given(text=quantity_like | hostile, max_cpus=st.sampled_from([0.5, 8.0, 64.0]))
def test_an_accepted_cpu_limit_is_one_every_request_gets(text: str, max_cpus: float) -> None:
    try:
        value = cpu_limit(text, max_cpus)
    except SpecError as exc:
        assert str(exc).startswith("--cpus ")
        return
    assert _inert(value)
    params = request({}, docker_spec.Limits(cpus=value, max_cpus=max_cpus))
    assert params.nano_cpus == round(quantity(value) * 1e9) > 0


@fuzz_settings(300)
@given(text=quantity_like | hostile, bound=st.sampled_from(["16Gi", "1Gi", "100M"]))
def test_an_accepted_memory_limit_is_one_every_request_gets(text: str, bound: str) -> None:
    try:
        value = memory_limit(text, "--memory", bound)
    except SpecError as exc:
        assert str(exc).startswith("--memory ")
        return
    assert _inert(value)
    params = request({}, docker_spec.Limits(memory=value, max_memory=bound))
    assert 6 * 2**20 <= params.memory <= quantity(bound)


def request(env: dict[str, str], limits: docker_spec.Limits, **kw: Any) -> Any:
    values: dict[str, Any] = {
        "kernel_id": "k", "kernel_name": "docker_python", "name": "kf-k", "image": IMAGE,
        "allowed_images": (), "network": "bridge", "uid": 1000, "gid": 1000,
        "username": "alice", "limits": limits, "mounts": (),
    }  # fmt: skip
    values.update(kw)
    return docker_spec.request_params(env, **values)


path_like = st.from_regex(r"(/[a-z.{}]{0,6}|\{username\}){1,4}", fullmatch=True) | st.from_regex(
    r"[a-z]{1,6}", fullmatch=True
)


@fuzz_settings(500)
@given(
    source=path_like | hostile,
    target=path_like | hostile,
    user=st.from_regex(r"[a-z_][a-z0-9_.-]{0,31}", fullmatch=True),
)
def test_an_accepted_mount_never_gives_a_kernel_root_whoever_the_user(
    source: str, target: str, user: str
) -> None:
    try:
        entry = mount_entry(f"{source}:{target}")
    except SpecError as exc:
        assert str(exc).startswith("--volume ") and "\n" not in str(exc)
        return
    for path in (entry["source"], entry["target"]):
        assert _inert(path.replace("{username}", "u"))
    (mount,) = docker_spec.parse_mounts([entry])
    try:
        params = request({}, docker_spec.Limits(), mounts=(mount,), username=user)
    except BadRequest:  # the provisioner's own '..' refusal, at launch
        return
    (chosen,) = params.mounts
    if chosen.bind:
        assert not gives_root(chosen.source), (entry, user)
        assert not {".", ".."} & set(chosen.source.split("/")[1:])


@fuzz_settings(300)
@given(text=network_like | hostile)
def test_an_accepted_network_is_a_plain_name(text: str) -> None:
    try:
        name = network_name(text)
    except SpecError as exc:
        assert str(exc).startswith("--network ")
        return
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name) and name not in ("host", "none")


@fuzz_settings(300)
@given(text=constraint_like | hostile)
def test_an_accepted_constraint_is_an_attribute_an_operator_and_a_plain_value(text: str) -> None:
    try:
        value = placement_constraint(text)
    except SpecError as exc:
        assert str(exc).startswith("--placement ")
        return
    assert re.fullmatch(r"(node|engine)\.[a-z.]+ ?(==|!=) ?[a-z0-9.]+", value)


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture
def home(prefix: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith(("KF_DOCKER_", "KF_CHECK_", "DOCKER_")):
            monkeypatch.delenv(name)
    return prefix


def test_spec_install_docker_writes_the_spec(home: Path) -> None:
    code, out, err = kf(
        SpecApp,
        "install",
        "docker",
        f"--prefix={home}",
        "--kernel-name=team_py",
        f"--image={IMAGE}",
        "--docker-host=unix:///run/kf-docker/docker.sock",
        "--network=kernels",
        "--cpus=1",
        "--memory=2Gi",
        "--pids=512",
        "--impersonation",
        "--user-ids",
        "alice=2001:2001",
        "--user-ids=bob=3000",
        "--volume=/srv/home/{username}:/home/{username}",
        "--volume",
        "datasets:/data:ro",
    )
    assert code == 0, err
    spec_dir = home / "share/jupyter/kernels/team_py"
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["argv"] == ARGV and spec["interrupt_mode"] == "message"
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "kernelfleet-docker",
        "config": {
            "image": IMAGE,
            "docker_host": "unix:///run/kf-docker/docker.sock",
            "network": "kernels",
            "impersonation_enabled": True,
            "user_ids": {"alice": "2001:2001", "bob": "3000:3000"},
            "cpus": "1",
            "memory": "2Gi",
            "volumes": [
                {"source": "/srv/home/{username}", "target": "/home/{username}",
                 "read_only": False},
                {"source": "datasets", "target": "/data", "read_only": True},
            ],
            "pids": 512,
            "launch_timeout": 60,
        },
    }  # fmt: skip
    assert {p.name for p in spec_dir.iterdir() if not p.name.startswith("logo-")} == {"kernel.json"}
    assert out.splitlines()[0] == f"Installed kernelspec team_py in {spec_dir}"
    assert "kernelfleet hosts check --spec team_py" in out and "never pulls" in out
    assert err == ""


def test_spec_install_docker_warns_of_what_it_cannot_make_safe(home: Path) -> None:
    code, _, err = kf(SpecApp, "install", "docker", "--dry-run", f"--image={IMAGE}",
                      "--docker-host=tcp://10.0.0.5:2375", "--swarm", "--impersonation",
                      "--user-ids-only")  # fmt: skip
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 3, err
    assert "without --tls-cert: whoever reaches that port is root" in warnings[0]
    assert "--user-ids-only without --user-ids: every user is refused" in warnings[1]
    assert "--swarm on the bridge network" in warnings[2]


def test_spec_install_docker_options_from_env_and_config_file(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KF_SPEC_DOCKER_IMAGE", IMAGE)
    monkeypatch.setenv("KF_SPEC_DOCKER_SWARM", "true")
    monkeypatch.setenv("KF_SPEC_DOCKER_PLACEMENT", '["node.role==worker", "node.labels.a==b"]')
    monkeypatch.setenv("KF_SPEC_DOCKER_USER_IDS", '{"alice": "2001"}')
    cfg_dir = home.parent / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "kernelfleet_config.py").write_text(
        "c.DockerInstallApp.network = 'kernels'\nc.DockerInstallApp.impersonation = True\n"
    )
    code, out, err = kf(SpecApp, "install", "docker", "--dry-run", "--language=r")
    assert code == 0, err
    spec = json.loads(out)
    assert spec["argv"] == R_ARGV
    assert spec["metadata"]["kernel_provisioner"]["config"] == {
        "image": IMAGE,
        "swarm": True,
        "placement": ["node.role==worker", "node.labels.a==b"],
        "network": "kernels",
        "impersonation_enabled": True,
        "user_ids": {"alice": "2001:2001"},
        "launch_timeout": 60,
    }


def test_spec_install_docker_bad_values_are_one_line_usage_errors(home: Path) -> None:
    for argv, message in (
        ([], "--image is required"),
        (["--image=x:1;id"], "--image 'x:1;id' is not an image reference"),
        ([f"--image={IMAGE}", "--network=host"], "--network 'host' cannot hold kernels"),
        ([f"--image={IMAGE}", "--docker-host=ssh://h"], "--docker-host 'ssh://h' is not"),
        ([f"--image={IMAGE}", "--placement=node.role==worker"], "--placement applies with"),
        ([f"--image={IMAGE}", "--memory=$(id)"], "--memory '$(id)' is not an amount"),
        ([f"--image={IMAGE}", "--pids=99999999999999999999"], "--pids 99999999999999999999 is"),
        ([f"--image={IMAGE}", "--volume=/etc/../:/x"], "--volume '/etc/../:/x'"),
        ([f"--image={IMAGE}", "--user-ids", "a=1"], "--user-ids applies with --impersonation"),
        ([f"--image={IMAGE}", "--spark"], "Spark and Scala kernels are not supported"),
    ):
        code, out, err = kf(SpecApp, "install", "docker", "--dry-run", *argv)
        assert (code, out) == (2, ""), err
        assert err.startswith("kernelfleet spec install docker: error: ") and message in err
        assert len(err.splitlines()) == 1


def test_spec_install_docker_help_shows_its_options_and_defaults(home: Path) -> None:
    code, out, _ = kf(SpecApp, "install", "docker", "--help")
    assert code == 0
    for text in (
        "--image=<Unicode>",
        "KF_SPEC_DOCKER_IMAGE",
        "--docker-host=<Unicode>",
        "--placement=<list-item-1>...",
        "--volume=<list-item-1>...",
        "--user-ids=<key-1>=<value-1>...",
        "--swarm\n",
        "--user-ids-only\n",
        "Default: bridge",
        "Default: 60.0",
        "kernelfleet spec install docker --image=reg:5000/kernel-python:1.0 --swarm",
    ):
        assert text in out, text
    code, out, _ = kf(SpecApp, "install", "--help")
    assert code == 0 and "'docker' (kernels as Docker containers" in " ".join(out.split())
