"""Restarting a kernel whose host is unreachable, through the gateway's API.

The rule (design.md): a restart comes back on the kernel's own host. When that host cannot be
reached, the answer is a 503 that names the host and the cause, and the kernel stays listed and
restartable: once the host is back, a restart works. Moving the kernel to another host is an
admin's choice (``move_kernels_off_down_hosts``) and tells the user that its state was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from ssh_helpers import Specs, wait_until
from testbed import Testbed, TestHost

from kernelfleet.client import GatewayClient, stdout_of
from tests.conftest import client_for, temp_gateway

pytestmark = pytest.mark.timeout(150)

#: Fast liveness so a lost host is noticed within a few seconds.
FAST = {"KernelMonitor": {"monitor_interval": 0.5, "restart_limit": 1}}


@pytest.fixture
def host(testbed: Testbed) -> Iterator[TestHost]:
    victim = testbed.host(3)
    yield victim
    testbed.revive(victim)


async def hostname(c: GatewayClient, kernel_id: str) -> str:
    ws = await c.connect(kernel_id)
    try:
        _, iopub = await ws.execute("import socket; print(socket.gethostname())")
    finally:
        ws.close()
    return stdout_of(iopub).strip()


async def test_restart_on_a_killed_host_is_a_503_and_works_once_the_host_is_back(
    testbed: Testbed, specs: Specs, jupyter_path: Path, host: TestHost
) -> None:
    specs.write("pinned", {"remote_hosts": [h.ip for h in testbed.hosts]})
    async with temp_gateway(**FAST) as gw:
        c = client_for(gw)
        model = await c.start_kernel("pinned", env={"KERNEL_REMOTE_HOST": host.ip})
        kid = model["id"]
        ws = await c.connect(kid)
        testbed.kill_host(host)  # sshd, agent and kernel: the host is down
        assert await wait_until(lambda: gw.registry.records[kid].execution_state == "dead", 30)
        # the client hears 'restarting', never 'dead' (stock clients disable Restart on it),
        # and a cell run now gets the reason as its error instead of waiting forever
        states = []
        with contextlib.suppress(TimeoutError):
            while True:  # what reached the client so far
                msg = await asyncio.wait_for(ws.recv(), 1.5)
                if msg["msg_type"] == "status":
                    states.append(msg["content"]["execution_state"])
        assert "restarting" in states and "dead" not in states, states
        reply, iopub = await ws.execute("1 + 1")
        assert reply["status"] == "error" and host.ip in reply["evalue"]
        assert [m["content"]["ename"] for m in iopub if m["msg_type"] == "error"] == [
            "KernelUnavailable"
        ]
        ws.close()

        status, body = await c.request("POST", f"/api/kernels/{kid}/restart", {})
        assert status == 503, body
        assert host.ip in body["message"][:110] and "pinned" in body["message"][:110]
        assert "unreachable" in body["message"][:110]
        listed = await c.call("GET", "/api/kernels")
        assert [k["id"] for k in listed] == [kid]
        assert listed[0]["execution_state"] == "dead"
        # the automatic restarts gave up, but the kernel is kept for the user to restart
        await asyncio.sleep(gw.registry.monitor.dead_kernel_retention + 1)
        assert kid in gw.registry.records

        testbed.start_sshd(host)
        restarted = await c.call("POST", f"/api/kernels/{kid}/restart", {})
        assert restarted["id"] == kid and restarted["execution_state"] == "idle"
        assert await hostname(c, kid) == host.name  # the same host, not another one
        await c.shutdown_kernel(kid)
        assert not testbed.processes_matching(host, kid)


async def test_restart_with_the_host_cut_off_keeps_the_kernel_and_resumes_after(
    testbed: Testbed, specs: Specs, jupyter_path: Path, host: TestHost
) -> None:
    specs.write("cut", {"remote_hosts": [h.ip for h in testbed.hosts]})
    monitor = {**FAST["KernelMonitor"], "dead_kernel_retention": 1.0}
    async with temp_gateway(KernelMonitor=monitor) as gw:
        c = client_for(gw)
        model = await c.start_kernel("cut", env={"KERNEL_REMOTE_HOST": host.ip})
        kid = model["id"]
        testbed.set_link(host, False)
        status, body = await c.request("POST", f"/api/kernels/{kid}/restart", {})
        assert status == 503, body
        assert host.ip in body["message"][:110]
        await asyncio.sleep(2)  # longer than the dead-kernel retention
        assert kid in {k["id"] for k in await c.call("GET", "/api/kernels")}

        testbed.set_link(host, True)
        restarted = await c.call("POST", f"/api/kernels/{kid}/restart", {})
        assert restarted["execution_state"] == "idle"
        assert await hostname(c, kid) == host.name
        await c.shutdown_kernel(kid)
        # the kernel that ran while the host was cut off is gone too, nothing is orphaned
        assert await wait_until(lambda: not testbed.processes_matching(host, kid), 10)


async def test_an_admin_may_let_restarts_move_off_a_down_host_and_the_user_is_told(
    testbed: Testbed, specs: Specs, jupyter_path: Path, host: TestHost
) -> None:
    specs.write(
        "mover",
        {"remote_hosts": [h.ip for h in testbed.hosts], "move_kernels_off_down_hosts": True},
    )
    async with temp_gateway(**FAST) as gw:
        c = client_for(gw)
        # not pinned (a pinned kernel stays on its host): round-robin puts one on each host
        kids = [(await c.start_kernel("mover"))["id"] for _ in testbed.hosts]
        (kid,) = [k for k in kids if gw.registry.records[k].host == host.ip]
        ws = await c.connect(kid)
        testbed.kill_host(host)
        notice = ""
        while "state" not in notice:  # the gateway says on iopub where the kernel went
            msg = await asyncio.wait_for(ws.recv(), 60)
            if msg["msg_type"] == "stream":
                notice += msg["content"]["text"]
        assert host.ip in notice
        ws.close()
        assert await wait_until(lambda: gw.registry.records[kid].execution_state == "idle", 60)
        other = await hostname(c, kid)
        assert other != host.name and other in {h.name for h in testbed.hosts}
        for k in kids:
            await c.shutdown_kernel(k)
