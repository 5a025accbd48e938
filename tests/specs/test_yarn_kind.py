"""``kernelfleet spec install yarn`` and ``hosts check`` of a YARN kernelspec, without a cluster:
the kind's kernel.json (argv, env, provisioner config), its checks (each naming its flag, hostile
values refused), its value parsers (property tests), the command line, and the cluster check's
verdicts and its run against an RM that is not there."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from traitlets.config import Application

from kernelfleet import __version__
from kernelfleet.cli.hosts import CheckApp
from kernelfleet.cli.spec import InstallApp, SpecApp, YarnInstallApp, install_command
from kernelfleet.provisioners import yarn_submit
from kernelfleet.specs import builders, yarncheck
from kernelfleet.specs.kinds import KINDS
from kernelfleet.specs.kinds.yarn import (
    ENDPOINT_RE,
    YarnKind,
    parse_spark_conf,
    resource_value,
)
from kernelfleet.specs.options import SpecError, SpecOptions
from kernelfleet.specs.verdicts import FAIL, OK, SKIP, HostReport, failure_lines
from kernelfleet.transport.yarn_rest import QueueInfo, RMError
from tests.fuzz.strategies import HOSTILE_WORDS, any_text, fuzz_settings

DIR = "/srv/kernels/yarn_python"
PY = "/opt/py/bin/python3"
ARGV = [
    PY,
    "spark_kernel.py",
    "--connection-file",
    "{connection_file}",
    "--spark-init-mode",
    "eager",
]
R_ARGV = ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]


def kj(**kw: Any) -> dict[str, Any]:
    kw.setdefault("python", PY)
    return builders.build_kernel_json(SpecOptions(kind="yarn", **kw), DIR)


def cfg(**kw: Any) -> dict[str, Any]:
    config: dict[str, Any] = kj(**kw)["metadata"]["kernel_provisioner"]["config"]
    return config


# -- kernel.json ---------------------------------------------------------------------------------


def test_a_python_spec_is_a_spark_driver_without_run_sh_or_env() -> None:
    assert kj() == {
        "argv": ARGV,
        "display_name": "Spark - Python on YARN (cluster mode)",
        "language": "python",
        "interrupt_mode": "message",
        "env": {},
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": "kernelfleet-yarn",
                "config": {"launch_timeout": 180},
            },
            "kernelfleet": {
                "installer": f"kernelfleet {__version__}",
                "kind": "yarn",
                "language": "python",
                "python": PY,
                "spark": {"master": "yarn", "home": "", "init_mode": "eager"},
            },
        },
    }
    files = builders.build_spec(SpecOptions(kind="yarn", python=PY), DIR)
    assert files.name == "yarn_python"  # no --spark needed, and no _spark suffix
    assert files.files == {}  # no bin/run.sh
    assert files.launchers == {"scripts/spark_kernel.py": "spark_kernel.py"}
    assert builders.build_run_sh(SpecOptions(kind="yarn", python=PY)) is None
    # --spark is harmless (and names the spec as the admin asked)
    assert kj(spark=True)["argv"] == ARGV
    assert SpecOptions(kind="yarn", spark=True).name == "yarn_python_spark"


def test_a_spec_directory_spark_submit_cannot_ship_from_is_refused() -> None:
    with pytest.raises(SpecError, match="install it elsewhere"):
        builders.build_kernel_json(SpecOptions(kind="yarn", python=PY), "/home/a b/yarn_python")
    r_spec = SpecOptions(kind="yarn", language="r", python=PY)
    assert builders.build_kernel_json(r_spec, "/home/a b/yarn_r")["argv"] == R_ARGV


def test_an_ipykernel_subclass_and_a_relative_python() -> None:
    assert kj(ipykernel_subclass_name="my.kernels.K")["argv"] == [
        *ARGV,
        "--kernel-class",
        "my.kernels.K",
    ]
    # the provisioner takes argv[0] as the nodes' Python only when it is absolute
    spec = kj(python="python3.11")
    assert spec["argv"][0] == "python3.11"
    assert spec["metadata"]["kernel_provisioner"]["config"]["python"] == "python3.11"


def test_an_r_spec_is_irkernel_with_the_spark_context_in_the_launcher() -> None:
    spec = kj(language="r")
    assert spec["argv"] == R_ARGV
    assert spec["display_name"] == "R on YARN (cluster mode)"
    assert spec["env"] == {} and spec["interrupt_mode"] == "message"
    assert spec["metadata"]["kernel_provisioner"]["config"] == {
        "python": PY,  # runs the launcher on the node: argv[0] is R
        "spark_context_in_launcher": True,
        "launch_timeout": 180,
    }
    files = builders.build_spec(SpecOptions(kind="yarn", language="r", python=PY), DIR)
    assert (files.name, files.files, files.launchers) == ("yarn_r", {}, {})


def test_every_option_maps_onto_the_provisioner_config_only_when_not_default() -> None:
    assert cfg(queue="default", accepted_timeout=45.0, spark_home="") == {"launch_timeout": 180}
    config = cfg(
        yarn_endpoints=("http://rm1:8088", "https://[fd00::1]:8090/proxy"),
        hadoop_conf_dir="/etc/hadoop/conf.kf",
        spark_home="/opt/spark-3.5",
        pyspark_archives=("local:/opt/spark/python/lib/pyspark.zip", "local:/opt/py4j.zip"),
        queue="notebooks",
        allowed_queues=("notebooks", "batch"),
        driver_memory="2g",
        driver_cores="2",
        executor_memory="512",
        executor_cores="4",
        num_executors="0",
        spark_conf={"spark.yarn.jars": "local:/opt/spark/jars/*", "spark.sql.x": "a b"},
        accepted_timeout=90,
        impersonation=True,
        launch_timeout=240,
        authorized_users=("alice",),
    )
    assert config == {
        "yarn_endpoints": ["http://rm1:8088", "https://[fd00::1]:8090/proxy"],
        "hadoop_conf_dir": "/etc/hadoop/conf.kf",
        "spark_home": "/opt/spark-3.5",
        "pyspark_archives": "local:/opt/spark/python/lib/pyspark.zip,local:/opt/py4j.zip",
        "queue": "notebooks",
        "allowed_queues": ["notebooks", "batch"],
        "spark_conf": {
            "spark.driver.memory": "2048m",
            "spark.driver.cores": "2",
            "spark.executor.memory": "512m",
            "spark.executor.cores": "4",
            "spark.executor.instances": "0",
            "spark.yarn.jars": "local:/opt/spark/jars/*",
            "spark.sql.x": "a b",
        },
        "accepted_timeout": 90,
        "impersonation_enabled": True,
        "authorized_users": ["alice"],
        "launch_timeout": 240,
    }


def test_every_config_key_the_yarn_kind_writes_is_a_setting_of_its_provisioner() -> None:
    (entry,) = entry_points(group="jupyter_client.kernel_provisioners", name="kernelfleet-yarn")
    provisioner = entry.load()
    settings = set(provisioner.class_traits())
    for language in ("python", "r"):
        written = cfg(
            language=language,
            python="python3",
            yarn_endpoints=("http://rm:8088",),
            hadoop_conf_dir="/etc/h",
            spark_home="/opt/spark",
            pyspark_archives=("local:/p.zip",),
            queue="q",
            allowed_queues=("q",),
            driver_memory="1g",
            spark_conf={"spark.x": "1"},
            accepted_timeout=10,
            impersonation=True,
            authorized_users=("a",),
            unauthorized_users=("b",),
        )
        assert set(written) <= settings, set(written) - settings
        # and the provisioner takes the values as they are written
        prov = provisioner(**{k: v for k, v in written.items()})
        assert prov.spark_conf == written["spark_conf"] and prov.queue == "q"


def test_the_launch_timeout_and_init_mode_default_per_kind() -> None:
    assert cfg()["launch_timeout"] == 180
    assert cfg(launch_timeout=60)["launch_timeout"] == 60  # given: kept, even the ssh default
    assert kj(spark_init_mode="eager")["argv"] == ARGV
    assert builders.build_kernel_json(SpecOptions(python=PY), DIR)["metadata"][
        "kernel_provisioner"
    ]["config"] == {"launch_timeout": 60}
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(SpecError, match="--launch-timeout"):
            kj(launch_timeout=bad)


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"spark_init_mode": "lazy"}, "--spark-init-mode lazy: YARN cluster mode needs eager"),
        ({"spark_init_mode": "none"}, "--spark-init-mode none"),
        ({"language": "scala", "toree_jar": "/t.jar"}, "Scala kernels in YARN cluster mode"),
        ({"spark_master": "local[2]"}, "--spark-master 'local\\[2\\]'"),
        ({"extra_spark_opts": "--conf x=1"}, "--extra-spark-opts does not apply"),
        ({"python": "/opt/py bin/python"}, "--python '/opt/py bin/python'"),
        ({"python": "/opt/$(id)/python"}, "--python"),
        ({"queue": "a;b"}, "--queue: 'a;b' is not a queue name"),
        ({"queue": "$(id)"}, "--queue"),
        ({"queue": "q\nx"}, "--queue"),
        ({"queue": ""}, "--queue"),
        ({"allowed_queues": ("default", "b c")}, "--allowed-queues: 'b c'"),
        ({"allowed_queues": ("other",)}, "--allowed-queues must include --queue 'default'"),
        ({"yarn_endpoints": ("rm1:8088",)}, "--yarn-endpoints: 'rm1:8088'"),
        ({"yarn_endpoints": ("http://user:pw@rm:8088",)}, "--yarn-endpoints"),
        ({"yarn_endpoints": ("http://rm:8088/?x=1",)}, "--yarn-endpoints"),
        ({"yarn_endpoints": ("http://rm:99999",)}, "--yarn-endpoints"),
        ({"yarn_endpoints": ("http://$(id):8088",)}, "--yarn-endpoints"),
        ({"hadoop_conf_dir": "etc/hadoop"}, "--hadoop-conf-dir must be an absolute path"),
        ({"hadoop_conf_dir": "/etc/$HOME"}, "--hadoop-conf-dir"),
        ({"hadoop_conf_dir": "/etc/\nx"}, "--hadoop-conf-dir"),
        ({"pyspark_archives": ("local:/a b.zip",)}, "--pyspark-archives: 'local:/a b.zip'"),
        ({"pyspark_archives": ("$(id)",)}, "--pyspark-archives"),
        ({"driver_memory": "lots"}, "--driver-memory 'lots' is not a memory size"),
        ({"executor_memory": "2g; id"}, "--executor-memory"),
        ({"driver_cores": "0"}, "--driver-cores 0 is out of range"),
        ({"executor_cores": "1.5"}, "--executor-cores '1.5' is not a whole number"),
        ({"num_executors": "-1"}, "--num-executors '-1'"),
        ({"spark_conf": {"spark.x": "$(id)"}}, "--spark-conf 'spark.x': the value must not"),
        ({"spark_conf": {"spark.x": "${env:HOME}"}}, "--spark-conf 'spark.x'"),
        ({"spark_conf": {"spark.x": "a\nb"}}, "--spark-conf 'spark.x': the value must be one"),
        ({"spark_conf": {"x.y": "1"}}, "--spark-conf 'x.y' is not a Spark property"),
        ({"spark_conf": {"spark.x;id": "1"}}, "--spark-conf"),
        ({"spark_conf": {"spark.yarn.queue": "q"}}, "set it with --queue"),
        ({"spark_conf": {"spark.master": "local"}}, "set by the provisioner"),
        ({"spark_conf": {"spark.pyspark.python": "/x"}}, "set it with --python"),
        ({"spark_conf": {"spark.yarn.appMasterEnv.KF_RESPONSE_ADDRESS": "x"}}, "KF_"),
        ({"spark_conf": {"spark.executorEnv.X": "`id`"}}, "launch script"),
        ({"spark_conf": {"spark.yarn.appMasterEnv.X": 'a"b'}}, "launch script"),
        ({"spark_conf": {"spark.driver.memory": "lots"}}, "--spark-conf 'spark.driver.memory'"),
        (
            {"driver_memory": "1g", "spark_conf": {"spark.driver.memory": "2g"}},
            "--driver-memory and --spark-conf spark.driver.memory both set",
        ),
        ({"accepted_timeout": 0.0}, "--accepted-timeout must be a positive"),
        ({"accepted_timeout": float("inf")}, "--accepted-timeout"),
        ({"spark_home": "relative/spark"}, "--spark-home must be an absolute path"),
        ({"spark_home": "/opt/$HOME"}, "--spark-home"),
        ({"remote_hosts": ("h1",)}, "--remote-hosts only applies to 'spec install ssh'"),
    ],
)
def test_a_value_that_cannot_make_a_working_spec_is_refused_naming_its_flag(
    values: dict[str, Any], match: str
) -> None:
    with pytest.raises(SpecError, match=match):
        kj(**values)


def test_the_kinds_options_are_declared_with_flags_and_env() -> None:
    names = list(YarnKind.option_traits())
    assert names == [
        "yarn_endpoints",
        "hadoop_conf_dir",
        "pyspark_archives",
        "queue",
        "allowed_queues",
        "driver_memory",
        "driver_cores",
        "executor_memory",
        "executor_cores",
        "num_executors",
        "spark_conf",
        "impersonation",
        "accepted_timeout",
    ]
    for name, trait in YarnKind.option_traits().items():
        assert trait.metadata["env"] == ("KF_SPEC_YARN_" + name.upper().removeprefix("YARN_"),)
        assert "Default:" in (trait.help or ""), name
    assert KINDS["yarn"] is YarnKind and YarnInstallApp.kind_class is YarnKind


# -- the value parsers, for any input ------------------------------------------------------------

hostile = st.sampled_from(HOSTILE_WORDS) | any_text
memory_like = st.from_regex(r"\d{1,8}[kKmMgGtT]?[bB]?", fullmatch=True)


@fuzz_settings(300)
@given(text=memory_like | hostile)
def test_a_memory_option_is_a_whole_number_of_mib_or_refused(text: str) -> None:
    try:
        value = resource_value("spark.driver.memory", "memory", text, "--driver-memory")
    except SpecError as exc:
        assert str(exc).startswith("--driver-memory ")
        return
    assert re.fullmatch(r"[1-9]\d*m", value)
    # the provisioner reads it back as the same size
    assert yarn_submit.memory_mb(value, "x") == yarn_submit.memory_mb(text, "x")


@fuzz_settings(300)
@given(text=st.integers(-5, 2000).map(str) | hostile, kind=st.sampled_from(["cores", "executors"]))
def test_a_count_option_is_a_bounded_whole_number_or_refused(text: str, kind: str) -> None:
    try:
        value = resource_value("spark.executor.cores", kind, text, "--executor-cores")
    except SpecError as exc:
        assert str(exc).startswith("--executor-cores ")
        return
    bounds = (0, 100_000) if kind == "executors" else (1, 1024)
    assert value == str(int(text)) and bounds[0] <= int(value) <= bounds[1]


conf_key = st.from_regex(r"spark\.[a-zA-Z]{1,8}(\.[A-Za-z]{1,8}){0,2}", fullmatch=True) | (
    st.sampled_from(["spark.executorEnv.X", "spark.yarn.appMasterEnv.Y", "spark.master"])
)


@fuzz_settings(400)
@given(key=conf_key | hostile, value=hostile | st.text(max_size=30))
def test_spark_conf_accepts_only_inert_values(key: str, value: str) -> None:
    try:
        out = parse_spark_conf({key: value})
    except SpecError as exc:
        assert str(exc).startswith("--spark-conf "), exc
        return
    ((k, v),) = out.items()
    assert re.fullmatch(r"spark\.[A-Za-z0-9_.-]+", k) and k != "spark.master"
    assert "$" not in v and not re.search(r"[\x00-\x1f\x7f]", v)
    if k.startswith(("spark.executorEnv.", "spark.yarn.appMasterEnv.")):
        assert yarn_submit.SAFE_VALUE.match(v)  # it goes into the container's launch script


@fuzz_settings(300)
@given(
    text=hostile
    | st.from_regex(r"https?://[a-z0-9.\-]{1,12}(:\d{1,6})?(/[a-z]{0,5})?", fullmatch=True)
)
def test_an_accepted_endpoint_is_a_plain_web_address(text: str) -> None:
    try:
        kj(yarn_endpoints=(text,))
    except SpecError as exc:
        assert str(exc).startswith("--yarn-endpoints: ")
        return
    assert ENDPOINT_RE.match(text)
    assert not re.search(r"[\s@?#$`;'\"\\]", text)
    port = re.search(r":(\d+)", text.removeprefix("http://").removeprefix("https://"))
    assert port is None or 0 < int(port.group(1)) < 65536


@fuzz_settings(200)
@given(queue=hostile | st.from_regex(r"[A-Za-z0-9_.\-]{1,20}", fullmatch=True))
def test_an_accepted_queue_name_is_the_provisioners_queue_name(queue: str) -> None:
    try:
        config = cfg(queue=queue)
    except SpecError as exc:
        assert str(exc).startswith("--queue: ")
        return
    assert yarn_submit.QUEUE.match(queue) and config.get("queue", "default") == queue


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "p" / "share" / "jupyter"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KF_CONFIG_DIR", str(tmp_path / "cfg"))
    for name in list(os.environ):
        if name.startswith(("KF_SPEC_", "KF_YARN_", "KF_CHECK_")):
            monkeypatch.delenv(name)
    yield tmp_path
    Application.clear_instance()


def kf(app_cls: type[Application], *argv: str) -> tuple[int, str, str]:
    """A kernelfleet command in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            app = app_cls()
            app.initialize(list(argv))
            app.start()
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:  # subcommands are traitlets singletons: leave none behind
            for cls in [InstallApp, CheckApp, *(install_command(k) for k in KINDS.values())]:
                cls.clear_instance()
    return code, out.getvalue(), err.getvalue()


def test_spec_install_yarn_dry_run_prints_the_spec_and_writes_nothing(home: Path) -> None:
    code, out, err = kf(
        SpecApp,
        "install",
        "yarn",
        "--dry-run",
        f"--python={PY}",
        "--queue=nb",
        "--allowed-queues=nb,batch",
        "--driver-memory=2g",
        "--num-executors=3",
        "--spark-conf",
        "spark.yarn.jars=local:/opt/spark/jars/*",
        "--spark-conf=spark.sql.shuffle.partitions=8",
        "--yarn-endpoints=http://rm1:8088,http://rm2:8088",
        "--impersonation",
    )
    assert code == 0, err
    spec = json.loads(out)
    assert spec["argv"] == ARGV and spec["env"] == {}
    assert spec["metadata"]["kernel_provisioner"]["config"] == {
        "yarn_endpoints": ["http://rm1:8088", "http://rm2:8088"],
        "queue": "nb",
        "allowed_queues": ["nb", "batch"],
        "spark_conf": {
            "spark.driver.memory": "2048m",
            "spark.executor.instances": "3",
            "spark.yarn.jars": "local:/opt/spark/jars/*",
            "spark.sql.shuffle.partitions": "8",
        },
        "impersonation_enabled": True,
        "launch_timeout": 180,
    }
    assert "dry run: nothing written" in err and "yarn_python" in err
    assert not (home / "p").exists()


def test_spec_install_yarn_options_from_env_and_config_file(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KF_SPEC_YARN_SPARK_CONF", '{"spark.yarn.jars": "local:/j/*"}')
    monkeypatch.setenv("KF_SPEC_YARN_QUEUE", "fromenv")
    monkeypatch.setenv("KF_SPEC_LAUNCH_TIMEOUT", "300")
    (home / "cfg").mkdir()
    (home / "cfg" / "kernelfleet_config.py").write_text("c.YarnInstallApp.queue = 'fromfile'\n")
    code, out, err = kf(SpecApp, "install", "yarn", "--dry-run", f"--python={PY}")
    assert code == 0, err
    config = json.loads(out)["metadata"]["kernel_provisioner"]["config"]
    assert config == {
        "queue": "fromfile",
        "spark_conf": {"spark.yarn.jars": "local:/j/*"},
        "launch_timeout": 300,
    }


def test_spec_install_yarn_writes_the_launcher_and_says_what_notebooks_need(home: Path) -> None:
    prefix = home / "pfx"
    code, out, err = kf(SpecApp, "install", "yarn", f"--prefix={prefix}", f"--python={PY}")
    assert code == 0, err
    spec_dir = prefix / "share/jupyter/kernels/yarn_python"
    assert json.loads((spec_dir / "kernel.json").read_text())["argv"] == ARGV
    shipped = spec_dir / "scripts" / "spark_kernel.py"
    assert shipped.read_bytes() == Path(builders.spark_kernel.__file__).read_bytes()
    assert not (spec_dir / "bin").exists()
    assert out.splitlines()[0] == f"Installed kernelspec yarn_python in {spec_dir}"
    assert "kernelfleet hosts check --spec yarn_python" in out
    # the notebook-side settings named exist as such in jupyter_server 2
    from jupyter_server.gateway.gateway_client import GatewayClient

    for name in ("request_timeout", "connect_timeout"):
        assert f"--GatewayClient.{name}=200" in out and name in GatewayClient.class_traits()
    assert "KERNEL_LAUNCH_TIMEOUT" in out


def test_spec_install_yarn_bad_values_are_usage_errors(home: Path) -> None:
    for argv, message in (
        (["--queue=a;b"], "--queue: 'a;b' is not a queue name"),
        (["--spark-init-mode=lazy"], "--spark-init-mode lazy"),
        (["--language=scala"], "Scala kernels in YARN cluster mode are not supported yet"),
        (["--spark-conf", "spark.x=$(id)"], "--spark-conf 'spark.x'"),
    ):
        code, out, err = kf(SpecApp, "install", "yarn", "--dry-run", f"--python={PY}", *argv)
        assert (code, out) == (2, ""), err
        assert err.startswith("kernelfleet spec install yarn: error: ") and message in err
        assert len(err.splitlines()) == 1


def test_spec_install_yarn_help_shows_its_defaults_and_options(home: Path) -> None:
    code, out, _ = kf(SpecApp, "install", "yarn", "--help")
    assert code == 0
    for text in (
        "--queue=<Unicode>",
        "KF_SPEC_YARN_QUEUE",
        "--spark-conf=<key-1>=<value-1>...",
        "--impersonation\n",
        "Default: 180.0",
        "Default: 'eager'",
        "the gateway runs to submit kernels",
        "kernelfleet spec install yarn --language=r",
    ):
        assert text in out, text
    # the shared defaults of the other kinds are untouched
    code, out, _ = kf(SpecApp, "install", "ssh", "--help")
    assert "Default: 60.0" in out and "Default: 'lazy'" in out


# -- hosts check ---------------------------------------------------------------------------------


def target(**kw: Any) -> yarncheck.YarnTarget:
    values: dict[str, Any] = {
        "spec": "yarn_python",
        "resource_dir": DIR,
        "argv": tuple(ARGV),
        "endpoints": ("http://rm1:8088", "http://rm2:8088"),
        "conf_dir": "/etc/hadoop/conf",
        "spark_home": "/opt/spark",
        "queue": "nb",
    }
    values.update(kw)
    return yarncheck.YarnTarget(**values)


def rows(report: HostReport) -> dict[str, tuple[str, str, str]]:
    return {c.name: (c.status, c.detail, c.fix) for c in report.checks}


def test_resourcemanagers_exactly_one_active() -> None:
    def rm(states: Any, **kw: Any) -> tuple[str, str, str]:
        report = HostReport("c")
        yarncheck.record_rm(report, target(**kw), states)
        return rows(report)["resourcemanager"]

    ok = rm({"http://rm1:8088": "STANDBY", "http://rm2:8088": "ACTIVE"})
    assert ok == (OK, "http://rm2:8088 is ACTIVE; http://rm1:8088: STANDBY", "")
    status, detail, fix = rm({"http://rm1:8088": "unreachable (refused)", "http://rm2:8088": "?"})
    assert status == FAIL and detail.startswith("no ACTIVE ResourceManager (http://rm1:8088: ")
    assert "yarn --daemon start resourcemanager" in fix
    status, _, fix = rm({"http://rm1:8088": "STANDBY", "http://rm2:8088": "STANDBY"})
    assert status == FAIL and "ZooKeeper" in fix
    status, detail, fix = rm({"http://rm1:8088": "ACTIVE", "http://a:8088": "ACTIVE"})
    assert status == FAIL and detail.startswith("2 ResourceManagers say ACTIVE")
    assert "list each RM once" in fix
    status, detail, fix = rm({}, endpoints=())
    assert status == FAIL and "no ResourceManager configured" in detail
    assert "--yarn-endpoints" in fix


def test_nodemanagers_running_and_the_unhealthy_named() -> None:
    def nm(nodes: Any) -> tuple[str, str, str]:
        report = HostReport("c")
        yarncheck.record_nodes(report, nodes)
        return rows(report)["nodemanagers"]

    good = {"state": "RUNNING", "nodeHostName": "n1", "availMemoryMB": 4096}
    sick = {
        "state": "UNHEALTHY",
        "nodeHostName": "n2",
        "healthReport": "1/1 local-dirs usable space is below 90%",
    }
    assert nm([good, {**good, "nodeHostName": "n3", "availableVirtualCores": 4}]) == (
        OK,
        "2 RUNNING (8192 MB and 4 vcores free, at most 4096 MB on one node)",
        "",
    )
    status, detail, _ = nm([good, sick, {"state": "SHUTDOWN", "nodeHostName": "n4"}])
    assert status == OK and detail.endswith(
        "; 2 not: n2 UNHEALTHY: 1/1 local-dirs usable space is below 90%; 1 SHUTDOWN: n4"
    )
    status, detail, fix = nm([sick, {"state": "LOST", "nodeHostName": "n5"}])
    assert status == FAIL and detail.startswith("no NodeManager is RUNNING (n2 UNHEALTHY: 1/1")
    assert "n5 LOST: no health report" in detail and "n2, n5" in fix
    status, _, fix = nm([])
    assert status == FAIL and "yarn --daemon start nodemanager" in fix
    down = [{"state": "SHUTDOWN", "nodeHostName": "n1"}, {"state": "SHUTDOWN", "id": "n2:1"}]
    status, detail, fix = nm(down)
    assert detail == "no NodeManager is RUNNING (2 SHUTDOWN: n1, n2:1)"
    assert "yarn --daemon start nodemanager" in fix
    assert nm(None)[0] == SKIP
    assert nm(RMError("boom", 500))[:2] == (
        FAIL,
        "the active ResourceManager did not list its nodes: boom",
    )


def test_the_queue_exists_is_a_running_leaf() -> None:
    def q(queues: Any, **kw: Any) -> tuple[str, str, str]:
        report = HostReport("c")
        yarncheck.record_queue(report, target(**kw), queues)
        return rows(report)["queue"]

    nb = QueueInfo("nb", "RUNNING", capacity=50, max_capacity=100, used_capacity=10)
    root = QueueInfo("root", "RUNNING", children=("nb", "batch"))
    status, detail, _ = q({"nb": nb, "root": root})
    assert status == OK and detail.startswith("queue 'nb' is RUNNING, 10% of its 50% capacity")
    status, detail, fix = q({"root": root, "batch": nb}, queue="nope")
    assert status == FAIL and detail.startswith("the ResourceManager has no queue 'nope'")
    assert "--queue" in fix
    status, detail, fix = q({"root": root}, queue="root")
    assert status == FAIL and "parent queue" in detail and fix.endswith("one of: nb, batch")
    stopped = QueueInfo("nb", "STOPPED")
    status, detail, fix = q({"nb": stopped})
    assert status == FAIL and "is STOPPED" in detail and "refreshQueues" in fix
    status, detail, _ = q({"nb": nb}, allowed_queues=("nb", "gone"))
    assert status == FAIL and "no queue 'gone'" in detail
    assert q({}, queue="nb")[0] == SKIP
    assert q(None)[0] == SKIP


def test_this_machines_spark_submit_hadoop_conf_and_shipped_launcher(tmp_path: Path) -> None:
    home = tmp_path / "spark"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "spark-submit").write_text("#!/bin/sh\n")
    conf = tmp_path / "conf"
    conf.mkdir()
    spec_dir = tmp_path / "spec"
    (spec_dir / "scripts").mkdir(parents=True)
    t = target(spark_home=str(home), conf_dir=str(conf), resource_dir=str(spec_dir))
    facts = yarncheck.local_facts(t)
    assert facts.shipped == {"spark_kernel.py": "missing"} and not facts.yarn_site_ok
    assert not facts.spark_submit_ok  # not executable
    report = HostReport("c")
    yarncheck.record_local(report, t, facts)
    checks = rows(report)
    assert (
        checks["spark-submit"][0] == FAIL
        and "not found or not executable" in checks["spark-submit"][1]
    )
    assert checks["hadoop conf"][0] == FAIL and str(conf) in checks["hadoop conf"][2]
    assert checks["spec"][:2] == (
        FAIL,
        f"scripts/spark_kernel.py is missing from {spec_dir} (each kernel runs it)",
    )

    (home / "bin" / "spark-submit").chmod(0o755)
    (conf / "yarn-site.xml").write_text("<configuration/>")
    (spec_dir / "scripts" / "spark_kernel.py").write_text("# an older launcher\n")
    facts = yarncheck.local_facts(t)
    assert facts.spark_submit_ok and facts.yarn_site_ok
    assert facts.shipped == {"spark_kernel.py": "differs"}
    (spec_dir / "scripts" / "spark_kernel.py").write_bytes(
        Path(builders.spark_kernel.__file__).read_bytes()
    )
    report = HostReport("c")
    yarncheck.record_local(report, t, yarncheck.local_facts(t))
    checks = rows(report)
    assert checks["hadoop conf"][0] == OK
    assert checks["spec"] == (OK, "scripts/spark_kernel.py shipped with each kernel", "")
    r_target = target(argv=tuple(R_ARGV), resource_dir=str(spec_dir))
    assert r_target.shipped() == []


async def test_hosts_check_of_a_yarn_spec_whose_rm_is_not_there(home: Path, tmp_path: Path) -> None:
    """The whole path without a cluster: nothing listens on the endpoint (a real refusal),
    so the RM row fails with the cause and fix, the rows that need an RM are skipped, and
    this machine's rows are real; exit status 1, and no SSH anywhere."""
    import asyncio

    prefix = tmp_path / "pfx"
    code, _, err = kf(
        SpecApp,
        "install",
        "yarn",
        f"--prefix={prefix}",
        f"--python={PY}",
        "--yarn-endpoints=http://127.0.0.1:9",
        f"--hadoop-conf-dir={tmp_path}/no-conf",
        f"--spark-home={tmp_path}/no-spark",
    )
    assert code == 0, err
    code, out, err = await asyncio.to_thread(
        kf, CheckApp, "--spec=yarn_python", f"--prefix={prefix}", "--json"
    )
    assert code == 1, err
    data = json.loads(out)
    (cluster,) = data["hosts"]
    assert not data["ready"] and cluster["host"] == "127.0.0.1:9"
    checks = {c["name"]: c for c in cluster["checks"]}
    assert list(checks) == list(yarncheck.YARN_CHECK_NAMES)
    assert checks["resourcemanager"]["status"] == FAIL
    assert "http://127.0.0.1:9: unreachable (" in checks["resourcemanager"]["detail"]
    assert checks["nodemanagers"]["status"] == SKIP and checks["queue"]["status"] == SKIP
    assert checks["spark-submit"]["status"] == FAIL
    assert f"{tmp_path}/no-spark/bin/spark-submit" in checks["spark-submit"]["detail"]
    assert checks["hadoop conf"]["status"] == FAIL
    assert checks["spec"]["status"] == OK

    code, out, err = await asyncio.to_thread(
        kf, CheckApp, "--spec=yarn_python", f"--prefix={prefix}"
    )
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == [
        "CLUSTER",
        "STATUS",
        "RESOURCEMANAGER",
        "NODEMANAGERS",
        "QUEUE",
        "SPARK-SUBMIT",
        "HADOOP",
        "CONF",
        "SPEC",
    ]
    assert lines[1].split() == [
        "127.0.0.1:9",
        "NOT",
        "READY",
        "FAIL",
        "-",
        "-",
        "FAIL",
        "FAIL",
        "ok",
    ]
    assert "127.0.0.1:9: resourcemanager: no ACTIVE ResourceManager" in out
    assert out.rstrip().endswith("YARN cluster NOT READY for yarn_python")
    report = HostReport("x")
    report.add("queue", FAIL, "d", "f")
    assert failure_lines([report]) == ["x: queue: d", "    fix: f"]

    code, _, err = await asyncio.to_thread(
        kf, CheckApp, "--spec=yarn_python", f"--prefix={prefix}", "--hosts=h1"
    )
    assert code == 2 and "--hosts does not apply to kernelspec yarn_python" in err
