"""IOPub: status around every request, streams, rich display and its updates, clear_output,
and comms both ways, with binary buffers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kernelfleet.client import KernelSocket
from tests.conformance.helpers import (
    ECHO_TARGET,
    Message,
    child_of,
    of_type,
    run_ok,
    stream,
    within,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")

REQUESTS: dict[str, dict[str, Any]] = {
    "execute_request": {},  # filled in by the socket (every field)
    "kernel_info_request": {},
    "complete_request": {"code": "pri", "cursor_pos": 3},
    "inspect_request": {"code": "print", "cursor_pos": 5, "detail_level": 0},
    "is_complete_request": {"code": "1 +"},
    "history_request": {"output": False, "raw": True, "hist_access_type": "tail", "n": 1},
    "comm_info_request": {},
}


@pytest.mark.parametrize("msg_type", list(REQUESTS))
async def test_status_is_busy_then_idle_around_each_request(
    ws: KernelSocket, msg_type: str
) -> None:
    if msg_type == "execute_request":
        msg = ws.execute_request("1 + 1")
    else:
        msg = ws.make(msg_type, REQUESTS[msg_type])
    msg_id = await ws.send(msg)
    states: list[str] = []
    async with within(f"reply and idle status of {msg_type}"):
        reply = await ws.wait_for(child_of(msg_id, channel="shell"))
        while "idle" not in states:
            status = await ws.wait_for(child_of(msg_id, "status", "iopub"))
            states.append(status["content"]["execution_state"])
    assert reply["msg_type"] == msg_type.replace("_request", "_reply")
    assert states == ["busy", "idle"]


async def test_stdout_and_stderr_arrive_as_separate_streams(ws: KernelSocket) -> None:
    iopub = await run_ok(
        ws, "import sys\nprint('to stdout', flush=True)\nprint('to stderr', file=sys.stderr)"
    )
    assert stream(iopub, "stdout") == "to stdout\n"
    assert stream(iopub, "stderr") == "to stderr\n"


async def test_display_data_carries_every_mime_type(ws: KernelSocket) -> None:
    iopub = await run_ok(
        ws,
        "from IPython.display import display\n"
        "display({'text/plain': 'plain', 'text/html': '<b>bold</b>'}, raw=True)",
    )
    (shown,) = of_type(iopub, "display_data")
    assert shown["content"]["data"] == {"text/plain": "plain", "text/html": "<b>bold</b>"}
    assert isinstance(shown["content"]["metadata"], dict)


async def test_a_display_is_updated_through_its_display_id(ws: KernelSocket) -> None:
    display_id = f"conformance-{uuid.uuid4().hex[:8]}"
    first = await run_ok(
        ws,
        "from IPython.display import display\n"
        f"conformance_handle = display('first', display_id={display_id!r})",
    )
    (shown,) = of_type(first, "display_data")
    assert shown["content"]["data"]["text/plain"] == "'first'"
    assert shown["content"]["transient"] == {"display_id": display_id}
    second = await run_ok(ws, "conformance_handle.update('second')")
    (update,) = of_type(second, "update_display_data")
    assert update["content"]["data"]["text/plain"] == "'second'"
    assert update["content"]["transient"] == {"display_id": display_id}


async def test_clear_output_follows_the_output_it_clears(ws: KernelSocket) -> None:
    iopub = await run_ok(
        ws,
        "from IPython.display import clear_output\n"
        "print('soon gone', flush=True)\n"
        "clear_output(wait=True)",
    )
    kinds = [m["msg_type"] for m in iopub if m["msg_type"] in ("stream", "clear_output")]
    assert kinds == ["stream", "clear_output"]
    assert of_type(iopub, "clear_output")[0]["content"] == {"wait": True}


async def _open_echo_comm(ws: KernelSocket) -> str:
    await run_ok(ws, ECHO_TARGET)
    comm_id = uuid.uuid4().hex
    open_id = await ws.send(
        ws.make(
            "comm_open",
            {"comm_id": comm_id, "target_name": "conformance_echo", "data": {"hi": 1}},
        )
    )
    async with within("the comm's greeting"):
        greeting = await ws.wait_for(child_of(open_id, "comm_msg", "iopub"))
    assert greeting["content"] == {"comm_id": comm_id, "data": {"opened": {"hi": 1}}}
    return comm_id


async def _comm_msg(ws: KernelSocket, comm_id: str, data: Any, buffers: list[bytes]) -> Message:
    msg_id = await ws.send(ws.make("comm_msg", {"comm_id": comm_id, "data": data}, buffers=buffers))
    async with within("the comm's echo"):
        return await ws.wait_for(child_of(msg_id, "comm_msg", "iopub"))


async def test_a_comm_opened_by_the_client_exchanges_messages_and_closes(
    ws: KernelSocket,
) -> None:
    comm_id = await _open_echo_comm(ws)
    echo = await _comm_msg(ws, comm_id, {"n": 1}, [])
    assert echo["content"]["comm_id"] == comm_id
    assert echo["content"]["data"] == {"echo": {"n": 1}, "received": []}
    await ws.send(ws.make("comm_close", {"comm_id": comm_id, "data": {}}))
    iopub = await run_ok(ws, f"print({comm_id!r} in conformance_closed)")
    assert stream(iopub) == "True\n"
    async with within("comm_info_reply"):
        info = await ws.request("comm_info_request", {})
    assert comm_id not in info["content"]["comms"]


async def test_comm_buffers_reach_the_kernel_and_come_back_as_the_protocol_allows(
    ws: KernelSocket,
) -> None:
    """Client to kernel, buffers arrive on both protocols (legacy: a binary frame). Kernel to
    client: v1 keeps them; legacy strips them by default (README: ``KF_LEGACY_BUFFERS=strip``,
    since jupyter_server's gateway client stops reading after a binary frame)."""
    comm_id = await _open_echo_comm(ws)
    echo = await _comm_msg(ws, comm_id, {"n": 2}, [b"\x00\x01\x02", b"conformance"])
    assert echo["content"]["data"] == {
        "echo": {"n": 2},
        "received": ["000102", b"conformance".hex()],
    }
    if ws.binary:
        assert echo["buffers"] == [b"\x02\x01\x00", b"ecnamrofnoc"]
    else:
        assert echo["buffers"] == []
    await ws.send(ws.make("comm_close", {"comm_id": comm_id, "data": {}}))


async def test_a_comm_opened_by_the_kernel_reaches_the_client(ws: KernelSocket) -> None:
    iopub = await run_ok(
        ws,
        "from comm import create_comm\n"
        "conformance_comm = create_comm(target_name='conformance_client', data={'hello': 1})\n"
        "conformance_comm.send({'n': 2}, buffers=[b'xyz'])\n"
        "conformance_comm.close({'bye': 3})",
    )
    (opened,) = of_type(iopub, "comm_open")
    (sent,) = of_type(iopub, "comm_msg")
    (closed,) = of_type(iopub, "comm_close")
    comm_id = opened["content"]["comm_id"]
    assert opened["content"]["target_name"] == "conformance_client"
    assert opened["content"]["data"] == {"hello": 1}
    assert sent["content"] == {"comm_id": comm_id, "data": {"n": 2}}
    assert sent["buffers"] == ([b"xyz"] if ws.binary else [])
    assert closed["content"] == {"comm_id": comm_id, "data": {"bye": 3}}
