"""`kernelfleet spec migrate` on disk: Gateway Provisioners specs rendered by GP's own installers
and Enterprise Gateway specs written by hand become kernelfleet specs; the originals are never
changed; what is refused is said.

GP's specs are rendered once for the module (GP 0.5.0 from PyPI, in an environment of its own:
tests/gpspecs.py) into a prefix that every test only reads; a check around each test hashes
every file of it. Each test writes into its own prefix, with the Jupyter path, Jupyter's data
directory, HOME and kernelfleet's config directory all private to it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.cli.migrate import MigrateApp
from tests.gpspecs import eg_spec, load, render

IMAGE = "reg.example:5000/kernel-py:1.0"
#: GP installer, kernel name, its options.
GP_RENDERS = (
    (
        "ssh-spec",
        "ssh_python",
        "--remote-hosts=h1",
        "--remote-hosts=h2",
        "--authorized-users=alice",
        "--port-range=40000..40999",
        "--launch-timeout=90",
    ),
    (
        "ssh-spec",
        "ssh_spark",
        "--spark",
        "--remote-hosts=h1",
        "--spark-master=spark://m:7077",
        "--spark-init-mode=eager",
        "--spark-home=/usr/lib/spark",
    ),
    ("ssh-spec", "ssh_scala", "--spark", "--language=scala", "--remote-hosts=h1"),
    ("k8s-spec", "k8s_python", f"--image-name={IMAGE}"),
    ("docker-spec", "docker_python", f"--image-name={IMAGE}"),
    ("docker-spec", "swarm_python", f"--image-name={IMAGE}", "--swarm"),
    (
        "yarn-spec",
        "yarn_python",
        "--yarn-endpoint=http://rm:8088/ws/v1/cluster",
        "--impersonation-enabled",
    ),
)


def _eg_specs(kernels: Path) -> None:
    """Enterprise Gateway's kernelspecs, as its docs describe them."""
    eg_spec(
        kernels,
        "python_distributed",
        "distributed.DistributedProcessProxy",
        config={"remote_hosts": "h1,h2"},
    )
    yarn_dir = kernels / "spark_python_yarn_cluster"
    (yarn_dir / "bin").mkdir(parents=True)
    (yarn_dir / "bin" / "run.sh").write_text("#!/usr/bin/env bash\n# EG's run.sh\n")
    run_sh = [str(yarn_dir / "bin" / "run.sh")]
    for opt, value in (
        ("kernel-id", "{kernel_id}"),
        ("response-address", "{response_address}"),
        ("public-key", "{public_key}"),
        ("port-range", "{port_range}"),
        ("spark-context-initialization-mode", "eager"),
    ):
        run_sh += [f"--RemoteProcessProxy.{opt}", value]
    eg_spec(
        kernels,
        "spark_python_yarn_cluster",
        "yarn.YarnClusterProcessProxy",
        config={"yarn_endpoint": "http://rm:8088/ws/v1/cluster", "impersonation_enabled": True},
        argv=run_sh,
        env={
            "SPARK_HOME": "/usr/hdp/current/spark2-client",
            "PYSPARK_PYTHON": "/opt/conda/bin/python",
            "PYTHONPATH": "${HOME}/.local/lib/python3.6/site-packages:/usr/hdp/current/"
            "spark2-client/python",
            "SPARK_OPTS": "--master yarn --deploy-mode cluster --name "
            "${KERNEL_ID:-ERROR__NO__KERNEL_ID} --conf spark.yarn.submit.waitAppCompletion=false "
            "--queue analytics --conf spark.yarn.appMasterEnv.PYTHONPATH=${HOME}/.local/lib "
            "${KERNEL_EXTRA_SPARK_OPTS}",
            "LAUNCH_OPTS": "",
        },
    )
    for name, proxy, script in (
        ("python_kubernetes", "k8s.KubernetesProcessProxy", "launch_kubernetes.py"),
        ("python_docker_swarm", "docker_swarm.DockerSwarmProcessProxy", "launch_docker.py"),
    ):
        spec_dir = kernels / name
        (spec_dir / "scripts").mkdir(parents=True)
        (spec_dir / "scripts" / script).write_text("# EG's container launcher\n")
        argv = ["python", str(spec_dir / "scripts" / script)]
        argv += ["--RemoteProcessProxy.kernel-id", "{kernel_id}"]
        argv += ["--RemoteProcessProxy.response-address", "{response_address}"]
        eg_spec(kernels, name, proxy, config={"image_name": IMAGE}, argv=argv)
    eg_spec(
        kernels,
        "python_distributed_env",
        "distributed.DistributedProcessProxy",
        config={"remote_hosts": ["h1"]},
        env={"DATA_DIR": "${HOME}/data", "TZ": "UTC"},
    )


@pytest.fixture(scope="module")
def theirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prefix holding GP's rendered specs and EG's: read by the tests, never written."""
    prefix = tmp_path_factory.mktemp("theirs")
    with ThreadPoolExecutor(len(GP_RENDERS)) as pool:
        done = [
            pool.submit(render, installer, prefix, f"--kernel-name={name}", *args)
            for installer, name, *args in GP_RENDERS
        ]
        for future in done:
            future.result()
    kernels = prefix / "share" / "jupyter" / "kernels"
    _eg_specs(kernels)
    return prefix


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(autouse=True)
def originals_untouched(theirs: Path) -> Iterator[None]:
    """Every file of the originals is byte for byte the same after each test."""
    before = _digest(theirs)
    modes = {str(p): p.stat().st_mode for p in theirs.rglob("*")}
    yield
    assert _digest(theirs) == before
    assert {str(p): p.stat().st_mode for p in theirs.rglob("*")} == modes


@pytest.fixture
def dest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The prefix this test writes into, on a private Jupyter path."""
    prefix = tmp_path / "dest"
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "jupyter-config"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("KF_CONFIG_DIR", str(tmp_path / "kf-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("JUPYTER_PREFER_ENV_PATH", raising=False)
    for name in list(os.environ):
        if name.startswith(("KF_MIGRATE_", "KF_SPEC_")):
            monkeypatch.delenv(name)
    return prefix


@dataclass
class Run:
    code: int
    out: str
    err: str


def migrate(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    """`kernelfleet spec migrate ARGV`, in this process."""
    capsys.readouterr()
    app = MigrateApp()
    code = 0
    try:
        app.initialize(list(argv))
        app.start()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def kernels(prefix: Path) -> Path:
    return prefix / "share" / "jupyter" / "kernels"


def provisioner(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    stanza = spec["metadata"]["kernel_provisioner"]
    return stanza["provisioner_name"], stanza["config"]


# -- what each becomes -----------------------------------------------------------------------------

#: name → the provisioner of the migrated spec and entries its config must hold.
MIGRATES_TO: dict[str, tuple[str, dict[str, Any]]] = {
    # rendered by GP's installers
    "ssh_python": (
        "kernelfleet-ssh",
        {
            "remote_hosts": ["h1", "h2"],
            "authorized_users": ["alice"],
            "port_range": "40000..40999",
            "launch_timeout": 90,
        },
    ),
    "ssh_spark": ("kernelfleet-ssh", {"remote_hosts": ["h1"]}),
    "k8s_python": ("kernelfleet-k8s", {"image": IMAGE}),
    "docker_python": ("kernelfleet-docker", {"image": IMAGE}),
    "swarm_python": ("kernelfleet-docker", {"image": IMAGE, "swarm": True}),
    # GP 0.5.0 writes neither its --yarn-endpoint nor --impersonation-enabled into the spec
    "yarn_python": ("kernelfleet-yarn", {}),
    # written by hand in EG's format
    "python_distributed": ("kernelfleet-ssh", {"remote_hosts": ["h1", "h2"]}),
    "spark_python_yarn_cluster": (
        "kernelfleet-yarn",
        {
            "yarn_endpoints": ["http://rm:8088"],
            "impersonation_enabled": True,
            "queue": "analytics",
            "spark_home": "/usr/hdp/current/spark2-client",
        },
    ),
    "python_kubernetes": ("kernelfleet-k8s", {"image": IMAGE}),
    "python_docker_swarm": ("kernelfleet-docker", {"image": IMAGE, "swarm": True}),
}


#: The interpreter their spec named, where the migrated spec runs it.
ARGV0 = {
    "python_distributed": "python3",  # EG's "python"
    "ssh_python": "python3",
    "spark_python_yarn_cluster": "/opt/conda/bin/python",  # EG's PYSPARK_PYTHON
    "k8s_python": "python3",  # in the image
}


@pytest.mark.parametrize("name", list(MIGRATES_TO))
def test_their_spec_becomes_ours_with_its_config(
    name: str, theirs: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = migrate(capsys, name, f"--from={theirs}", f"--prefix={dest}")
    assert run.code == 0, run.out + run.err
    original = kernels(theirs) / name
    written = kernels(dest) / name
    assert f"written: {written}" in run.out
    assert "1 of 1 kernelspecs written." in run.out
    spec = load(written)
    want_name, want_config = MIGRATES_TO[name]
    got_name, got_config = provisioner(spec)
    assert got_name == want_name
    assert {k: got_config.get(k) for k in want_config} == want_config
    if want_name == "kernelfleet-docker" and "swarm" not in want_config:
        assert "swarm" not in got_config
    assert spec["metadata"]["kernelfleet"]["migrated_from"]["path"] == str(original)
    assert spec["argv"][0] == ARGV0.get(name, spec["argv"][0])
    text = json.dumps(spec)
    for theirs_only in ("{response_address}", "launch_ipykernel", "RemoteProcessProxy", "${"):
        assert theirs_only not in text


def test_gps_spark_spec_runs_our_run_sh_with_its_spark_settings(
    theirs: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert migrate(capsys, "ssh_spark", f"--from={theirs}", f"--prefix={dest}").code == 0
    written = kernels(dest) / "ssh_spark"
    spec = load(written)
    assert spec["argv"][0] == str(written / "bin" / "run.sh")
    assert spec["argv"][-2:] == ["--spark-init-mode", "eager"]
    assert spec["env"]["SPARK_HOME"] == "/usr/lib/spark"
    assert spec["env"]["SPARK_OPTS"] == "--master spark://m:7077 --deploy-mode client"
    assert "PYTHONPATH" not in spec["env"] and "LAUNCH_OPTS" not in spec["env"]
    assert os.access(written / "bin" / "run.sh", os.X_OK)


def test_every_spec_of_a_directory_is_migrated_in_one_run(
    theirs: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = migrate(capsys, f"--from={kernels(theirs)}", f"--prefix={dest}")
    # two of them have unmappable fields: status 1, the others written
    assert run.code == 1
    assert sorted(p.name for p in kernels(dest).iterdir()) == sorted(MIGRATES_TO)
    assert f"{len(MIGRATES_TO)} of {len(MIGRATES_TO) + 2} kernelspecs written." in run.out


def test_from_one_spec_directory_migrates_that_spec_only(
    theirs: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = migrate(capsys, f"--from={kernels(theirs) / 'ssh_python'}", f"--prefix={dest}")
    assert run.code == 0, run.out + run.err
    assert [p.name for p in kernels(dest).iterdir()] == ["ssh_python"]


# -- what is said and not written ------------------------------------------------------------------


def test_dry_run_prints_a_unified_diff_and_writes_nothing(
    theirs: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = migrate(capsys, "ssh_python", "--dry-run", f"--from={theirs}", f"--prefix={dest}")
    assert run.code == 0, run.out
    lines = run.out.splitlines()
    assert "--- ssh_python/kernel.json (original)" in lines
    assert f"+++ {kernels(dest) / 'ssh_python'}/kernel.json" in lines
    assert any(line.startswith("@@ ") for line in lines)
    assert '-      "provisioner_name": "distributed-provisioner"' in lines
    assert '+      "provisioner_name": "kernelfleet-ssh"' in lines
    assert f"dry run: would write {kernels(dest) / 'ssh_python'}" in run.out
    assert "1 of 1 kernelspecs would be written." in run.out
    assert not dest.exists()


def test_an_unmappable_spec_is_reported_and_written_only_with_force(
    theirs: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("python_distributed_env", f"--from={theirs}", f"--prefix={dest}")
    run = migrate(capsys, *args)
    assert run.code == 1
    assert "unmappable env.DATA_DIR: uses '$' substitution" in run.out
    assert "NOT written: 1 unmappable field(s)" in run.out and "--force" in run.out
    assert not dest.exists()

    run = migrate(capsys, *args, "--force")
    assert run.code == 0, run.out
    assert "without its 1 unmappable field(s)" in run.out
    spec = load(kernels(dest) / "python_distributed_env")
    assert spec["env"] == {"TZ": "UTC"}
    assert provisioner(spec)[1]["remote_hosts"] == ["h1"]


def test_gps_scala_spec_holds_its_launcher_not_toree_and_is_never_written(
    theirs: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("ssh_scala", f"--from={theirs}", f"--prefix={dest}")
    run = migrate(capsys, *args)
    assert run.code == 1
    assert "unmappable lib/: holds no Apache Toree assembly jar" in run.out
    # without the jar there is nothing to run: --force cannot write it either, and says why
    run = migrate(capsys, *args, "--force")
    assert run.code == 1
    assert "--toree-jar" in run.out
    assert not dest.exists()


def test_a_second_run_replaces_its_own_earlier_result(
    theirs: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("python_distributed", f"--from={theirs}", f"--prefix={dest}")
    assert migrate(capsys, *args).code == 0
    written = kernels(dest) / "python_distributed" / "kernel.json"
    written.write_text(written.read_text().replace('"h2"', '"stale"'))
    run = migrate(capsys, *args)
    assert run.code == 0, run.out
    assert f"replaced: {kernels(dest) / 'python_distributed'}" in run.out
    assert provisioner(load(written.parent))[1]["remote_hosts"] == ["h1", "h2"]


def test_the_originals_own_directory_is_refused_as_destination(
    theirs: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = migrate(capsys, "ssh_python", f"--from={theirs}", f"--prefix={theirs}")
    assert run.code == 1
    assert f"the original is in {kernels(theirs)}: writing there would replace it" in run.out


def test_an_unrelated_spec_in_the_way_is_replaced_only_with_replace(
    theirs: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    in_the_way = kernels(dest) / "ssh_python"
    in_the_way.mkdir(parents=True)
    mine = json.dumps({"argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]})
    (in_the_way / "kernel.json").write_text(mine)
    args = ("ssh_python", f"--from={theirs}", f"--prefix={dest}")
    run = migrate(capsys, *args)
    assert run.code == 1
    assert f"{in_the_way} exists and is not a migration of {kernels(theirs) / 'ssh_python'}" in (
        run.out
    )
    assert "--replace" in run.out
    assert (in_the_way / "kernel.json").read_text() == mine

    run = migrate(capsys, *args, "--replace")
    assert run.code == 0, run.out
    assert f"replaced: {in_the_way}" in run.out
    assert provisioner(load(in_the_way))[0] == "kernelfleet-ssh"


def test_json_output_parses_and_holds_the_findings(
    theirs: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = migrate(
        capsys,
        "ssh_python",
        "python_distributed_env",
        "nope",
        "--json",
        "--dry-run",
        f"--from={theirs}",
        f"--prefix={dest}",
    )
    assert run.code == 1
    report = json.loads(run.out)
    assert report["dry_run"] is True
    assert set(report["problems"]) == {"nope"}
    by_name = {m["name"]: m for m in report["migrated"]}
    assert list(by_name) == ["ssh_python", "python_distributed_env"]
    ssh = by_name["ssh_python"]
    assert ssh["origin"] == "Gateway Provisioners distributed-provisioner"
    assert ssh["kind"] == "ssh" and ssh["written"] is False
    assert ssh["source"] == str(kernels(theirs) / "ssh_python")
    assert ssh["destination"] == str(kernels(dest) / "ssh_python")
    assert {"level": "mapped", "field": "kernel_provisioner.config.remote_hosts"} | {
        "text": "--remote-hosts=h1,h2"
    } in ssh["findings"]
    assert ssh["diff"].startswith("--- ssh_python/kernel.json (original)")
    levels = {f["level"] for f in by_name["python_distributed_env"]["findings"]}
    assert "unmappable" in levels
    assert not dest.exists()


def test_names_not_found_or_not_theirs_are_said_and_fail(
    tmp_path: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    (other / "plain").mkdir(parents=True)
    plain = {"argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]}
    (other / "plain" / "kernel.json").write_text(json.dumps(plain))
    (other / "broken").mkdir()
    (other / "broken" / "kernel.json").write_text("{not json")
    run = migrate(capsys, "nope", "plain", "broken", f"--from={other}", f"--prefix={dest}")
    assert run.code == 1
    assert f"nope: no kernelspec named 'nope' in {other}" in run.out
    assert (
        f"plain: {other / 'plain'} is not an Enterprise Gateway or Gateway Provisioners "
        "kernelspec: nothing to migrate"
    ) in run.out
    assert f"broken: {other / 'broken' / 'kernel.json'} is not JSON" in run.out
    assert "0 of 3 kernelspecs written." in run.out
    assert not dest.exists()

    # scanning a directory, an ordinary spec is no problem; an unreadable one (theirs?) is
    run = migrate(capsys, f"--from={other}", f"--prefix={dest}")
    assert run.code == 1
    assert "plain" not in run.out and "broken: " in run.out
    (other / "broken" / "kernel.json").unlink()
    run = migrate(capsys, f"--from={other}", f"--prefix={dest}")
    assert run.code == 0  # nothing to do is not a failure
    assert f"No Enterprise Gateway or Gateway Provisioners kernelspecs in {other}" in run.out
    run = migrate(capsys, f"--from={tmp_path / 'missing'}", f"--prefix={dest}")
    assert run.code == 2 and "no such directory" in run.err


# -- where it is written ---------------------------------------------------------------------------


def test_a_spec_the_original_would_hide_is_not_written(
    theirs: Path, dest: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the original's directory comes first in the Jupyter path: the gateway would start it
    path = [theirs / "share" / "jupyter", dest / "share" / "jupyter"]
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(map(str, path)))
    run = migrate(capsys, "ssh_python", f"--prefix={dest}")
    assert run.code == 1
    assert (
        f"{kernels(theirs) / 'ssh_python'} comes first in the Jupyter path, so the gateway "
        "would still start that one"
    ) in run.out
    assert not (kernels(dest) / "ssh_python").exists()


def test_a_destination_off_the_jupyter_path_is_written_with_a_warning(
    theirs: Path, tmp_path: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    run = migrate(capsys, "python_distributed", f"--from={theirs}", f"--prefix={elsewhere}")
    assert run.code == 0, run.out
    assert f"warning: {kernels(elsewhere)} is not on the Jupyter path" in run.out
    assert (kernels(elsewhere) / "python_distributed" / "kernel.json").is_file()


def test_user_writes_into_jupyters_user_data_directory(
    theirs: Path, tmp_path: Path, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = migrate(capsys, "k8s_python", f"--from={theirs}", "--user")
    assert run.code == 0, run.out
    spec = load(tmp_path / "data" / "kernels" / "k8s_python")
    assert provisioner(spec)[0] == "kernelfleet-k8s"
