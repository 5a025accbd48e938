"""A Spark kernel in YARN cluster mode against the bare limit on the same cluster, same run.

The run brings up the test suite's YARN cluster (tests/yarn/cluster.py: a ResourceManager and
two NodeManagers in network-namespace hosts; root, Java 17 and the jars of
``scripts/yarn-deps.sh`` needed) and stops it at the end.

- **bare**: ``spark-submit --master yarn --deploy-mode cluster`` of a minimal PySpark script
  that creates its SparkSession and then connects to a TCP port of the benchmark: the time from
  starting spark-submit to that connection (the driver runs user code). Same Spark settings as
  the kernel (local jars and Python zips, 512 MiB driver, one executor).
- **kernelfleet**: POST /api/kernels of a cluster-mode PySpark kernel (eager session) → the
  first ``kernel_info_reply`` on its websocket, through a gateway process.

Target: ≤ 1.1x the bare limit (issue 11). Alternated bare / gateway, n = 5 (quick: 2).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Metric, ScenarioResult, summary
from benchmarks.scenarios import Context, details_of, scenario
from benchmarks.scenarios.fleet import _env
from benchmarks.scenarios.local import _attempts, _start_all

YARN_START_TARGET = 1.10
_CLUSTER: dict[str, Any] = {}

BARE_SCRIPT = """\
import socket, sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
socket.create_connection((sys.argv[1], int(sys.argv[2]))).close()
spark.stop()
"""


def _missing() -> str | None:
    try:
        from tests.testbed import missing_requirements
        from tests.yarn.cluster import jars_dir
    except ImportError:
        return "tests/yarn/cluster.py not importable"
    why = missing_requirements()
    if why:
        return why
    jars = jars_dir()
    return None if isinstance(jars, Path) else f"no Hadoop jars: {jars} (make yarn-deps)"


def _cluster() -> Any:
    if "cluster" not in _CLUSTER:
        from tests.yarn.cluster import YarnCluster, jars_dir

        jars = jars_dir()
        assert isinstance(jars, Path), jars
        _CLUSTER["cluster"] = YarnCluster(jars=jars).start()
        atexit.register(teardown)
    return _CLUSTER["cluster"]


def teardown() -> None:
    cluster = _CLUSTER.pop("cluster", None)
    if cluster is not None:
        cluster.stop()


async def _bare_start(cluster: Any, script: Path) -> float:
    """Seconds from starting spark-submit to the driver's connection (then its app is killed)."""
    from tests.yarn.cluster import submit_argv, submit_env

    with socket.socket() as server:
        server.bind((cluster.ip, 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        argv = submit_argv(
            cluster, script, cluster.ip, str(port), name="kf-bench-bare", tags=["kf-bench-bare"]
        )
        loop = asyncio.get_running_loop()
        began = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv, env=submit_env(cluster), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            async with asyncio.timeout(180):
                conn, _ = await loop.sock_accept(server)
            took = time.perf_counter() - began
            conn.close()
        finally:
            await proc.wait()
    for app in await asyncio.to_thread(
        cluster.apps, ["kf-bench-bare"], ("NEW", "NEW_SAVING", "SUBMITTED", "ACCEPTED", "RUNNING")
    ):
        await asyncio.to_thread(cluster.kill_app, app["id"])
    return took


@scenario(
    "yarn_cold_start",
    "cluster-mode PySpark kernel: POST → kernel_info vs spark-submit → driver runs user code",
    group="yarn",
    requires=_missing,
)
async def yarn_cold_start(ctx: Context) -> ScenarioResult:
    from tests.yarn.kernels import spark_argv, write_yarn_spec

    n = ctx.n(5, 2)
    cluster = await asyncio.to_thread(_cluster)
    spec_dir = write_yarn_spec(ctx.env.jupyter_path, "yarn_spark", cluster)
    assert spec_dir.exists() and spark_argv()
    script = Path(tempfile.mkdtemp(prefix="kf-bench-yarn-")) / "bare.py"
    script.write_text(BARE_SCRIPT)
    with _env({"KF_RESPONSE_IP": cluster.ip, "KF_RESPONSE_PORT": "0"}):
        gw = await ctx.gateway("gateway-yarn")
    bare: list[float] = []
    kernel: list[float] = []
    failures: list[str] = []
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)

    async def one_bare() -> None:
        bare.append(await _attempts(lambda: _bare_start(cluster, script), failures))

    async def one_kernel() -> None:
        async def go() -> float:
            k = ctx.gateway_kernel(gw, kernel_name="yarn_spark")
            (t,) = await _start_all([k])
            await k.shutdown()
            return float(t["first_reply"])

        kernel.append(await _attempts(go, failures))

    try:
        for i in range(n):
            first, second = (one_bare, one_kernel) if i % 2 == 0 else (one_kernel, one_bare)
            await first()
            await second()
    finally:
        await ctx.release_kernels()
        await ctx.stop_gateway("gateway-yarn")
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    b, k = summary(bare), summary(kernel)
    paired = [y / x for x, y in zip(bare, kernel, strict=True)]
    return ScenarioResult(
        "yarn_cold_start",
        [
            Metric(
                "YARN cluster-mode start p50", "s", b["p50"], k["p50"], YARN_START_TARGET, "max"
            ),
            Metric(
                "YARN start, median of paired ratios",
                "x",
                None,
                statistics.median(paired),
                note="kernel_i / bare_i of back-to-back starts",
            ),
            Metric(
                "benchmark client CPU",
                "s",
                None,
                round(client_cpu, 2),
                note=f"of {sum(bare) + sum(kernel):.0f} s measured: not the bottleneck",
            ),
        ],
        {
            "bare": b,
            "kernel": k,
            "samples": details_of({"bare": bare, "kernel": kernel}),
            "failed_starts_retried": failures,
            "python": sys.executable,
            "pid": os.getpid(),
        },
    )
