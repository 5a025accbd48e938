"""The code that runs on the hosts (stdlib only): the Spark launcher's option splitter, its
address lookup and lazy `spark` placeholder, and the probe's manifest (same as the primary's)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kernelfleet.specs import builders
from kernelfleet.specs.builders import SpecOptions
from kernelfleet.specs.installer import install
from kernelfleet.specs.manifest import diff_manifests, local_manifest

LAUNCHERS = Path(builders.__file__).resolve().parents[1] / "launchers"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"kf_test_{name}", LAUNCHERS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


spark_kernel = load("spark_kernel")
probe = load("probe")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "--conf a=1",
        "--conf 'a=b c' --verbose",
        "--name x",
        "x.py",
        "--conf",
        "--conf 'x",
        "--conf a\nb",
        "--master=yarn",
        "--packages org:a:1 -v --supervise",
    ],
)
@pytest.mark.parametrize("trusted", [True, False])
def test_splitter_on_the_host_agrees_with_the_installer(text: str, trusted: bool) -> None:
    try:
        expected: Any = builders.split_spark_opts(text, what="X", trusted=trusted)
    except builders.SpecError:
        expected = "refused"
    try:
        got: Any = spark_kernel.split_opts(text, "X", trusted)
    except spark_kernel.OptionsRefused:
        got = "refused"
    assert got == expected
    assert set(spark_kernel.SPLITTER_FORBIDDEN) == set(builders.FORBIDDEN_REQUEST_SPARK_OPTS)


def test_local_ip_comes_from_the_connection_file(tmp_path: Path) -> None:
    conn = tmp_path / "connection.json"
    conn.write_text(json.dumps({"ip": "10.1.2.3"}))
    assert spark_kernel.local_ip(["--connection-file", str(conn), "--spark-init-mode", "lazy"]) == (
        "10.1.2.3"
    )
    conn.write_text(json.dumps({"ip": "0.0.0.0"}))
    assert spark_kernel.local_ip([str(conn)]) == ""
    assert spark_kernel.local_ip(["--profile", str(tmp_path / "missing.json")]) == ""


def test_run_sh_exports_the_kernel_address_as_spark_local_ip(tmp_path: Path) -> None:
    fake = tmp_path / "spark"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "spark-submit").write_text('#!/bin/sh\necho "ip=${SPARK_LOCAL_IP:-unset}"\n')
    (fake / "bin" / "spark-submit").chmod(0o755)
    done = install(
        SpecOptions(
            spark=True, python=sys.executable, spark_home=str(fake), spark_init_mode="eager"
        ),
        tmp_path / "k",
    )
    conn = tmp_path / "connection.json"
    conn.write_text(json.dumps({"ip": "10.9.8.7"}))
    spec = json.loads((done.path / "kernel.json").read_text())
    argv = [a.replace("{connection_file}", str(conn)) for a in spec["argv"]]
    assert argv[-1] == "eager"  # started by spark-submit
    env = {"PATH": "/usr/bin:/bin", "KERNEL_ID": "k1", **spec["env"]}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ip=10.9.8.7"
    env["SPARK_LOCAL_IP"] = "10.0.0.5"  # an admin's setting wins
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ip=10.0.0.5"


class FakeSession:
    def __init__(self) -> None:
        self.sparkContext = "the-context"
        self.value = 42


def test_lazy_placeholders_wait_for_the_session_and_replace_themselves() -> None:
    starter = spark_kernel.SparkStarter(None)
    ns: dict[str, Any] = {}
    spark_kernel.publish(ns, starter)
    assert isinstance(ns["spark"], spark_kernel.Pending)
    assert "starting" in repr(ns["spark"])
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(ns["spark"].value))
    reader.start()
    reader.join(0.2)
    assert reader.is_alive()  # first use waits for the session
    starter.session = FakeSession()
    starter.ready.set()
    reader.join(5)
    assert got == [42]
    for _ in range(50):
        if not isinstance(ns["sc"], spark_kernel.Pending):
            break
        threading.Event().wait(0.02)
    assert ns["sc"] == "the-context"
    assert isinstance(ns["spark"], FakeSession)


def test_a_failed_session_is_reported_on_use() -> None:
    starter = spark_kernel.SparkStarter(None)
    ns: dict[str, Any] = {}
    spark_kernel.publish(ns, starter)
    starter.error = RuntimeError("no master")
    starter.ready.set()
    with pytest.raises(RuntimeError, match=r"could not start.*no master"):
        _ = ns["spark"].range


class RecordingContext:
    """Stands for a SparkContext: records the calls an interrupt makes (no JVM here)."""

    def __init__(self) -> None:
        self.properties: dict[str, str] = {}
        self.calls: list[tuple[str, ...]] = []

    def getLocalProperty(self, key: str) -> str | None:
        return self.properties.get(key)

    def setLocalProperty(self, key: str, value: str) -> None:
        self.properties[key] = value

    def cancelJobGroup(self, group: str) -> None:
        self.calls.append(("group", group))

    def cancelAllJobs(self) -> None:
        self.calls.append(("all",))


def test_each_cell_gets_its_own_job_group_and_an_interrupt_cancels_it_again_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(spark_kernel, "CANCEL_AGAIN_AFTER", (0.0, 0.0))
    context = RecordingContext()
    starter = spark_kernel.SparkStarter(None)
    starter.session = FakeSession()
    starter.session.sparkContext = context  # type: ignore[assignment]
    starter.ready.set()

    starter.begin_cell()
    first = starter.cell_group
    starter.begin_cell()
    second = starter.cell_group
    assert first and second and first != second
    assert context.properties["spark.jobGroup.id"] == second
    # a job still being submitted when the interrupt came is caught by the later cancellations
    starter.cancel_jobs(second)
    assert context.calls == [("group", second), ("all",), ("group", second), ("group", second)]

    # a group the user set is theirs: kept, and cancelled once
    context.properties["spark.jobGroup.id"] = "nightly-etl"
    context.calls.clear()
    starter.begin_cell()
    assert starter.cell_group == "nightly-etl"
    assert context.properties["spark.jobGroup.id"] == "nightly-etl"
    starter.cancel_jobs(starter.cell_group)
    assert context.calls == [("group", "nightly-etl"), ("all",)]


def test_no_job_group_before_the_session_exists() -> None:
    starter = spark_kernel.SparkStarter(None)
    starter.begin_cell()
    assert starter.cell_group is None
    starter.cancel_jobs(None)  # nothing to cancel, and no error


def test_probe_manifest_matches_the_primary(tmp_path: Path) -> None:
    done = install(SpecOptions(spark=True, python=sys.executable), tmp_path / "k")
    mine = local_manifest(str(done.path))
    theirs = probe.manifest(str(done.path))
    assert json.loads(json.dumps(theirs)) == json.loads(json.dumps(mine))
    assert diff_manifests(mine, theirs) == ([], [], [])
    assert mine["bin/run.sh"][1] == 0o755
    assert probe.manifest(str(tmp_path / "absent")) is None


def test_pyspark_submit_args_keep_each_word_whole() -> None:
    import shlex

    env = {
        "KERNEL_ID": "kid",
        "SPARK_OPTS": "--master spark://m:7077 --deploy-mode client --conf 'a=b c'",
        "KERNEL_EXTRA_SPARK_OPTS": "--conf 'x=$(touch /tmp/p)'",
    }
    args = spark_kernel.pyspark_submit_args(env)
    assert shlex.split(args) == [
        "--name",
        "kid",
        "--master",
        "spark://m:7077",
        "--deploy-mode",
        "client",
        "--conf",
        "a=b c",
        "--conf",
        "x=$(touch /tmp/p)",
        "pyspark-shell",
    ]
    with pytest.raises(spark_kernel.OptionsRefused):
        spark_kernel.pyspark_submit_args({**env, "KERNEL_EXTRA_SPARK_OPTS": "--name x"})
