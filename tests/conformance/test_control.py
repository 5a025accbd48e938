"""Control: interrupts in both ``interrupt_mode``s, and ``shutdown_request``.

Interrupt mode "signal": ``POST /api/kernels/{id}/interrupt`` makes the provisioner send SIGINT.
Mode "message": the client's ``interrupt_request`` on the control channel goes to the kernel as
it is, and the REST endpoint makes the gateway send one itself.
"""

from __future__ import annotations

import pytest

from kernelfleet.client import KernelSocket
from tests.conformance.conftest import Kernel
from tests.conformance.helpers import (
    child_of,
    of_type,
    run,
    run_ok,
    status_is,
    stream,
    wait_state,
    within,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")

SLEEPER = "import time\nprint('conformance: sleeping', flush=True)\ntime.sleep(300)"


async def start_sleeper(ws: KernelSocket) -> str:
    """Run a cell that sleeps; return its msg_id once it runs (its first output is out)."""
    msg_id = await ws.send(ws.execute_request(SLEEPER))
    async with within("the sleeping cell's first output"):
        await ws.wait_for(child_of(msg_id, "stream"))
    return msg_id


async def assert_interrupted(ws: KernelSocket, msg_id: str) -> None:
    async with within("the interrupted cell's reply"):
        reply, iopub = await ws.collect(msg_id)
    assert (reply["status"], reply["ename"]) == ("error", "KeyboardInterrupt")
    assert [m["content"]["ename"] for m in of_type(iopub, "error")] == ["KeyboardInterrupt"]
    assert stream(await run_ok(ws, "print('still here')")) == "still here\n"


async def interrupt_mode(kernel: Kernel) -> str:
    spec = await kernel.client.call("GET", f"/api/kernelspecs/{kernel.record.name}")
    return str(spec["spec"]["interrupt_mode"])


async def test_rest_interrupt_of_a_signal_mode_kernel_stops_the_running_cell(
    kernel: Kernel, ws: KernelSocket
) -> None:
    assert await interrupt_mode(kernel) == "signal"
    msg_id = await start_sleeper(ws)
    await kernel.client.call("POST", f"/api/kernels/{kernel.id}/interrupt", {}, expect=204)
    await assert_interrupted(ws, msg_id)


async def test_interrupt_request_on_control_stops_the_running_cell(
    message_kernel: Kernel,
) -> None:
    assert await interrupt_mode(message_kernel) == "message"
    ws = await message_kernel.connect()
    try:
        msg_id = await start_sleeper(ws)
        async with within("interrupt_reply"):
            reply = await ws.request("interrupt_request", {}, "control")
        assert (reply["msg_type"], reply["content"]["status"]) == ("interrupt_reply", "ok")
        await assert_interrupted(ws, msg_id)
    finally:
        ws.close()


async def test_rest_interrupt_of_a_message_mode_kernel_stops_the_running_cell(
    message_kernel: Kernel,
) -> None:
    ws = await message_kernel.connect()
    try:
        msg_id = await start_sleeper(ws)
        await message_kernel.client.call(
            "POST", f"/api/kernels/{message_kernel.id}/interrupt", {}, expect=204
        )
        await assert_interrupted(ws, msg_id)
    finally:
        ws.close()


async def test_shutdown_request_on_control_is_answered_then_the_kernel_restarts_fresh(
    fresh_kernel: Kernel, request: pytest.FixtureRequest
) -> None:
    """What the gateway does (as jupyter_server's restarter does): the kernel answers and
    exits; the gateway does not intercept the request, so it takes the exit for a crash and
    restarts the kernel in place. Clients see status 'restarting', the id stays, the
    websocket stays open, and the new process has none of the old state."""
    if fresh_kernel.backend.name == "k8s":
        from tests.contract_backends.test_lifecycle import K8S_AUTO_RESTART_BUG

        request.applymarker(K8S_AUTO_RESTART_BUG)
    ws = await fresh_kernel.connect()
    try:
        await run_ok(ws, "conformance_state = 1")
        async with within("shutdown_reply"):
            reply = await ws.request("shutdown_request", {"restart": False}, "control")
        assert reply["msg_type"] == "shutdown_reply"
        assert reply["content"] == {"status": "ok", "restart": False}
        async with within("status 'restarting' after the kernel exited"):
            await ws.wait_for(status_is("restarting"))
        model = await wait_state(fresh_kernel.client, fresh_kernel.id, "idle")
        assert model["id"] == fresh_kernel.id
        reply_content, iopub = await run(ws, "print('new process'); conformance_state")
        assert stream(iopub) == "new process\n"
        assert reply_content["ename"] == "NameError"
    finally:
        ws.close()
