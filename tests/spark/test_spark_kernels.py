"""Spark kernels from `spec install ssh --spark --spark-master spark://…`, started through the
gateway on testbed hosts against a real standalone cluster: the application is named after the
kernel id, `spark` works, an interrupt cancels a long Spark job, shutdown leaves no application
running. Also measures POST → usable `spark` for the lazy and eager init modes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.cli.hosts import CheckApp
from kernelfleet.client import GatewayClient, result_of, stdout_of
from kernelfleet.specs.builders import SpecOptions
from kernelfleet.specs.installer import install
from tests.conftest import client_for, temp_gateway
from tests.spark.conftest import SparkCluster
from tests.specs.fleet import gateway_env_for

pytestmark = [pytest.mark.ssh, pytest.mark.slow, pytest.mark.timeout(300)]

SUM = 'spark.range(1000).selectExpr("sum(id) AS s").first()["s"]'
MARKER_OPTS = "--conf 'spark.kf.marker=a b $(touch /tmp/kf-pwned)'"
EXTRA = (
    "--conf spark.cores.max=1 --conf spark.executor.memory=512m "
    "--conf spark.ui.showConsoleProgress=false --conf spark.ui.enabled=false"
)


@pytest.fixture
async def spark_specs(
    fleet_bed: Any, spark_cluster: SparkCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Any]:
    host = fleet_bed.host(1)
    root = Path(fleet_bed.dir) / "spark-specs" / tmp_path.name  # same path on the hosts
    for mode in ("lazy", "eager"):
        install(
            SpecOptions(
                kernel_name=f"kf_spark_{mode}",
                spark=True,
                spark_master=spark_cluster.master_url,
                spark_home=str(spark_cluster.home),
                spark_init_mode=mode,
                extra_spark_opts=EXTRA,
                python=sys.executable,
                remote_hosts=(host.ip,),
                launch_timeout=90,
            ),
            root / "kernels",
        )
    async with gateway_env_for(fleet_bed, root, tmp_path, monkeypatch):
        yield host


def _check(spec: str) -> dict[str, Any]:
    out = io.StringIO()
    app = CheckApp()
    with contextlib.redirect_stdout(out):
        app.initialize([f"--spec={spec}", "--json"])
        with contextlib.suppress(SystemExit):
            app.start()
    value: dict[str, Any] = json.loads(out.getvalue())
    return value


async def _wait_for(predicate: Any, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(0.5)
    return bool(await asyncio.to_thread(predicate))


async def _time_to_spark(
    client: GatewayClient, name: str, env: dict[str, str] | None = None
) -> tuple[str, tuple[float, float, float], Any]:
    """(kernel id, seconds POST→201 / →usable `spark` / →first job result, websocket)."""
    started = time.monotonic()
    kernel = await client.start_kernel(name, env)
    created = time.monotonic() - started
    ws = await client.connect(kernel["id"])
    reply, iopub = await ws.execute("spark.sparkContext.applicationId")
    usable = time.monotonic() - started
    assert reply["status"] == "ok", reply
    assert str(result_of(iopub)).startswith("'app-")
    reply, iopub = await ws.execute(SUM)
    first_job = time.monotonic() - started
    assert reply["status"] == "ok", reply
    assert result_of(iopub) == "499500"
    return kernel["id"], (created, usable, first_job), ws


async def test_spark_kernel_on_a_host(
    spark_specs: Any,
    spark_cluster: SparkCluster,
    fleet_bed: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host = spark_specs
    # the hosts check sees spark-submit and reaches the master from the host
    report = await asyncio.to_thread(_check, "kf_spark_lazy")
    (row,) = report["hosts"]
    checks = {c["name"]: c for c in row["checks"]}
    assert row["ready"], row
    assert f"master {spark_cluster.ip}:{spark_cluster.port} reachable" in checks["spark"]["detail"]

    timings: dict[str, tuple[float, float, float]] = {}
    async with temp_gateway() as gw:
        client = client_for(gw)

        # eager: the kernel is ready once Spark is; lazy: at once, `spark` when ready
        kid, timings["eager"], ws = await _time_to_spark(client, "kf_spark_eager")
        ws.close()
        await client.shutdown_kernel(kid)
        assert await _wait_for(lambda: not spark_cluster.apps("activeapps", kid), 30)

        # the request's extra options reach spark-submit as data, never as shell code
        extra = {"KERNEL_EXTRA_SPARK_OPTS": MARKER_OPTS}
        kid, timings["lazy"], ws = await _time_to_spark(client, "kf_spark_lazy", extra)
        try:
            # the application is named after the kernel id, and it runs on the host
            (app,) = spark_cluster.apps("activeapps", kid)
            assert app["state"] == "RUNNING"
            reply, iopub = await ws.execute(
                "import socket\n"
                "print(socket.gethostname(), sc.master, spark.conf.get('spark.app.name'))"
            )
            assert stdout_of(iopub).split() == [host.name, spark_cluster.master_url, kid]
            reply, iopub = await ws.execute("print(spark.conf.get('spark.kf.marker'))")
            assert stdout_of(iopub) == "a b $(touch /tmp/kf-pwned)\n"
            assert fleet_bed.run_in(host, "test", "-e", "/tmp/kf-pwned").returncode == 1

            # interrupt stops a long Spark job (not only the Python side)
            slow = (
                "sc.parallelize(range(2), 2)"
                ".map(lambda x: __import__('time').sleep(120) or x).sum()"
            )
            running = asyncio.ensure_future(ws.execute(slow))
            await asyncio.sleep(4.0)
            started = time.monotonic()
            await client.call("POST", f"/api/kernels/{kid}/interrupt", expect=204)
            reply, _ = await asyncio.wait_for(running, 60)
            interrupted_in = time.monotonic() - started
            # KeyboardInterrupt, or the Py4J error of the call the cancellation ended
            assert reply["status"] == "error", reply
            assert interrupted_in < 30
            reply, iopub = await ws.execute(
                "import time\n"
                "for _ in range(300):\n"
                "    if not sc.statusTracker().getActiveJobsIds(): break\n"
                "    time.sleep(0.1)\n"
                "print(sc.statusTracker().getActiveJobsIds())"
            )
            assert stdout_of(iopub).strip() == "[]", reply
            reply, iopub = await ws.execute(SUM)
            assert result_of(iopub) == "499500"
        finally:
            ws.close()
            await client.shutdown_kernel(kid)
        # shutdown leaves no Spark application running, and no kernel process on the host
        assert await _wait_for(lambda: not spark_cluster.apps("activeapps", kid), 30)
        assert spark_cluster.apps("completedapps", kid)
        assert await _wait_for(lambda: not fleet_bed.processes_matching(host, kid), 15)
    with capsys.disabled():
        for mode, (created, usable, first_job) in timings.items():
            print(
                f"\n[spark {mode}] POST->201 {created:.2f} s, POST->usable spark {usable:.2f} s,"
                f" POST->first job result {first_job:.2f} s",
                end="",
            )
        print(f"\n[spark] interrupt -> cell ended {interrupted_in:.2f} s")
