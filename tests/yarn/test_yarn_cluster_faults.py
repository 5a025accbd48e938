"""YARN kernels when the cluster is full, the gateway dies, the active ResourceManager dies, and
when a user is impersonated: real cluster, real gateway."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.client import GatewayError, stdout_of
from kernelfleet.provisioners.yarn import YarnProvisioner
from tests.conftest import client_for, temp_gateway
from tests.contract_backends.helpers import eventually, execute_ok, within
from tests.gatewayproc import GatewayProcess
from tests.yarn.cluster import YarnCluster
from tests.yarn.kernels import (
    dump,
    gateway_config,
    kernel_processes,
    live_apps,
    no_apps_left,
    write_yarn_spec,
)

pytestmark = [pytest.mark.yarn, pytest.mark.timeout(300)]


async def test_four_kernels_run_at_once_and_a_full_queue_fails_fast_naming_itself(
    yarn_cluster: YarnCluster, yarn_env: Path, tmp_path: Path
) -> None:
    write_yarn_spec(yarn_env, "ysmall", yarn_cluster, spark=False)
    # queue 'alt' holds 30% of the cluster and 80% of that for AMs: one 1 GiB driver fits, the
    # second waits in ACCEPTED
    write_yarn_spec(
        yarn_env,
        "yalt",
        yarn_cluster,
        spark=False,
        queue="alt",
        accepted_timeout=6,
        spark_conf={"spark.driver.memory": "1g"},
    )
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        c = client_for(gw)
        kids = [
            m["id"] for m in await asyncio.gather(*(c.start_kernel("ysmall") for _ in range(4)))
        ]
        for kid in kids:
            ws = await c.connect(kid)
            try:
                _, iopub = await execute_ok(ws, f"print('{kid[:8]}')")
                assert stdout_of(iopub).strip() == kid[:8]
            finally:
                ws.close()
        assert len(await asyncio.to_thread(live_apps, yarn_cluster)) >= 4

        first = (await c.start_kernel("yalt"))["id"]
        loop = asyncio.get_running_loop()
        began = loop.time()
        status, body = await c.request("POST", "/api/kernels", {"name": "yalt"})
        waited = loop.time() - began
        assert status == 503, (status, body)
        message = body["message"]
        assert message.startswith("YARN queue 'alt' has no room"), message
        assert "ACCEPTED" in message and "capacity" in message, message
        assert waited < 60, waited  # the accepted bound, not the 150 s launch timeout
        # nothing of the refused kernel is left: only the first one runs in 'alt'
        alt = await eventually(  # the refused launch's application is killed (YARN: ~1 s)
            lambda: asyncio.to_thread(
                lambda: [a for a in live_apps(yarn_cluster) if a["queue"] == "root.alt"]
            ),
            lambda apps: len(apps) == 1,
            "only the first kernel's application left in 'alt'",
            20,
        )
        assert first in alt[0]["applicationTags"], dump(alt)

        for kid in [*kids, first]:
            await c.shutdown_kernel(kid)
    await no_apps_left(yarn_cluster)


async def test_a_killed_gateway_leaves_kernels_the_next_one_reattaches_by_application_id(
    yarn_cluster: YarnCluster, yarn_env: Path, tmp_path: Path
) -> None:
    write_yarn_spec(yarn_env, "yre", yarn_cluster, spark=False)
    env = {
        "JUPYTER_PATH": str(yarn_env),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "KF_DATA_DIR": str(tmp_path / "gwdata"),
        "KF_CONFIG_DIR": str(tmp_path / "cfg"),
        "KF_IP": "127.0.0.1",
        "KF_RESPONSE_IP": yarn_cluster.ip,
        "KF_RESPONSE_PORT": "0",
        "KF_MONITOR_INTERVAL": "0.5",
    }
    first = GatewayProcess(env)
    try:
        kids = [
            m["id"]
            for m in await asyncio.gather(*(first.client.start_kernel("yre") for _ in range(3)))
        ]
        for kid in kids:
            ws = await first.client.connect(kid)
            try:
                await execute_ok(ws, f"state = '{kid}'")
            finally:
                ws.close()
        apps = {
            kid: (await asyncio.to_thread(live_apps, yarn_cluster, kid))[0]["id"] for kid in kids
        }
        # a fourth launch is cut by the kill once its application exists
        launch = asyncio.ensure_future(first.client.start_kernel("yre"))
        await eventually(
            lambda: asyncio.to_thread(live_apps, yarn_cluster),
            lambda live: len(live) >= 4,
            "the fourth application submitted",
            60,
        )
        first.kill()
        with pytest.raises((GatewayError, OSError)):
            await launch
    finally:
        first.kill()

    second = GatewayProcess(env)
    try:
        listed = {k["id"] for k in await second.client.call("GET", "/api/kernels")}
        assert listed == set(kids), listed
        for kid in kids:
            ws = await second.client.connect(kid)
            try:
                _, iopub = await execute_ok(ws, "print(state)")
            finally:
                ws.close()
            assert stdout_of(iopub).strip() == kid  # the same kernel, its state kept
            assert (await asyncio.to_thread(live_apps, yarn_cluster, kid))[0]["id"] == apps[kid]
        # the cut launch's application was stopped by the second gateway
        await eventually(
            lambda: asyncio.to_thread(live_apps, yarn_cluster),
            lambda live: {a["id"] for a in live} == set(apps.values()),
            "only the three kernels' applications live",
            60,
        )
        for kid in kids:
            await second.client.shutdown_kernel(kid)
    finally:
        second.stop()
    await no_apps_left(yarn_cluster)


async def test_kernels_survive_the_active_resource_managers_death_and_stop_through_the_new_one(
    yarn_cluster: YarnCluster, yarn_env: Path, tmp_path: Path
) -> None:
    if not yarn_cluster.ha:
        pytest.skip("the session cluster has one ResourceManager")
    write_yarn_spec(yarn_env, "yha", yarn_cluster, spark=False)
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel("yha"))["id"]
        prov = gw.registry.records[kid].manager.provisioner  # type: ignore[union-attr]
        assert isinstance(prov, YarnProvisioner)
        old = await asyncio.to_thread(yarn_cluster.active_rm)
        assert old is not None
        await asyncio.to_thread(yarn_cluster.kill_rm, old)
        try:
            ws = await c.connect(kid)
            try:
                await execute_ok(ws, "x = 1")
                new = await eventually(
                    lambda: asyncio.to_thread(yarn_cluster.active_rm),
                    lambda rm: rm not in (None, old),
                    "a new active ResourceManager",
                    60,
                )
                # the gateway follows it: its watch sees the app RUNNING through the new RM
                rest = prov.yarn.rest
                await eventually(
                    lambda: asyncio.sleep(0.2, rest.active),
                    lambda url: url == yarn_cluster.rm_url(new),
                    "the gateway on the new active RM",
                    60,
                )
                assert prov.watch is not None and prov.watch.alive
                _, iopub = await execute_ok(ws, "print(x + 1)")
                assert stdout_of(iopub) == "2\n"
            finally:
                ws.close()
            await c.shutdown_kernel(kid)
            await no_apps_left(yarn_cluster, kid, 60)
        finally:
            await asyncio.to_thread(yarn_cluster.start_rm, old)


async def test_an_impersonated_kernels_application_belongs_to_the_user_and_yarn_is_refused(
    yarn_cluster: YarnCluster, yarn_env: Path, tmp_path: Path
) -> None:
    write_yarn_spec(yarn_env, "yimp", yarn_cluster, spark=False, impersonation_enabled=True)
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        c = client_for(gw)
        status, body = await c.request(
            "POST", "/api/kernels", {"name": "yimp", "env": {"KERNEL_USERNAME": "yarn"}}
        )
        assert status == 403 and "privileged user 'yarn'" in body["message"], body
        status, body = await c.request(
            "POST", "/api/kernels", {"name": "yimp", "env": {"KERNEL_USERNAME": "a;b"}}
        )
        assert status == 400, body
        kid = (await c.start_kernel("yimp", env={"KERNEL_USERNAME": "alice"}))["id"]
        app = (await asyncio.to_thread(live_apps, yarn_cluster, kid))[0]
        assert app["user"] == "alice", dump(app)
        await c.shutdown_kernel(kid)
    await no_apps_left(yarn_cluster)


async def test_a_kernel_killed_on_its_node_is_seen_dead_and_restarted_in_a_new_application(
    yarn_cluster: YarnCluster, yarn_env: Path, tmp_path: Path
) -> None:
    write_yarn_spec(yarn_env, "ykill", yarn_cluster, spark=False)
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel("ykill"))["id"]
        prov = gw.registry.records[kid].manager.provisioner  # type: ignore[union-attr]
        assert isinstance(prov, YarnProvisioner)
        first_app = prov.app_id
        procs = await asyncio.to_thread(kernel_processes, yarn_cluster, kid)
        kernel_pid = min(p for pids in procs.values() for p in pids if _is_kernel(p))
        os.kill(kernel_pid, signal.SIGKILL)
        async with within("the monitor restarting the dead kernel", 120):
            while prov.app_id in (first_app, None) or gw.registry.records[kid].execution_state in (
                "dead",
                "starting",
                "restarting",
            ):
                await asyncio.sleep(0.5)
        ws = await c.connect(kid)
        try:
            await execute_ok(ws, "1 + 1")
        finally:
            ws.close()
        await c.shutdown_kernel(kid)
    await no_apps_left(yarn_cluster)


def _is_kernel(pid: int) -> bool:
    """The kernel itself (ipykernel_launcher), not its launcher or the driver's JVM."""
    try:
        cmdline: Any = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"ipykernel_launcher" in cmdline
