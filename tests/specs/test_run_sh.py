"""The generated bin/run.sh, run for real with a fake spark-submit that records its argv.

Hostile KERNEL_EXTRA_SPARK_OPTS values are passed to spark-submit as data or refused; none
runs a command, and none can rename the application or add an application file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernelfleet.specs.builders import SpecOptions
from kernelfleet.specs.installer import install


@pytest.fixture
def spark_spec(tmp_path: Path) -> tuple[Path, Path]:
    fake = tmp_path / "fakespark"
    (fake / "bin").mkdir(parents=True)
    submit = fake / "bin" / "spark-submit"
    submit.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > "$ARGS_OUT"\n')
    submit.chmod(0o755)
    opts = SpecOptions(
        spark=True,
        python=sys.executable,
        spark_master="spark://m:7077",
        spark_home=str(fake),
        spark_init_mode="eager",
        extra_spark_opts="--conf 'spark.x=a b'",
    )
    done = install(opts, tmp_path / "kernels")
    return done.path, fake


def run(
    spec_dir: Path, fake: Path, tmp_path: Path, extra: str | None
) -> tuple[int, list[str], str]:
    spec = json.loads((spec_dir / "kernel.json").read_text())
    env = {"PATH": "/usr/bin:/bin", "KERNEL_ID": "kid-1", "ARGS_OUT": str(tmp_path / "args")}
    env.update(spec["env"])
    if extra is not None:
        env["KERNEL_EXTRA_SPARK_OPTS"] = extra
    argv = [a.replace("{connection_file}", "/c.json") for a in spec["argv"]]
    res = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=30)
    out = tmp_path / "args"
    words = out.read_bytes().split(b"\0")[:-1] if out.exists() else []
    out.unlink(missing_ok=True)
    return res.returncode, [w.decode() for w in words], res.stderr


def test_spark_submit_gets_name_master_client_mode_and_options(
    spark_spec: tuple[Path, Path], tmp_path: Path
) -> None:
    spec_dir, fake = spark_spec
    code, words, _ = run(spec_dir, fake, tmp_path, '--conf "spark.y=1 2" --verbose')
    assert code == 0
    assert words == [
        "--name",
        "kid-1",
        "--master",
        "spark://m:7077",
        "--deploy-mode",
        "client",
        "--conf",
        "spark.x=a b",
        "--conf",
        "spark.y=1 2",
        "--verbose",
        f"{spec_dir}/scripts/spark_kernel.py",
        "--connection-file",
        "/c.json",
        "--spark-init-mode",
        "eager",
    ]


@pytest.mark.parametrize(
    "value",
    [
        "--conf 'x=$(touch {p})'",
        '--conf "x=`touch {p}`"',
        "--conf x=';touch {p};'",
    ],
)
def test_hostile_values_are_passed_as_data(
    spark_spec: tuple[Path, Path], tmp_path: Path, value: str
) -> None:
    spec_dir, fake = spark_spec
    marker = tmp_path / "pwned"
    code, words, _ = run(spec_dir, fake, tmp_path, value.format(p=marker))
    assert code == 0
    assert not marker.exists()
    assert words[6:8] == ["--conf", "spark.x=a b"]
    assert str(marker) in words[9]  # the text arrived verbatim, as one word


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("--conf x=$(touch {p})", "is not an option"),
        ("--conf a=1\n--conf b=$(touch {p})", "control characters"),
        ("--conf 'a=1", "cannot be split"),
        ("--name other", "--name may not be changed"),
        ("--master=local[1]", "--master may not be changed"),
        ("--proxy-user root", "--proxy-user may not be changed"),
        ("{p}.py", "is not an option"),
        ("--conf", "has no value"),
    ],
)
def test_hostile_or_broken_values_are_refused(
    spark_spec: tuple[Path, Path], tmp_path: Path, value: str, why: str
) -> None:
    spec_dir, fake = spark_spec
    marker = tmp_path / "pwned"
    code, words, stderr = run(spec_dir, fake, tmp_path, value.format(p=marker))
    assert code == 2
    assert words == []  # spark-submit never ran
    assert why in stderr
    assert not marker.exists()


def test_missing_spark_submit_says_where_to_fix_it(
    spark_spec: tuple[Path, Path], tmp_path: Path
) -> None:
    spec_dir, fake = spark_spec
    os.unlink(fake / "bin" / "spark-submit")
    code, _, stderr = run(spec_dir, fake, tmp_path, None)
    assert code == 127
    assert "spark-submit not found" in stderr and "SPARK_HOME" in stderr


def test_lazy_mode_starts_the_kernel_without_spark_submit(tmp_path: Path) -> None:
    """Lazy: run.sh starts the launcher directly (no JVM to wait for), with PySpark's zips on
    PYTHONPATH; the launcher hands the same options to PySpark's spark-submit."""
    fake = tmp_path / "spark"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "spark-submit").write_text("#!/bin/sh\necho spark-submit-ran\n")
    (fake / "bin" / "spark-submit").chmod(0o755)
    (fake / "python" / "lib").mkdir(parents=True)
    for name in ("pyspark.zip", "py4j-0.10.9.9-src.zip"):
        (fake / "python" / "lib" / name).write_bytes(b"")
    python = tmp_path / "python"  # records how it was started
    python.write_text(
        '#!/bin/sh\ncase "$1" in -I) exec /usr/bin/python3 "$@";; esac\n'
        'echo "argv=$*"; echo "pythonpath=$PYTHONPATH"\n'
    )
    python.chmod(0o755)
    done = install(
        SpecOptions(spark=True, python=str(python), spark_home=str(fake)), tmp_path / "k"
    )
    spec = json.loads((done.path / "kernel.json").read_text())
    env = {"PATH": "/usr/bin:/bin", "KERNEL_ID": "k1", **spec["env"]}
    argv = [a.replace("{connection_file}", "/c.json") for a in spec["argv"]]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    assert "spark-submit-ran" not in out
    launcher = done.path / "scripts" / "spark_kernel.py"
    assert f"argv={launcher} --connection-file /c.json --spark-init-mode lazy" in out
    lib = fake / "python" / "lib"
    assert f"pythonpath={lib}/pyspark.zip:{lib}/py4j-0.10.9.9-src.zip" in out
