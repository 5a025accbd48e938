"""Shell channel: execute, complete, inspect, history, is_complete, comm_info, kernel_info,
and the framing of each websocket protocol."""

from __future__ import annotations

import json
import uuid

import pytest
from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1

from kernelfleet.client import KernelSocket
from tests.conformance.conftest import Kernel
from tests.conformance.helpers import ECHO_TARGET, of_type, run, run_ok, stream, within

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_the_kernel_runs_where_its_backend_places_it(
    kernel: Kernel, ws: KernelSocket
) -> None:
    iopub = await run_ok(ws, "import socket; print(socket.gethostname())")
    assert stream(iopub).strip() in kernel.backend.hostnames


async def test_execute_publishes_input_stream_and_result(ws: KernelSocket) -> None:
    code = "print('hello from the kernel')\n6 * 7"
    reply, iopub = await run(ws, code)
    assert reply["status"] == "ok"
    assert [m["content"]["code"] for m in of_type(iopub, "execute_input")] == [code]
    assert stream(iopub) == "hello from the kernel\n"
    (result,) = of_type(iopub, "execute_result")
    assert result["content"]["data"]["text/plain"] == "42"
    assert result["content"]["execution_count"] == reply["execution_count"]


async def test_execute_error_carries_name_value_and_traceback(ws: KernelSocket) -> None:
    reply, iopub = await run(
        ws,
        "def conformance_fails():\n    raise ValueError('conformance boom')\nconformance_fails()",
    )
    assert (reply["status"], reply["ename"], reply["evalue"]) == (
        "error",
        "ValueError",
        "conformance boom",
    )
    (error,) = of_type(iopub, "error")
    assert error["content"]["ename"] == "ValueError"
    traceback = "\n".join(error["content"]["traceback"])
    assert "conformance_fails" in traceback and "conformance boom" in traceback


async def test_complete_offers_names_defined_in_the_kernel(ws: KernelSocket) -> None:
    await run_ok(ws, "conformance_value_for_completion = 1")
    code = "x = conformance_value_for_c"
    async with within("complete_reply"):
        reply = await ws.request("complete_request", {"code": code, "cursor_pos": len(code)})
    content = reply["content"]
    assert reply["msg_type"] == "complete_reply" and content["status"] == "ok"
    assert "conformance_value_for_completion" in content["matches"]
    assert (content["cursor_start"], content["cursor_end"]) == (4, len(code))


async def test_inspect_returns_the_documentation_of_an_object(ws: KernelSocket) -> None:
    async with within("inspect_reply"):
        reply = await ws.request(
            "inspect_request", {"code": "len", "cursor_pos": 3, "detail_level": 0}
        )
    content = reply["content"]
    assert reply["msg_type"] == "inspect_reply" and content["status"] == "ok"
    assert content["found"] is True
    assert "Return the number of items" in content["data"]["text/plain"]


async def test_inspect_of_an_unknown_name_finds_nothing(ws: KernelSocket) -> None:
    code = "conformance_no_such_name"
    async with within("inspect_reply"):
        reply = await ws.request(
            "inspect_request", {"code": code, "cursor_pos": len(code), "detail_level": 0}
        )
    assert reply["content"]["status"] == "ok" and reply["content"]["found"] is False


async def test_history_lists_the_cells_executed(ws: KernelSocket) -> None:
    code = f"conformance_history_{uuid.uuid4().hex} = 1"
    await run_ok(ws, code)
    async with within("history_reply"):
        reply = await ws.request(
            "history_request",
            {"output": False, "raw": True, "hist_access_type": "tail", "n": 20},
        )
    content = reply["content"]
    assert reply["msg_type"] == "history_reply" and content["status"] == "ok"
    assert code in [entry[2] for entry in content["history"]], content["history"]


@pytest.mark.parametrize(
    ("code", "status", "indent"),
    [
        ("1 + 1", "complete", None),
        ("for i in range(3):", "incomplete", "    "),
        ("1 +)", "invalid", None),
    ],
)
async def test_is_complete_tells_complete_incomplete_and_invalid_code(
    ws: KernelSocket, code: str, status: str, indent: str | None
) -> None:
    async with within("is_complete_reply"):
        reply = await ws.request("is_complete_request", {"code": code})
    assert reply["msg_type"] == "is_complete_reply"
    assert reply["content"]["status"] == status
    if indent is not None:
        assert reply["content"]["indent"] == indent


async def test_comm_info_lists_open_comms_of_a_target(ws: KernelSocket) -> None:
    await run_ok(ws, ECHO_TARGET)
    comm_id = uuid.uuid4().hex
    await ws.send(
        ws.make("comm_open", {"comm_id": comm_id, "target_name": "conformance_echo", "data": {}})
    )
    async with within("comm_info_reply"):
        mine = await ws.request("comm_info_request", {"target_name": "conformance_echo"})
        other = await ws.request("comm_info_request", {"target_name": "conformance_nothing"})
    assert mine["msg_type"] == "comm_info_reply" and mine["content"]["status"] == "ok"
    assert mine["content"]["comms"][comm_id] == {"target_name": "conformance_echo"}
    assert comm_id not in other["content"]["comms"]
    await ws.send(ws.make("comm_close", {"comm_id": comm_id, "data": {}}))


async def test_kernel_info_describes_the_kernel_and_its_language(ws: KernelSocket) -> None:
    async with within("kernel_info_reply"):
        reply = await ws.request("kernel_info_request", {})
    content = reply["content"]
    assert reply["msg_type"] == "kernel_info_reply" and reply["channel"] == "shell"
    assert content["status"] == "ok"
    assert content["protocol_version"].startswith("5.")
    assert content["implementation"] == "ipython"
    assert content["language_info"]["name"] == "python"
    assert content["language_info"]["file_extension"] == ".py"
    assert "debugger" in content["supported_features"]


async def test_frames_follow_the_selected_protocol(ws: KernelSocket) -> None:
    """Legacy: JSON text frames with top-level msg_id/msg_type (contract.md); v1: binary
    frames jupyter_server's own decoder reads."""
    msg_id = await ws.send(ws.make("kernel_info_request", {}))
    async with within("kernel_info_reply"):
        while True:
            raw = await ws.conn.read_message()
            assert raw is not None, "websocket closed"
            if ws.binary:
                assert isinstance(raw, bytes)
                channel, parts = deserialize_msg_from_ws_v1(raw)
                header, parent = json.loads(parts[0]), json.loads(parts[1])
            else:
                assert isinstance(raw, str), "a binary frame on the legacy protocol"
                frame = json.loads(raw)
                header, parent, channel = frame["header"], frame["parent_header"], frame["channel"]
                assert (frame["msg_id"], frame["msg_type"]) == (
                    header["msg_id"],
                    header["msg_type"],
                )
                assert frame["buffers"] == []
            if parent.get("msg_id") == msg_id and channel == "shell":
                break
    assert header["msg_type"] == "kernel_info_reply"
