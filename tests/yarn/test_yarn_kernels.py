"""Spark kernels in YARN cluster mode, through a real in-process gateway and a real cluster: the
driver (the kernel) runs in a container on a NodeManager host, the gateway only watches it."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from kernelfleet.client import result_of, stdout_of
from kernelfleet.provisioners.yarn import YarnProvisioner
from kernelfleet.provisioners.yarn_backend import YarnBackend
from tests.conftest import client_for, temp_gateway
from tests.contract_backends.helpers import eventually, execute_ok, within
from tests.yarn.cluster import YarnCluster
from tests.yarn.kernels import dump, gateway_config, kernel_processes, live_apps, write_yarn_spec

pytestmark = [pytest.mark.yarn, pytest.mark.timeout(300)]


async def test_a_pyspark_kernel_runs_its_driver_on_a_node_and_leaves_nothing(
    yarn_cluster: YarnCluster, yarn_env: Path, tmp_path: Path
) -> None:
    write_yarn_spec(yarn_env, "yspark", yarn_cluster)
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        c = client_for(gw)
        model = await c.start_kernel("yspark")
        kid = model["id"]
        record = gw.registry.records[kid]
        prov = record.manager.provisioner if record.manager else None
        assert isinstance(prov, YarnProvisioner)
        app_id = prov.app_id
        assert app_id, prov.checkpoint
        # the application carries the kernel id; the driver runs on a NodeManager host
        app = yarn_cluster.app(app_id)
        assert f"kf-kernel-{kid}" in app["applicationTags"].split(","), dump(app)
        assert app["name"] == kid and app["state"] == "RUNNING"
        hosts = {h.ip for h in yarn_cluster.hosts}
        assert record.host in hosts and app["amHostHttpAddress"].split(":")[0] == record.host
        assert kernel_processes(yarn_cluster, kid), "no kernel process on any NM host"
        # the kernel model names the application and its Spark UI
        got = await c.call("GET", f"/api/kernels/{kid}")
        assert got["yarn"]["application_id"] == app_id, got
        assert app_id in got["yarn"]["tracking_url"], got

        ws = await c.connect(kid)
        try:
            _, iopub = await execute_ok(ws, "spark.range(10**6).groupBy().sum().collect()[0][0]")
            assert result_of(iopub) == str(sum(range(10**6))), iopub
            _, iopub = await execute_ok(ws, "import socket; print(socket.gethostname())")
            assert stdout_of(iopub).strip() != socket.gethostname()
            # an interrupt cancels a running Spark job
            cell = asyncio.ensure_future(
                ws.execute(
                    "import time\nprint('job', flush=True)\n"
                    "sc.parallelize(range(4), 4).map(lambda x: time.sleep(60)).count()"
                )
            )
            await asyncio.sleep(6)
            await c.call("POST", f"/api/kernels/{kid}/interrupt", {}, expect=204)
            async with within("the interrupted Spark job", 45):
                reply, _ = await cell
            assert reply["status"] == "error", reply
            _, iopub = await execute_ok(ws, "spark.range(10).count()")
            assert result_of(iopub) == "10"
        finally:
            ws.close()

        status, logs = await c.request("GET", f"/api/kernels/{kid}/logs")
        assert status == 200 and "listens on" in str(logs), str(logs)[-2000:]

        # restart: a new application, the kernel's state gone
        await c.call("POST", f"/api/kernels/{kid}/restart", {})
        new_app = prov.app_id
        assert new_app and new_app != app_id
        assert yarn_cluster.app(app_id)["state"] in ("FINISHED", "KILLED", "FAILED")
        ws = await c.connect(kid)
        try:
            _, iopub = await execute_ok(ws, "spark.range(5).count()")
            assert result_of(iopub) == "5"
        finally:
            ws.close()

        await c.shutdown_kernel(kid)
        await eventually(
            lambda: asyncio.to_thread(live_apps, yarn_cluster, kid),
            lambda apps: not apps,
            "no application of the kernel left",
            30,
        )
        await eventually(
            lambda: asyncio.to_thread(kernel_processes, yarn_cluster, kid),
            lambda procs: not procs,
            "no kernel process left on any host",
            30,
        )


async def test_the_backend_watches_every_kernel_with_one_query_per_tick(
    yarn_cluster: YarnCluster, yarn_env: Path, tmp_path: Path
) -> None:
    write_yarn_spec(yarn_env, "yplain", yarn_cluster, spark=False)
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        c = client_for(gw)
        kids = [
            m["id"] for m in await asyncio.gather(*(c.start_kernel("yplain") for _ in range(2)))
        ]
        provs = [gw.registry.records[k].manager.provisioner for k in kids]  # type: ignore[union-attr]
        backend = provs[0].backend  # type: ignore[union-attr]
        assert isinstance(backend, YarnBackend) and provs[1].backend is backend  # type: ignore[union-attr]
        before = backend.queries
        await asyncio.sleep(3)
        ticks = backend.queries - before
        assert 1 <= ticks <= 8, ticks  # ~one per 0.5 s for both kernels, not one per kernel
        for kid in kids:
            await c.shutdown_kernel(kid)
        assert not await asyncio.to_thread(live_apps, yarn_cluster, kids[0])
