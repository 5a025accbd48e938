"""Hostile websocket frames, sent to the real gateway: each is dropped, and the gateway (and the
very connection that sent it) keeps serving.

Before the frame decoders were our own, one 8-byte v1 frame declaring 2**60 parts spun the event
loop forever and a legacy binary frame declaring 0x7fffffff buffers allocated 4 GB.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from pathlib import Path
from typing import Any

import pytest
from tornado.websocket import WebSocketClosedError

from kernelfleet.client import GatewayClient, KernelSocket, stdout_of
from kernelfleet.kernels.wire import V1_PROTOCOL, KernelMessage, _dump
from tests.conftest import client_for, temp_gateway
from tests.conftest import message_header as _header

DEADLINE = 60.0  # liveness, not latency: generous on a loaded CI machine


def _v1(channel: str, parts: list[bytes]) -> bytes:
    """A v1 frame built by hand (the channel may be any bytes)."""
    offsets = [8 * (len(parts) + 3)]
    for chunk in (channel.encode("utf-8", "surrogateescape"), *parts):
        offsets.append(offsets[-1] + len(chunk))
    table = struct.pack(f"<{len(offsets) + 1}Q", len(offsets), *offsets)
    return table + channel.encode("utf-8", "surrogateescape") + b"".join(parts)


def _kernel_info_parts() -> list[bytes]:
    header = _header("kernel_info_request")
    return [_dump(header), b"{}", b"{}", b"{}"]


def _valid_v1() -> bytes:
    parts = _kernel_info_parts()
    return KernelMessage("shell", parts, json.loads(parts[0])).v1()


def _set_offset(frame: bytes, index: int, value: int) -> bytes:
    out = bytearray(frame)
    struct.pack_into("<Q", out, 8 * (index + 1), value)
    return bytes(out)


def hostile_v1_frames() -> dict[str, bytes]:
    valid = _valid_v1()
    (count,) = struct.unpack_from("<Q", valid)
    offsets = struct.unpack_from(f"<{count}Q", valid, 8)
    return {
        "count 2**60": struct.pack("<Q", 1 << 60),
        "count 2**64-1 with a body": b"\xff" * 8 + b"x" * 64,
        "zero parts": struct.pack("<Q", 0),
        "empty": b"",
        "truncated": valid[: len(valid) // 2],
        "offsets decreasing": _set_offset(valid, 2, offsets[1] - 1),
        "offset past the end": _set_offset(valid, count - 1, len(valid) + 4096),
        "offset 2**63": _set_offset(valid, 1, 1 << 63),
        "non-UTF-8 channel": _v1("\udcff\udcfe", _kernel_info_parts()),
        "unknown channel": _v1("nope", _kernel_info_parts()),
        "read-only channel": _v1("iopub", _kernel_info_parts()),
        "three parts": _v1("shell", _kernel_info_parts()[:3]),
        "header not JSON": _v1("shell", [b"{nope", b"{}", b"{}", b"{}"]),
        "content a list": _v1("shell", [*_kernel_info_parts()[:3], b"[]"]),
        "deep JSON header": _v1("shell", [b"[" * 100_000 + b"]" * 100_000, b"{}", b"{}", b"{}"]),
    }


def hostile_legacy_frames() -> dict[str, str | bytes]:
    msg = json.dumps({"header": _header("kernel_info_request"), "channel": "shell"}).encode()
    return {
        "nbufs 0x7fffffff": struct.pack("!I", 0x7FFFFFFF) + b"\0" * 8,
        "nbufs 0": struct.pack("!I", 0),
        "short": b"\x00\x00",
        "offset past the end": struct.pack("!II", 1, 1 << 30) + msg,
        "offsets decreasing": struct.pack("!IIII", 3, 16, 16 + len(msg), 15 + len(msg))
        + msg
        + b"buf",
        "first part not JSON": struct.pack("!II", 1, 8) + b"\xff\xfe",
        "deep JSON text": "[" * 100_000 + "]" * 100_000,
        "lone surrogate channel": '{"header": {"msg_type": "x"}, "channel": "\\ud800"}',
        "lone surrogate header": '{"header": {"msg_type": "\\udfff"}, "channel": "shell"}',
        "integer buffers in text": '{"header": {"msg_type": "x"}, "buffers": [2000000000]}',
        "content a string": '{"header": {"msg_type": "x"}, "content": "no"}',
        "JSON array": "[1, 2]",
    }


async def _send_all(ws: KernelSocket, frames: dict[str, str | bytes] | dict[str, bytes]) -> None:
    for frame in frames.values():
        await ws.conn.write_message(frame, binary=isinstance(frame, bytes))


async def _v1_kernel_info(ws: KernelSocket) -> dict[str, Any]:
    parts = _kernel_info_parts()
    msg_id = json.loads(parts[0])["msg_id"]
    await ws.conn.write_message(_v1("shell", parts), binary=True)
    while True:
        raw = await ws.conn.read_message()
        assert isinstance(raw, bytes), raw
        (count,) = struct.unpack_from("<Q", raw)
        offs = struct.unpack_from(f"<{count}Q", raw, 8)
        if raw[offs[0] : offs[1]] != b"shell":
            continue
        if json.loads(raw[offs[2] : offs[3]]).get("msg_id") == msg_id:
            reply: dict[str, Any] = json.loads(raw[offs[4] : offs[5]])
            return reply


async def _still_serving(client: GatewayClient, kid: str, legacy: KernelSocket) -> None:
    status, model = await client.request("GET", f"/api/kernels/{kid}")
    assert status == 200 and model["id"] == kid
    reply, iopub = await legacy.execute("print(6 * 7)")
    assert reply["status"] == "ok" and stdout_of(iopub).strip() == "42"


async def test_hostile_frames_are_dropped_and_the_gateway_keeps_serving(
    client: GatewayClient,
) -> None:
    model = await client.start_kernel()
    kid = model["id"]
    v1 = await client.connect(kid, subprotocol=V1_PROTOCOL)
    legacy = await client.connect(kid)
    assert v1.conn.selected_subprotocol == V1_PROTOCOL

    async def attack_and_check() -> None:
        await _send_all(v1, hostile_v1_frames())
        await _send_all(legacy, hostile_legacy_frames())
        # a request made while the gateway works through the frames, then after them
        await _still_serving(client, kid, legacy)
        assert (await _v1_kernel_info(v1))["status"] == "ok"
        await _still_serving(client, kid, legacy)

    await asyncio.wait_for(attack_and_check(), DEADLINE)
    v1.close()
    legacy.close()
    await client.shutdown_kernel(kid)


async def test_dropped_frames_are_logged_once_per_reason_per_connection(
    client: GatewayClient, caplog: pytest.LogCaptureFixture
) -> None:
    model = await client.start_kernel()
    legacy = await client.connect(model["id"])
    caplog.set_level(logging.WARNING, logger="kernelfleet.bridge")
    for _ in range(50):
        await legacy.conn.write_message("[1, 2]")
        await legacy.conn.write_message(struct.pack("!I", 0x7FFFFFFF), binary=True)
    await asyncio.wait_for(legacy.execute("1"), DEADLINE)  # every frame before it was handled
    dropped = [r for r in caplog.records if "dropping client frame" in r.getMessage()]
    assert len(dropped) == 2, [r.getMessage() for r in dropped]
    legacy.close()
    await client.shutdown_kernel(model["id"])


async def test_frames_over_the_size_limit_close_the_socket_only(kernelspec_dir: Path) -> None:
    async with temp_gateway(BridgeSettings={"max_message_mb": 1}) as gw:
        c = client_for(gw)
        model = await c.start_kernel()
        ws = await c.connect(model["id"])
        await ws.conn.write_message(b"\0" * (1024 * 1024 + 1), binary=True)
        assert await asyncio.wait_for(ws.conn.read_message(), DEADLINE) is None
        assert ws.conn.close_code == 1009  # "message too big"
        with pytest.raises(WebSocketClosedError):
            await ws.conn.write_message("{}")
        ws.close()
        # a frame just under the limit is read (and dropped as invalid); the gateway serves on
        ws = await c.connect(model["id"])
        await ws.conn.write_message(b"\0" * (1024 * 1024 - 64), binary=True)
        reply, _ = await asyncio.wait_for(ws.execute("1"), DEADLINE)
        assert reply["status"] == "ok"
        ws.close()
