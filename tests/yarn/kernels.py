"""Kernelspecs of the ``kernelfleet-yarn`` provisioner on the test cluster, and what the tests ask
of kernels in it (which host runs them, which applications are left)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from kernelfleet.launchers import spark_kernel
from tests.conftest import add_kernelspec
from tests.yarn.cluster import YarnCluster, spark_home


def python() -> str:
    """The Python of the nodes' kernels: this venv's (the nodes share the filesystem)."""
    return sys.executable


FAST_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def provisioner_config(cluster: YarnCluster, **config: Any) -> dict[str, Any]:
    """The provisioner config of a test kernelspec: the cluster's RMs, Spark from the pyspark
    wheel on every node (``local:`` paths: nothing uploaded), small drivers and executors."""
    home = spark_home()
    lib = home / "python" / "lib"
    py4j = next(lib.glob("py4j-*-src.zip"))
    spark_conf = {
        "spark.yarn.jars": f"local:{home}/jars/*",
        "spark.yarn.stagingDir": f"file://{cluster.state_dir}/staging",
        "spark.driver.memory": "512m",
        "spark.executor.memory": "512m",
        "spark.ui.showConsoleProgress": "false",
        # C1 only and the serial GC: a short-lived small JVM starts ~2x faster (2 cores)
        "spark.driver.extraJavaOptions": FAST_JVM,
        "spark.executor.extraJavaOptions": FAST_JVM,
        **config.pop("spark_conf", {}),
    }
    if not config.get("spark_context_in_launcher"):
        spark_conf.setdefault("spark.executor.instances", "1")  # a Spark kernel: one executor
    return {
        "hadoop_conf_dir": str(cluster.hadoop_conf_dir),
        "yarn_endpoints": [cluster.rm_url(r) for r in cluster.rm_ids],
        "pyspark_archives": f"local:{lib / 'pyspark.zip'},local:{py4j}",
        "spark_conf": spark_conf,
        "poll_interval": 0.5,
        "launch_timeout": 150,
        **config,
    }


def spark_argv() -> list[str]:
    """A PySpark kernel as the driver's program (spark_kernel.py is shipped from scripts/)."""
    return [
        python(),
        "spark_kernel.py",
        "--connection-file",
        "{connection_file}",
        "--spark-init-mode",
        "eager",
    ]


def write_yarn_spec(
    root: Path,
    name: str,
    cluster: YarnCluster,
    *,
    spark: bool = True,
    argv: list[str] | None = None,
    interrupt_mode: str = "message",
    **config: Any,
) -> Path:
    """A YARN kernelspec under *root*: a Spark kernel, or (``spark=False``) a plain ipykernel
    whose launcher holds the SparkContext."""
    if not spark:
        config.setdefault("spark_context_in_launcher", True)
    spec: dict[str, Any] = {
        "argv": argv or (spark_argv() if spark else None),
        "interrupt_mode": interrupt_mode,
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": "kernelfleet-yarn",
                "config": provisioner_config(cluster, **config),
            }
        },
    }
    if spec["argv"] is None:
        del spec["argv"]
    path = add_kernelspec(root, name, spec)
    if spark:
        scripts = path / "scripts"
        scripts.mkdir(exist_ok=True)
        (scripts / "spark_kernel.py").write_text(Path(spark_kernel.__file__).read_text())
    return path


def live_apps(cluster: YarnCluster, kernel_id: str | None = None) -> list[dict[str, Any]]:
    """Applications not ended, of one kernel or of every kernelfleet kernel."""
    tag = f"kf-kernel-{kernel_id}" if kernel_id else "kernelfleet"
    states = ("NEW", "NEW_SAVING", "SUBMITTED", "ACCEPTED", "RUNNING")
    return cluster.apps(tags=[tag], states=states)


def kernel_processes(
    cluster: YarnCluster, kernel_id: str, kernels_only: bool = False
) -> dict[str, list[int]]:
    """Processes of a kernel (the kernel: KERNEL_ID=<id> in its environment; its launcher and
    the driver's JVM: KF_RESPONSE_KERNEL_ID=<id>), by testbed host name."""
    assert cluster.bed is not None
    needles = {f"KERNEL_ID={kernel_id}".encode()}
    if not kernels_only:
        needles.add(f"KF_RESPONSE_KERNEL_ID={kernel_id}".encode())
    out: dict[str, list[int]] = {}
    for host in cluster.hosts:
        for pid in cluster.bed.pids(host):
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes()
                stat = Path(f"/proc/{pid}/stat").read_bytes()
            except OSError:
                continue
            if needles & set(env.split(b"\0")) and b") Z " not in stat:
                out.setdefault(host.name, []).append(pid)
    return out


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)[:3000]


def gateway_config(tmp: Path, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Config of an in-process gateway for YARN kernels: a private data dir, fast liveness."""
    out: dict[str, dict[str, Any]] = {
        "Gateway": {"data_dir": str(tmp / "gwdata")},
        "KernelMonitor": {"monitor_interval": 0.5},
    }
    for name, values in sections.items():
        out.setdefault(name, {}).update(values)
    return out


async def kill_kernel(cluster: YarnCluster, kernel_id: str) -> None:
    """SIGKILL a kernel's processes on its NodeManager host, as a crash would (its launcher
    then exits, and YARN ends the application)."""
    found = await asyncio.to_thread(kernel_processes, cluster, kernel_id, kernels_only=True)
    assert found, f"no process of kernel {kernel_id} on the NodeManager hosts"
    for pids in found.values():
        for pid in pids:
            os.kill(pid, signal.SIGKILL)


async def no_apps_left(
    cluster: YarnCluster, kernel_id: str | None = None, seconds: float = 30
) -> None:
    """Wait until no live YARN application of *kernel_id* (of any kernel, without one) is left."""
    # here, not at the top: tests.conftest imports this module (an import circle)
    from tests.contract_backends.helpers import eventually

    await eventually(
        lambda: asyncio.to_thread(live_apps, cluster, kernel_id),
        lambda apps: not apps,
        f"no live application of {kernel_id or 'any kernel'}",
        seconds,
    )
