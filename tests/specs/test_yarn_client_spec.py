"""``spec install ssh --spark --spark-master yarn --hadoop-conf-dir DIR``: YARN client mode (the
kernel is the Spark driver on the SSH host, executors in YARN containers). Pure builders and the
install command; the real run is tests/yarn/test_client_mode.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.cli.spec import LocalInstallApp, SSHInstallApp
from kernelfleet.launchers import spark_kernel
from kernelfleet.specs import builders
from kernelfleet.specs.builders import SpecError, SpecOptions, build_kernel_json, build_spec
from tests.specs.test_install_cli import cli

DIR = "/srv/kernels/k"
PY = "/opt/py/bin/python3"
CONF = "/etc/hadoop/conf"


def kj(**kw: Any) -> dict[str, Any]:
    kw.setdefault("python", PY)
    return build_kernel_json(SpecOptions(**kw), DIR)


def test_the_conf_dir_is_hadoop_conf_dir_in_the_env_of_every_spark_language() -> None:
    spec = kj(spark=True, spark_master="yarn", hadoop_conf_dir=CONF)
    assert spec["env"]["HADOOP_CONF_DIR"] == CONF
    assert spec["env"]["SPARK_OPTS"] == "--master yarn --deploy-mode client"
    # the env only: not a provisioner setting, and run.sh is the one of every Spark spec
    assert spec["metadata"]["kernel_provisioner"]["config"] == {"launch_timeout": 60}
    assert spec["argv"][0] == f"{DIR}/bin/run.sh"
    plain = build_spec(SpecOptions(spark=True, python=PY), DIR)
    mine = build_spec(SpecOptions(spark=True, python=PY, hadoop_conf_dir=CONF), DIR)
    assert mine.files == plain.files and mine.launchers == plain.launchers
    assert kj(spark=True, language="r", hadoop_conf_dir=CONF)["env"]["HADOOP_CONF_DIR"] == CONF
    scala = kj(language="scala", toree_jar="/opt/toree.jar", hadoop_conf_dir=CONF)
    assert scala["env"]["HADOOP_CONF_DIR"] == CONF
    # none given: no entry (the hosts may set it themselves)
    assert "HADOOP_CONF_DIR" not in kj(spark=True)["env"]


@pytest.mark.parametrize(
    "opts",
    [
        {},  # no Spark
        {"spark": True, "spark_master": "spark://m:7077"},
        {"spark": True, "spark_master": "local[2]"},
        {"language": "scala", "toree_jar": "/opt/toree.jar", "spark_master": "k8s://https://a"},
    ],
)
def test_it_is_refused_without_spark_on_yarn(opts: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match=r"^--hadoop-conf-dir applies to Spark kernels on YARN"):
        kj(hadoop_conf_dir=CONF, **opts)


@pytest.mark.parametrize(
    "bad",
    ["etc/hadoop", "./conf", "/etc/$HADOOP", "/etc/${X}", "/etc/ha\ndoop", "/a\tb", "/x\x7f",
     "/bad-\udcff", "/" + "a" * 1024],
)  # fmt: skip
def test_it_must_be_an_absolute_path_without_dollar_or_control_characters(bad: str) -> None:
    with pytest.raises(SpecError, match=r"^--hadoop-conf-dir must be an absolute path"):
        kj(spark=True, hadoop_conf_dir=bad)


def test_other_kinds_refuse_it() -> None:
    with pytest.raises(SpecError, match="--hadoop-conf-dir only applies to 'spec install ssh'"):
        kj(kind="local", spark=True, hadoop_conf_dir=CONF)


def test_spark_on_yarn_without_it_warns_and_everything_else_does_not() -> None:
    (warning,) = builders.install_warnings(SpecOptions(spark=True, python=PY))
    assert "--hadoop-conf-dir" in warning and "HADOOP_CONF_DIR" in warning
    assert "spark-env.sh" in warning
    for quiet in (
        SpecOptions(spark=True, python=PY, hadoop_conf_dir=CONF),
        SpecOptions(spark=True, python=PY, spark_master="spark://m:7077"),
        SpecOptions(python=PY),
        SpecOptions(kind="local", spark=True, python=PY),  # only ssh knows the option
    ):
        assert builders.install_warnings(quiet) == [], quiet
    with pytest.raises(SpecError, match="--hadoop-conf-dir"):
        builders.install_warnings(SpecOptions(hadoop_conf_dir=CONF))


# -- the install command ----------------------------------------------------------------------


def test_install_writes_it_and_warns_only_without_it(
    prefix: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [f"--prefix={prefix}", "--spark", "--spark-master=yarn", "--remote-hosts=h1"]
    assert cli(SSHInstallApp, [*args, f"--hadoop-conf-dir={CONF}"]) == 0
    out, err = capsys.readouterr()
    spec = json.loads((prefix / "share/jupyter/kernels/ssh_python_spark/kernel.json").read_text())
    assert spec["env"]["HADOOP_CONF_DIR"] == CONF
    assert "Installed kernelspec ssh_python_spark" in out and "Warning" not in err

    # left out: installed all the same (the hosts may set it), with a warning naming the flag
    assert cli(SSHInstallApp, [*args, "--replace"]) == 0
    out, err = capsys.readouterr()
    assert "Replaced" in out and "Warning:" in err and "--hadoop-conf-dir" in err
    # a dry run warns too
    assert cli(SSHInstallApp, [*args, "--dry-run"]) == 0
    assert "Warning:" in capsys.readouterr().err


def test_install_refuses_it_naming_the_flag(
    prefix: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(SSHInstallApp, [f"--prefix={prefix}", f"--hadoop-conf-dir={CONF}"]) == 2
    assert "--hadoop-conf-dir applies to Spark kernels on YARN" in capsys.readouterr().err
    argv = [f"--prefix={prefix}", "--spark", "--hadoop-conf-dir=conf"]
    assert cli(SSHInstallApp, argv) == 2
    assert "--hadoop-conf-dir must be an absolute path" in capsys.readouterr().err
    assert cli(LocalInstallApp, [f"--prefix={prefix}", "--spark", f"--hadoop-conf-dir={CONF}"]) == 2
    assert not (prefix / "share").exists()
    # also from its environment variable
    monkeypatch.setenv("KF_SPEC_HADOOP_CONF_DIR", "/opt/hadoop/etc/hadoop")
    assert cli(SSHInstallApp, ["--dry-run", "--spark"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["env"]["HADOOP_CONF_DIR"] == "/opt/hadoop/etc/hadoop"
    assert "Warning" not in err


def test_the_help_says_what_it_is_for(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(SSHInstallApp, ["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--hadoop-conf-dir" in text
    assert "HADOOP_CONF_DIR" in text and "--spark-master yarn" in text
    assert "KF_SPEC_HADOOP_CONF_DIR" in text


class GatewayExited(Exception):
    """Like PySpark's errors: an empty repr, the reason in the text."""

    def __repr__(self) -> str:
        return "GatewayExited()"


def test_a_session_that_cannot_start_says_why_on_use() -> None:
    # what a user of a spec without --hadoop-conf-dir sees: spark-submit exits at once
    starter = spark_kernel.SparkStarter(None)
    ns: dict[str, Any] = {}
    spark_kernel.publish(ns, starter)
    starter.error = GatewayExited("[JAVA_GATEWAY_EXITED] Java gateway process exited\n\tat x")
    starter.ready.set()
    with pytest.raises(RuntimeError) as caught:
        _ = ns["spark"].range
    assert str(caught.value) == (
        "the Spark session could not start: GatewayExited: [JAVA_GATEWAY_EXITED] Java gateway "
        "process exited at x (spark-submit's own messages are in the kernel's log)"
    )
    assert spark_kernel.describe(GatewayExited()) == "GatewayExited()"
    assert len(spark_kernel.describe(ValueError("x" * 5000))) < 1100
