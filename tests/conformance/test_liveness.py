"""Liveness: what a client sees when a kernel's process dies behind the gateway's back.

Clients cannot reach the heartbeat channel over a websocket; the gateway watches its kernels
(``kernels/liveness.py``: each provisioner is polled every ``monitor_interval``) and tells the
connected clients. By default a kernel that died is restarted in place, up to ``restart_limit``
times in a row (status ``restarting``, same id, same websocket). With restarts off it is
reported ``dead`` (status message and model), kept for ``dead_kernel_retention`` seconds, then
removed: its websockets close and ``GET /api/kernels/{id}`` answers 404.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kernelfleet.kernels.liveness import KernelMonitor
from tests.conformance.backends import Backend
from tests.conformance.conftest import Kernel
from tests.conformance.helpers import (
    run,
    run_ok,
    status_is,
    stream,
    wait_gone,
    wait_state,
    within,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")


@pytest.fixture
def no_restarts(backend: Backend) -> Iterator[KernelMonitor]:
    """The backend's gateway with automatic restarts off and a short retention of the dead."""
    monitor = backend.gateway.registry.monitor
    saved = monitor.restart_dead_kernels, monitor.dead_kernel_retention
    monitor.restart_dead_kernels, monitor.dead_kernel_retention = False, 2.0
    yield monitor
    monitor.restart_dead_kernels, monitor.dead_kernel_retention = saved


async def test_a_killed_kernel_is_restarted_in_place_and_clients_are_told(
    backend: Backend, fresh_kernel: Kernel
) -> None:
    ws = await fresh_kernel.connect()
    try:
        await run_ok(ws, "conformance_state = 1")
        await backend.kill(fresh_kernel.record)
        async with within("status 'restarting' after the kill"):
            restarting = await ws.wait_for(status_is("restarting"))
        assert restarting["channel"] == "iopub"
        model = await wait_state(fresh_kernel.client, fresh_kernel.id, "idle")
        assert model["id"] == fresh_kernel.id
        assert fresh_kernel.record.restart_count == 1
        reply, iopub = await run(ws, "print('new process'); conformance_state")
        assert stream(iopub) == "new process\n"
        assert reply["ename"] == "NameError"  # a new process, not the old one resumed
    finally:
        ws.close()


async def test_a_killed_kernel_is_reported_dead_then_removed_when_restarts_are_off(
    backend: Backend, fresh_kernel: Kernel, no_restarts: KernelMonitor
) -> None:
    ws = await fresh_kernel.connect()
    try:
        await run_ok(ws, "1")
        await backend.kill(fresh_kernel.record)
        async with within("status 'dead' after the kill"):
            dead = await ws.wait_for(status_is("dead"))
        assert dead["channel"] == "iopub"
        status, model = await fresh_kernel.client.request("GET", f"/api/kernels/{fresh_kernel.id}")
        assert status == 200 and model["execution_state"] == "dead"
        assert "died" in model.get("reason", ""), model
        async with within("the websocket closed when the dead kernel was removed"):
            while await ws.conn.read_message() is not None:
                pass
        assert ws.conn.close_code == 1000
        await wait_gone(fresh_kernel.client, fresh_kernel.id)
    finally:
        ws.close()
