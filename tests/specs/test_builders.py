"""Every install option's effect on kernel.json and run.sh (pure builders, no I/O)."""

from __future__ import annotations

import dataclasses
import shlex

import pytest

from kernelfleet.errors import BadRequest
from kernelfleet.specs import builders
from kernelfleet.specs.builders import SpecError, SpecOptions, build_kernel_json, build_run_sh

DIR = "/srv/kernels/k"
PY = "/opt/py/bin/python3"


def kj(**kw: object) -> dict:
    kw.setdefault("python", PY)
    return build_kernel_json(SpecOptions(**kw), DIR)  # type: ignore[arg-type]


def cfg(**kw: object) -> dict:
    return kj(**kw)["metadata"]["kernel_provisioner"]["config"]


def test_defaults_python_ssh() -> None:
    spec = kj()
    assert spec["argv"] == [PY, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert spec["display_name"] == "Python on SSH hosts"
    assert spec["language"] == "python"
    assert spec["interrupt_mode"] == "signal"
    assert spec["env"] == {}
    prov = spec["metadata"]["kernel_provisioner"]
    # only non-default settings, plus launch_timeout
    assert prov == {"provisioner_name": "kernelfleet-ssh", "config": {"launch_timeout": 60}}
    assert spec["metadata"]["kernelfleet"]["kind"] == "ssh"
    assert SpecOptions().name == "ssh_python"


def test_local_kind() -> None:
    spec = kj(kind="local")
    assert spec["metadata"]["kernel_provisioner"]["provisioner_name"] == "kernelfleet-local"
    assert spec["display_name"] == "Python (local)"
    assert SpecOptions(kind="local", spark=True).name == "local_python_spark"
    with pytest.raises(SpecError, match="--remote-hosts"):
        kj(kind="local", remote_hosts=("h1",))


def test_names() -> None:
    assert kj(kernel_name="mine", display_name="My Kernel")["display_name"] == "My Kernel"
    assert SpecOptions(kernel_name="mine").name == "mine"
    assert SpecOptions(spark=True).name == "ssh_python_spark"
    assert SpecOptions(language="R").name == "ssh_r"
    for bad in ("../x", "a b", "", "-x"):
        with pytest.raises(SpecError, match="kernel-name"):
            build_kernel_json(SpecOptions(kernel_name=bad or " "), DIR)
    with pytest.raises(SpecError, match="display-name"):
        kj(display_name="two\nlines")


def test_remote_hosts_users_port_range_timeout_balancing() -> None:
    c = cfg(
        remote_hosts=("h1", "10.0.0.2"),
        authorized_users=("alice", "bob"),
        unauthorized_users=("mallory",),
        port_range="40000..40100",
        launch_timeout=12.5,
        load_balancing_algorithm="least-connection",
    )
    assert c == {
        "remote_hosts": ["h1", "10.0.0.2"],
        "authorized_users": ["alice", "bob"],
        "unauthorized_users": ["mallory"],
        "port_range": "40000..40100",
        "launch_timeout": 12.5,
        "load_balancing_algorithm": "least-connection",
    }
    assert "load_balancing_algorithm" not in cfg(load_balancing_algorithm="round-robin")
    with pytest.raises(SpecError, match="remote-hosts"):
        kj(remote_hosts=("h1; rm -rf /",))
    with pytest.raises(SpecError, match="authorized-users"):
        kj(authorized_users=("a b",))
    with pytest.raises(BadRequest, match="below 1024"):
        kj(port_range="80..200")
    with pytest.raises(BadRequest, match=r"lo\.\.hi"):
        kj(port_range="4000-5000")
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(SpecError, match="launch-timeout"):
            kj(launch_timeout=bad)
    with pytest.raises(SpecError, match="load-balancing"):
        kj(load_balancing_algorithm="random")


def test_ipykernel_subclass() -> None:
    argv = kj(ipykernel_subclass_name="mypkg.kernels.MyKernel")["argv"]
    assert argv[-1] == "--IPKernelApp.kernel_class=mypkg.kernels.MyKernel"
    spark_argv = kj(ipykernel_subclass_name="mypkg.K", spark=True)["argv"]
    assert spark_argv[-2:] == ["--kernel-class", "mypkg.K"]
    with pytest.raises(SpecError, match="dotted"):
        kj(ipykernel_subclass_name="not a class")
    with pytest.raises(SpecError, match="Python kernels only"):
        kj(ipykernel_subclass_name="a.B", language="r")


def test_python_interpreter() -> None:
    assert kj(python="/usr/bin/python3")["argv"][0] == "/usr/bin/python3"
    assert kj(python="/x/py", spark=True)["env"]["PYSPARK_PYTHON"] == "/x/py"
    for bad in ("", "/x/\npy", "/x/$HOME/py"):
        with pytest.raises(SpecError, match="--python"):
            kj(python=bad)


def test_language_r() -> None:
    spec = kj(language="R")
    assert spec["argv"] == ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]
    assert spec["language"] == "R"
    assert spec["display_name"] == "R on SSH hosts"
    assert spec["metadata"]["kernel_provisioner"]["config"]["transport_encryption"] is False
    with pytest.raises(SpecError, match="language"):
        kj(language="cobol")


def test_language_scala_is_toree_through_spark() -> None:
    with pytest.raises(SpecError, match="toree-jar"):
        kj(language="scala")
    spec = kj(language="scala", toree_jar="/opt/toree/toree-assembly.jar")
    assert spec["argv"] == [f"{DIR}/bin/run.sh", "--profile", "{connection_file}"]
    assert spec["env"]["TOREE_JAR"] == "/opt/toree/toree-assembly.jar"
    assert spec["metadata"]["kernel_provisioner"]["config"]["transport_encryption"] is False
    assert SpecOptions(language="scala").name == "ssh_scala"
    run_sh = build_run_sh(SpecOptions(language="scala", toree_jar="/t.jar", python=PY))
    assert run_sh is not None and "--class org.apache.toree.Main" in run_sh


def test_spark_python() -> None:
    spec = kj(spark=True)
    assert spec["argv"] == [
        f"{DIR}/bin/run.sh",
        "--connection-file",
        "{connection_file}",
        "--spark-init-mode",
        "lazy",
    ]
    assert spec["interrupt_mode"] == "message"
    env = spec["env"]
    assert env["SPARK_HOME"] == "/opt/spark"
    assert shlex.split(env["SPARK_OPTS"]) == ["--master", "yarn", "--deploy-mode", "client"]
    assert env["PYSPARK_DRIVER_PYTHON"] == PY
    assert spec["display_name"] == "Spark - Python on SSH hosts (yarn)"
    assert spec["metadata"]["kernelfleet"]["spark"] == {
        "master": "yarn",
        "home": "/opt/spark",
        "init_mode": "lazy",
    }


def test_spark_master_home_init_mode_extra_opts() -> None:
    spec = kj(
        spark=True,
        spark_master="spark://m1:7077",
        spark_home="/usr/lib/spark",
        spark_init_mode="eager",
        extra_spark_opts="--conf spark.executor.memory=2g --conf 'spark.x=a b'",
    )
    assert spec["argv"][-2:] == ["--spark-init-mode", "eager"]
    assert spec["env"]["SPARK_HOME"] == "/usr/lib/spark"
    assert shlex.split(spec["env"]["SPARK_OPTS"]) == [
        "--master",
        "spark://m1:7077",
        "--deploy-mode",
        "client",
        "--conf",
        "spark.executor.memory=2g",
        "--conf",
        "spark.x=a b",
    ]
    assert kj(spark=True, spark_init_mode="none")["argv"][-1] == "none"
    for master in ("local[2]", "local[*]", "yarn", "k8s://https://api:6443", "spark://a:1,b:2"):
        kj(spark=True, spark_master=master)
    for bad in ("spark://m:7077 --conf x=1", "$(id)", "http://x"):
        with pytest.raises(SpecError, match="spark-master"):
            kj(spark=True, spark_master=bad)
    with pytest.raises(SpecError, match="spark-home"):
        kj(spark=True, spark_home="relative/spark")
    with pytest.raises(SpecError, match="init-mode"):
        kj(spark=True, spark_init_mode="sometimes")
    for bad in ("app.py", "--conf", "--conf 'x", "--conf x=$(id)", "--conf a\nb"):
        with pytest.raises(SpecError, match="extra-spark-opts"):
            kj(spark=True, extra_spark_opts=bad)


def test_run_sh_text() -> None:
    assert build_run_sh(SpecOptions(python=PY)) is None
    text = build_run_sh(SpecOptions(spark=True, python=PY))
    assert text is not None
    assert text.startswith("#!/usr/bin/env bash\n")
    assert 'exec "$spark_submit" --name "$KERNEL_ID" "${opts[@]}"' in text
    assert "scripts/spark_kernel.py" in text
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not any("eval" in line for line in code)
    r_text = build_run_sh(SpecOptions(spark=True, language="r", python=PY))
    assert r_text is not None and "scripts/spark_kernel.R" in r_text
    files = builders.build_spec(SpecOptions(spark=True, language="r", python=PY), DIR)
    assert set(files.launchers) == {"scripts/spark_kernel.py", "scripts/spark_kernel.R"}
    assert files.files["bin/run.sh"][1] == 0o755


def test_request_spark_opts_rules() -> None:
    split = builders.split_spark_opts
    assert split("--conf a=1 --verbose --conf=b=2", what="x", trusted=False) == [
        "--conf",
        "a=1",
        "--verbose",
        "--conf=b=2",
    ]
    for forbidden in builders.FORBIDDEN_REQUEST_SPARK_OPTS:
        with pytest.raises(SpecError, match="may not be changed"):
            split(f"{forbidden} x", what="x", trusted=False)
    assert split("--master local[1]", what="x", trusted=True) == ["--master", "local[1]"]


def test_options_are_frozen_values() -> None:
    opts = SpecOptions(python=PY)
    assert dataclasses.replace(opts, spark=True).uses_spark
    assert SpecOptions(language="scala").uses_spark
