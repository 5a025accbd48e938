"""``kernelfleet spec install k8s`` without a cluster: the kind's kernel.json (argv inside the
image, provisioner config), the pod template it writes, its checks (each naming its flag, hostile
values refused), its value parsers for any input (property tests), and the command line."""

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
from kernelfleet.cli.spec import K8sInstallApp, SpecApp
from kernelfleet.provisioners import k8s_pod
from kernelfleet.provisioners.k8s_options import parse_ids
from kernelfleet.specs import builders, kinds
from kernelfleet.specs.kinds import KINDS
from kernelfleet.specs.kinds.k8s import (
    IMAGE_RE,
    K8sKind,
    api_server_url,
    cpu_amount,
    file_path,
    image_reference,
    memory_amount,
    namespace_name,
    quota,
    user_id_map,
)
from kernelfleet.specs.options import SpecError, SpecOptions
from tests.fuzz.strategies import HOSTILE_WORDS, any_text, fuzz_settings
from tests.specs.test_yarn_kind import kf

DIR = "/srv/kernels/k8s_python"
IMAGE = "kernelfleet.test/kernel-python:0.1.0"
ARGV = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
R_ARGV = ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]
TEMPLATE = "pod-template.yaml.j2"
#: What a shell, YAML or kernel.json's ${VAR} substitution would read as more than a value.
ACTIVE = re.compile(r"[\x00-\x1f\x7f$`'\"\\;|&<>(){}\s]")


def opts(**kw: Any) -> SpecOptions:
    kw.setdefault("image", IMAGE)
    return SpecOptions(kind="k8s", **kw)


def kj(**kw: Any) -> dict[str, Any]:
    return builders.build_kernel_json(opts(**kw), DIR)


def cfg(**kw: Any) -> dict[str, Any]:
    config: dict[str, Any] = kj(**kw)["metadata"]["kernel_provisioner"]["config"]
    return config


# -- kernel.json and the spec's files ------------------------------------------------------------


def test_a_python_spec_runs_the_images_python_with_messages_for_interrupts() -> None:
    assert kj(python="/opt/py/bin/python3") == {
        "argv": ARGV,
        "display_name": "Python on Kubernetes",
        "language": "python",
        "interrupt_mode": "message",
        "env": {},
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": "kernelfleet-k8s",
                "config": {"image": IMAGE, "launch_timeout": 120},
            },
            "kernelfleet": {
                "installer": f"kernelfleet {__version__}",
                "kind": "k8s",
                "language": "python",
                "python": "/opt/py/bin/python3",
                "spark": None,
            },
        },
    }
    # the gateway's --python is not the image's: argv stays python3 whatever it is
    assert kj(python="/elsewhere/python")["argv"] == ARGV


def test_an_r_spec_is_irkernel_and_a_kernel_class_is_passed_to_ipykernel() -> None:
    spec = kj(language="r")
    assert spec["argv"] == R_ARGV and spec["language"] == "R"
    assert spec["display_name"] == "R on Kubernetes" and spec["interrupt_mode"] == "message"
    assert kj(ipykernel_subclass_name="my.kernels.K")["argv"] == [
        *ARGV,
        "--IPKernelApp.kernel_class=my.kernels.K",
    ]


def test_the_spec_holds_the_built_in_pod_template_and_no_run_sh_or_launchers() -> None:
    files = builders.build_spec(opts(), DIR)
    assert files.name == "k8s_python"
    assert files.files == {TEMPLATE: (k8s_pod.DEFAULT_TEMPLATE, 0o644)}
    assert files.launchers == {}
    assert builders.build_run_sh(opts()) is None
    # the template written is one the provisioner renders into a pod of the spec's image
    params = k8s_pod.PodParams("k1", "k8s_python", "kf-k1", "ns", IMAGE)
    pod = k8s_pod.render_template(files.files[TEMPLATE][0], params)
    assert pod["spec"]["containers"][0]["image"] == IMAGE


def test_every_option_maps_onto_the_provisioner_config_only_when_not_default() -> None:
    assert cfg(max_cpus=8.0, max_memory="16Gi", kernel_uid=1000, namespace_mode="shared") == {
        "image": IMAGE,
        "launch_timeout": 120,
    }
    config = cfg(
        allowed_images=("reg.example:5000/team/kernel-python:2@sha256:" + "a" * 64,),
        namespace="team-a",
        allowed_namespaces=("team-b", "team-c"),
        api_server="https://10.0.0.1:6443/",
        token_file="/etc/kf/token",
        ca_file="/etc/kf/ca.crt",
        kernel_uid=1500,
        kernel_gid=1600,
        impersonation=True,
        user_ids={"alice": "2001:2002", "bob": " 3000 "},
        cpus=" 500m",
        memory="2Gi",
        max_cpus=4.0,
        max_memory="8Gi",
        max_gpus=2,
        launch_timeout=300,
        authorized_users=("alice",),
    )
    assert config == {
        "image": IMAGE,
        "allowed_images": ["reg.example:5000/team/kernel-python:2@sha256:" + "a" * 64],
        "namespace": "team-a",
        "allowed_namespaces": ["team-b", "team-c"],
        "api_server": "https://10.0.0.1:6443",
        "token_file": "/etc/kf/token",
        "ca_file": "/etc/kf/ca.crt",
        "kernel_uid": 1500,
        "kernel_gid": 1600,
        "impersonation_enabled": True,
        "user_ids": {"alice": "2001:2002", "bob": "3000:3000"},
        "cpus": "500m",
        "memory": "2Gi",
        "max_cpus": 4,
        "max_memory": "8Gi",
        "max_gpus": 2,
        "authorized_users": ["alice"],
        "launch_timeout": 300,
    }
    per_kernel = cfg(
        namespace_mode="Per-Kernel",
        namespace_quota={"pods": "3", "limits.memory": "4Gi"},
        kubeconfig="/etc/kf/kubeconfig",
        kube_context="kf@cluster",
    )
    assert per_kernel == {
        "image": IMAGE,
        "namespace_mode": "per-kernel",
        "namespace_quota": {"pods": "3", "limits.memory": "4Gi"},
        "kubeconfig": "/etc/kf/kubeconfig",
        "kube_context": "kf@cluster",
        "launch_timeout": 120,
    }


def test_every_config_key_the_k8s_kind_writes_is_a_setting_its_provisioner_takes() -> None:
    (entry,) = entry_points(group="jupyter_client.kernel_provisioners", name="kernelfleet-k8s")
    provisioner = entry.load()
    settings = set(provisioner.class_traits())
    for mode, extra in (
        ("shared", {"namespace": "team-a", "api_server": "https://k:6443", "ca_file": "/c"}),
        ("per-kernel", {"namespace_quota": {"pods": "2"}, "kubeconfig": "/k", "kube_context": "c"}),
    ):
        written = cfg(
            namespace_mode=mode,
            allowed_images=("reg/k:1",),
            allowed_namespaces=("team-b",),
            token_file="/t" if mode == "shared" else "",
            kernel_uid=1500,
            kernel_gid=1600,
            impersonation=True,
            user_ids={"alice": "2001"},
            cpus="1",
            memory="1Gi",
            max_cpus=2.5,
            max_memory="4Gi",
            max_gpus=1,
            authorized_users=("a",),
            unauthorized_users=("b",),
            **extra,
        )
        assert set(written) <= settings, set(written) - settings
        # and the provisioner takes the values as they are written, with the same meaning
        prov = provisioner(**written)
        assert prov.image == IMAGE and prov.namespace_mode == mode
        assert prov.user({"KERNEL_USERNAME": "alice"}) == ("alice", 2001, 2001)
        assert prov.limits() == k8s_pod.Limits(2.5, "4Gi", 1, "1", "1Gi")
        assert prov.choose_namespace({"KERNEL_NAMESPACE": "team-b"}, "k")[0] == "team-b"
        conn = prov.connection()
        assert (conn.server, conn.kubeconfig) == (
            written.get("api_server", ""),
            written.get("kubeconfig", ""),
        )


def test_the_kind_is_registered_with_its_own_command() -> None:
    assert KINDS["k8s"] is K8sKind and K8sInstallApp.kind_class is K8sKind
    assert kinds.by_provisioner("kernelfleet-k8s") is K8sKind
    names = list(K8sKind.option_traits())
    assert names[:3] == ["image", "allowed_images", "namespace_mode"]
    for name, trait in K8sKind.option_traits().items():
        (env,) = trait.metadata["env"]
        assert env.startswith("KF_SPEC_K8S_"), name
        assert "Default:" in (trait.help or "") or name == "image", name


# -- refusals ------------------------------------------------------------------------------------

HOSTILE_IMAGES = ["k:1'$(id)", "k:1\nimage: evil", 'k:1"', "k:1 ;id", "`id`:1", "k:${HOME}"]


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"image": ""}, "--image is required"),
        ({"image": "kernelfleet.test/kernel-python"}, "has no tag: name the version"),
        ({"image": "Kernel:1"}, "--image 'Kernel:1' is not an image reference"),
        ({"image": "k:"}, "--image 'k:' is not an image reference"),
        ({"image": "a//b:1"}, "--image"),
        ({"image": "k@sha256:abc"}, "--image"),
        *(({"image": bad}, "--image .* is not an image reference") for bad in HOSTILE_IMAGES),
        ({"allowed_images": ("ok:1", "$(id)")}, "--allowed-images: '\\$\\(id\\)'"),
        ({"namespace": "Team-A"}, "--namespace 'Team-A' is not a namespace name"),
        ({"namespace": "a" * 64}, "--namespace"),
        ({"namespace": "team-a;id"}, "--namespace"),
        ({"namespace": "-a"}, "--namespace"),
        ({"allowed_namespaces": ("ok", "b\nc")}, "--allowed-namespaces: 'b\\\\nc'"),
        ({"namespace_mode": "per-kernel", "namespace": "a"}, "--namespace applies to"),
        ({"namespace_quota": {"pods": "2"}}, "--namespace-quota applies to"),
        (
            {"namespace_mode": "per-kernel", "namespace_quota": {"pods": "$(id)"}},
            "--namespace-quota pods '\\$\\(id\\)' is not a Kubernetes quantity",
        ),
        (
            {"namespace_mode": "per-kernel", "namespace_quota": {"a b": "1"}},
            "--namespace-quota 'a b' is not a quota resource name",
        ),
        ({"api_server": "10.0.0.1:6443"}, "--api-server '10.0.0.1:6443' is not an API server"),
        ({"api_server": "http://k8s.example:8080"}, "http only for localhost"),
        ({"api_server": "https://u:p@k:6443"}, "--api-server"),
        ({"api_server": "https://k:6443/?x=1"}, "--api-server"),
        ({"api_server": "https://k:99999"}, "--api-server"),
        ({"api_server": "https://$(id):6443"}, "--api-server"),
        ({"api_server": "https://k:6443\n"}, "--api-server"),
        ({"api_server": "https://k:1", "kubeconfig": "/k"}, "--api-server and --kubeconfig"),
        ({"api_server": "https://k:1", "kube_context": "c"}, "--api-server and --kube-context"),
        ({"token_file": "/t"}, "--token-file applies with --api-server only"),
        ({"ca_file": "/c"}, "--ca-file applies with --api-server only"),
        ({"api_server": "https://k:1", "token_file": "token"}, "--token-file must be an abs"),
        ({"api_server": "https://k:1", "token_file": "/t/$(id)"}, "--token-file"),
        ({"api_server": "https://k:1", "ca_file": "/c'a"}, "--ca-file"),
        ({"api_server": "https://k:1", "ca_file": "/c\nx"}, "--ca-file"),
        ({"kubeconfig": "/k/\ud800"}, "--kubeconfig"),
        ({"kube_context": "a b"}, "--kube-context 'a b' is not a context name"),
        ({"kube_context": "$(id)"}, "--kube-context"),
        ({"cpus": "lots"}, "--cpus 'lots' is not a Kubernetes quantity"),
        ({"cpus": "0"}, "--cpus '0' is out of range"),
        ({"cpus": "9"}, "at most 8 \\(--max-cpus\\)"),
        ({"cpus": "2; id"}, "--cpus"),
        ({"memory": "2GB"}, "--memory '2GB' is not a Kubernetes quantity"),
        ({"memory": "512"}, "--memory '512' is less than 1Mi"),
        ({"memory": "32Gi"}, "--memory '32Gi' is more than --max-memory 16Gi"),
        ({"max_memory": "lots"}, "--max-memory 'lots'"),
        ({"max_cpus": float("nan")}, "--max-cpus must be a positive"),
        ({"max_cpus": 0.0}, "--max-cpus"),
        ({"max_gpus": -1}, "--max-gpus -1 is out of range"),
        ({"kernel_uid": 0}, "--kernel-uid 0 is out of range: from 1"),
        ({"kernel_gid": 2**31}, "--kernel-gid"),
        ({"user_ids": {"alice": "2001"}}, "--user-ids applies with --impersonation only"),
        ({"impersonation": True, "user_ids": {"Alice": "2001"}}, "--user-ids 'Alice' is not a"),
        ({"impersonation": True, "user_ids": {"a": "0"}}, "--user-ids a=0: uid and gid must"),
        ({"impersonation": True, "user_ids": {"a": "2001:0"}}, "--user-ids a=2001:0"),
        ({"impersonation": True, "user_ids": {"a": "$(id)"}}, "--user-ids a='\\$\\(id\\)'"),
        ({"spark": True}, "Spark and Scala kernels are not supported by 'spec install k8s'"),
        ({"language": "scala", "toree_jar": "/t.jar"}, "Spark and Scala kernels"),
        ({"extra_spark_opts": "--conf a=b"}, "Spark and Scala kernels"),
        ({"remote_hosts": ("h1",)}, "--remote-hosts only applies to 'spec install ssh'"),
        ({"queue": "q"}, "--queue only applies to 'spec install yarn'"),
        ({"launch_timeout": 0.0}, "--launch-timeout must be a positive"),
    ],
)
def test_a_value_that_cannot_make_a_working_spec_is_refused_naming_its_flag(
    values: dict[str, Any], match: str
) -> None:
    with pytest.raises(SpecError, match=match) as caught:
        kj(**values)
    assert "\n" not in str(caught.value)  # one line: cause, then what to do


def test_hostile_text_where_any_text_is_allowed_is_stored_as_inert_json() -> None:
    """The display name is free text: it lands in kernel.json as a JSON string, and nothing of
    the spec is a script (no run.sh, no env) that could read it."""
    name = "Py $(touch /tmp/x) `id` ${HOME} 'q' \"d\""
    files = builders.build_spec(opts(display_name=name), DIR)
    assert files.kernel_json["display_name"] == name and files.kernel_json["env"] == {}
    assert list(files.files) == [TEMPLATE] and files.launchers == {}
    text = json.dumps(files.kernel_json)
    assert json.loads(text)["display_name"] == name


# -- the value parsers, for any input ------------------------------------------------------------

hostile = st.sampled_from(HOSTILE_WORDS) | any_text
image_like = st.from_regex(
    r"([a-z0-9.]{1,8}(:[0-9]{1,5})?/)?[a-z0-9._-]{1,10}(/[a-z0-9_-]{1,6})?(:[A-Za-z0-9_.-]{0,8})?",
    fullmatch=True,
)


def _inert(value: str) -> bool:
    return not ACTIVE.search(value)


@fuzz_settings(400)
@given(text=image_like | hostile)
def test_an_accepted_image_is_a_tagged_reference_of_inert_characters(text: str) -> None:
    try:
        ref = image_reference(text)
    except SpecError as exc:
        assert str(exc).startswith("--image ") and "\n" not in str(exc)
        return
    assert ref == text.strip() and _inert(ref)
    assert k8s_pod.IMAGE.match(ref)
    match = IMAGE_RE.match(ref)
    assert match and (match.group("tag") or match.group("digest"))


@fuzz_settings(300)
@given(text=st.from_regex(r"[a-z0-9-]{1,70}", fullmatch=True) | hostile)
def test_an_accepted_namespace_is_a_dns_label(text: str) -> None:
    try:
        name = namespace_name(text)
    except SpecError as exc:
        assert str(exc).startswith("--namespace ")
        return
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name) and _inert(name)


quantity_like = st.from_regex(r"[0-9]{1,6}(\.[0-9]{1,3})?(m|k|Ki|M|Mi|G|Gi|T|Ti)?", fullmatch=True)


@fuzz_settings(400)
@given(text=quantity_like | hostile, max_cpus=st.sampled_from([0.5, 8.0, 64.0]))
def test_an_accepted_cpu_amount_is_one_the_provisioner_takes_for_a_request(
    text: str, max_cpus: float
) -> None:
    try:
        value = cpu_amount(text, "--cpus", max_cpus)
    except SpecError as exc:
        assert str(exc).startswith("--cpus ")
        return
    assert _inert(value) and 0 < k8s_pod.quantity(value) <= max_cpus
    # the provisioner accepts it as the default of every request
    limits = k8s_pod.Limits(max_cpus=max_cpus, cpus=value)
    params = k8s_pod.request_params(
        {}, kernel_id="k", kernel_name="n", pod_name="p", namespace="ns", image=IMAGE,
        allowed_images=(), uid=1000, gid=1000, limits=limits, gpu_resource="g", volumes=(),
        username="",
    )  # fmt: skip
    assert params.cpus == value


@fuzz_settings(400)
@given(text=quantity_like | hostile, bound=st.sampled_from(["16Gi", "1Gi", "100M"]))
def test_an_accepted_memory_amount_is_within_the_bounds_the_provisioner_applies(
    text: str, bound: str
) -> None:
    try:
        value = memory_amount(text, "--memory", bound)
    except SpecError as exc:
        assert str(exc).startswith("--memory ")
        return
    assert _inert(value) and 2**20 <= k8s_pod.quantity(value) <= k8s_pod.quantity(bound)


@fuzz_settings(300)
@given(
    users=st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_.-]{0,8}", fullmatch=True) | hostile,
        st.from_regex(r"[0-9]{1,11}(:[0-9]{1,11})?", fullmatch=True) | hostile,
        max_size=3,
    )
)
def test_an_accepted_user_map_is_one_the_provisioner_reads_and_never_root(
    users: dict[str, str],
) -> None:
    try:
        out = user_id_map(users)
    except SpecError as exc:
        assert str(exc).startswith("--user-ids ")
        return
    for name, ids in out.items():
        assert _inert(name) and re.fullmatch(r"[0-9]+:[0-9]+", ids)
        uid, gid = parse_ids(ids)
        assert 0 < uid < 2**31 and 0 < gid < 2**31


@fuzz_settings(200)
@given(key=st.sampled_from(["pods", "limits.memory", "requests.cpu"]) | hostile, value=hostile)
def test_an_accepted_quota_is_resource_names_and_quantities(key: str, value: str) -> None:
    try:
        out = quota({key: value})
    except SpecError as exc:
        assert str(exc).startswith("--namespace-quota ")
        return
    ((k, v),) = out.items()
    assert _inert(k) and _inert(v)
    k8s_pod.quantity(v)


@fuzz_settings(300)
@given(
    text=st.from_regex(r"https?://[a-z0-9.\-]{1,12}(:\d{1,6})?(/[a-z]{0,5})?", fullmatch=True)
    | hostile
)
def test_an_accepted_api_server_is_a_plain_https_address(text: str) -> None:
    try:
        url = api_server_url(text)
    except SpecError as exc:
        assert str(exc).startswith("--api-server ")
        return
    assert _inert(url) and not re.search(r"[@?#]", url)
    assert url.startswith("https://") or url.startswith(("http://localhost", "http://127.0.0.1"))


@fuzz_settings(300)
@given(text=st.from_regex(r"/[a-z0-9/._-]{0,20}", fullmatch=True) | hostile)
def test_an_accepted_file_path_is_absolute_and_holds_nothing_a_shell_reads(text: str) -> None:
    try:
        path = file_path(text, "--token-file")
    except SpecError as exc:
        assert str(exc).startswith("--token-file must be an absolute path")
        return
    assert path.startswith("/") and not re.search(r"[\x00-\x1f\x7f$`'\"\\]", path)
    path.encode("utf-8")  # kernel.json is UTF-8: no lone surrogate got through


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture
def home(prefix: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith(("KF_K8S_", "KF_CHECK_")):
            monkeypatch.delenv(name)
    return prefix


def test_spec_install_k8s_writes_the_spec_and_its_editable_template(home: Path) -> None:
    code, out, err = kf(
        SpecApp,
        "install",
        "k8s",
        f"--prefix={home}",
        "--kernel-name=team_py",
        f"--image={IMAGE}",
        "--namespace=kernelfleet-kernels",
        "--api-server=https://10.98.0.1:16443",
        "--token-file=/etc/kf/token",
        "--ca-file=/etc/kf/ca.crt",
        "--allowed-namespaces=team-a,team-b",
        "--cpus=1",
        "--memory=2Gi",
        "--impersonation",
        "--user-ids",
        "alice=2001:2001",
        "--user-ids=bob=3000",
    )
    assert code == 0, err
    spec_dir = home / "share/jupyter/kernels/team_py"
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["argv"] == ARGV and spec["interrupt_mode"] == "message"
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "kernelfleet-k8s",
        "config": {
            "image": IMAGE,
            "namespace": "kernelfleet-kernels",
            "allowed_namespaces": ["team-a", "team-b"],
            "api_server": "https://10.98.0.1:16443",
            "token_file": "/etc/kf/token",
            "ca_file": "/etc/kf/ca.crt",
            "impersonation_enabled": True,
            "user_ids": {"alice": "2001:2001", "bob": "3000:3000"},
            "cpus": "1",
            "memory": "2Gi",
            "launch_timeout": 120,
        },
    }
    template = spec_dir / TEMPLATE
    assert template.read_text() == k8s_pod.DEFAULT_TEMPLATE
    assert template.stat().st_mode & 0o777 == 0o644
    assert not (spec_dir / "bin").exists() and not (spec_dir / "scripts").exists()
    assert out.splitlines()[0] == f"Installed kernelspec team_py in {spec_dir}"
    assert "kernelfleet hosts check --spec team_py" in out and TEMPLATE in out
    assert err == ""


def test_spec_install_k8s_warns_of_what_the_gateway_must_provide(home: Path) -> None:
    code, _, err = kf(SpecApp, "install", "k8s", "--dry-run", f"--image={IMAGE}", "--impersonation")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 2, err
    assert "no --namespace: kernels run in the gateway's own namespace" in warnings[0]
    assert "--namespace=kernelfleet-kernels" in warnings[0]
    assert "--impersonation without --user-ids" in warnings[1]


def test_spec_install_k8s_options_from_env_and_config_file(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KF_SPEC_K8S_IMAGE", IMAGE)
    monkeypatch.setenv("KF_SPEC_K8S_NAMESPACE_QUOTA", '{"pods": "4"}')
    monkeypatch.setenv("KF_SPEC_K8S_NAMESPACE_MODE", "per-kernel")
    cfg_dir = home.parent / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "kernelfleet_config.py").write_text("c.K8sInstallApp.memory = '1Gi'\n")
    code, out, err = kf(SpecApp, "install", "k8s", "--dry-run", "--language=r")
    assert code == 0, err
    spec = json.loads(out)
    assert spec["argv"] == R_ARGV
    assert spec["metadata"]["kernel_provisioner"]["config"] == {
        "image": IMAGE,
        "namespace_mode": "per-kernel",
        "namespace_quota": {"pods": "4"},
        "memory": "1Gi",
        "launch_timeout": 120,
    }


def test_spec_install_k8s_bad_values_are_one_line_usage_errors(home: Path) -> None:
    for argv, message in (
        ([], "--image is required"),
        ([f"--image={IMAGE}", "--namespace=Team A"], "--namespace 'Team A' is not a namespace"),
        (["--image=x:1;id"], "--image 'x:1;id' is not an image reference"),
        ([f"--image={IMAGE}", "--memory=$(id)"], "--memory '$(id)' is not a Kubernetes quantity"),
        ([f"--image={IMAGE}", "--user-ids", "a=1"], "--user-ids applies with --impersonation"),
        ([f"--image={IMAGE}", "--spark"], "Spark and Scala kernels are not supported"),
    ):
        code, out, err = kf(SpecApp, "install", "k8s", "--dry-run", *argv)
        assert (code, out) == (2, ""), err
        assert err.startswith("kernelfleet spec install k8s: error: ") and message in err
        assert len(err.splitlines()) == 1


def test_spec_install_k8s_help_shows_its_options_and_defaults(home: Path) -> None:
    code, out, _ = kf(SpecApp, "install", "k8s", "--help")
    assert code == 0
    for text in (
        "--image=<Unicode>",
        "KF_SPEC_K8S_IMAGE",
        "--namespace-mode=<CaselessStrEnum>",
        "--allowed-namespaces=<list-item-1>...",
        "--user-ids=<key-1>=<value-1>...",
        "--impersonation\n",
        "Default: 120.0",
        "kernelfleet spec install k8s --image=reg:5000/kernel-r:4.3 --language=r",
    ):
        assert text in out, text
    code, out, _ = kf(SpecApp, "install", "--help")
    assert code == 0 and "'k8s' (kernels as Kubernetes pods)" in out
