"""The websocket protocols: v1 subprotocol (buffers kept), legacy with buffers (stripped or
binary by setting), legacy binary frames from the client."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_binary_message,
    serialize_msg_to_ws_v1,
)

from kernelfleet.client import GatewayClient
from kernelfleet.kernels.wire import V1_PROTOCOL
from tests.conftest import client_for, temp_gateway
from tests.conftest import message_header as _header

# A comm target in the kernel that echoes every message back with its buffers reversed.
ECHO_TARGET = """
def _echo(comm, open_msg):
    @comm.on_msg
    def _on(msg):
        back = [bytes(b)[::-1] for b in msg["buffers"]]
        comm.send({"echo": msg["content"]["data"]}, buffers=back)
get_ipython().kernel.comm_manager.register_target("echo", _echo)
"""


async def test_v1_subprotocol_round_trips_binary_buffers(client: GatewayClient) -> None:
    model = await client.start_kernel()
    ws = await client.connect(model["id"])
    await ws.execute(ECHO_TARGET)
    ws.close()
    v1 = await client.connect(model["id"], subprotocol=V1_PROTOCOL)
    assert v1.conn.selected_subprotocol == V1_PROTOCOL
    comm_id = uuid.uuid4().hex
    open_parts = [
        _header("comm_open"),
        {},
        {},
        {"comm_id": comm_id, "target_name": "echo", "data": {}},
    ]
    await v1.conn.write_message(
        serialize_msg_to_ws_v1([json.dumps(p).encode() for p in open_parts], "shell"), binary=True
    )
    msg_parts = [_header("comm_msg"), {}, {}, {"comm_id": comm_id, "data": {"n": 1}}]
    await v1.conn.write_message(
        serialize_msg_to_ws_v1(
            [*(json.dumps(p).encode() for p in msg_parts), b"\x00\x01\x02"], "shell"
        ),
        binary=True,
    )
    while True:
        raw = await v1.conn.read_message()
        assert isinstance(raw, bytes)
        channel, parts = deserialize_msg_from_ws_v1(raw)
        header = json.loads(parts[0])
        if channel == "iopub" and header["msg_type"] == "comm_msg":
            break
    assert json.loads(parts[3])["data"] == {"echo": {"n": 1}}
    assert bytes(parts[4]) == b"\x02\x01\x00"
    v1.close()
    await client.shutdown_kernel(model["id"])


async def _legacy_echo(client: GatewayClient) -> str | bytes:
    model = await client.start_kernel()
    ws = await client.connect(model["id"])
    await ws.execute(ECHO_TARGET)
    comm_id = uuid.uuid4().hex
    await ws.send(ws.make("comm_open", {"comm_id": comm_id, "target_name": "echo", "data": {}}))
    # a legacy *binary* frame from the client (a message with buffers)
    msg = ws.make("comm_msg", {"comm_id": comm_id, "data": {"n": 2}})
    msg["buffers"] = [b"abc"]
    await ws.conn.write_message(serialize_binary_message(msg), binary=True)
    while True:
        raw = await ws.conn.read_message()
        assert raw is not None
        decoded = json.loads(raw) if isinstance(raw, str) else deserialize_binary_message(raw)
        if decoded["msg_type"] != "comm_msg":
            continue
        ws.close()
        await client.shutdown_kernel(model["id"])
        return raw


async def test_legacy_clients_get_buffers_stripped_by_default(client: GatewayClient) -> None:
    raw = await _legacy_echo(client)
    assert isinstance(raw, str), "a binary frame kills jupyter_server's gateway reader"
    msg = json.loads(raw)
    assert msg["msg_type"] == "comm_msg" and msg["buffers"] == []
    assert msg["content"]["data"] == {"echo": {"n": 2}}


async def test_legacy_binary_mode_sends_buffers_as_kernel_gateway_does(
    kernelspec_dir: Path,
) -> None:
    async with temp_gateway(BridgeSettings={"legacy_buffers": "binary"}) as gw:
        raw = await _legacy_echo(client_for(gw))
        assert isinstance(raw, bytes)
        msg = deserialize_binary_message(raw)
        assert msg["msg_type"] == "comm_msg"
        assert [bytes(b) for b in msg["buffers"]] == [b"cba"]


async def test_one_huge_output_message_does_not_cut_off_a_reading_client(
    kernelspec_dir: Path,
) -> None:
    async with temp_gateway(BridgeSettings={"max_pending_mb": 1}) as gw:
        c = client_for(gw)
        model = await c.start_kernel()
        ws = await c.connect(model["id"])
        reply, iopub = await ws.execute("import sys; sys.stdout.write('x' * (8 << 20))")
        assert reply["status"] == "ok"
        assert sum(len(m["content"]["text"]) for m in iopub if m["msg_type"] == "stream") == (
            8 << 20
        )
        ws.close()
