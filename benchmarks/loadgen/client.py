"""One load client: a kernel websocket that runs execute round trips and verifies every message.

A :class:`LoadClient` opens ``/api/kernels/{id}/channels?session_id=<its own>`` with the token
header (legacy JSON frames, or the ``v1.kernel.websocket.jupyter.org`` binary protocol), proves
the channel with a ``kernel_info_request``, then loops: send an ``execute_request`` printing its
tagged lines, read until the ``execute_reply`` and the ``idle`` of that request arrived, again.
Every message read goes through its :class:`~benchmarks.loadgen.verify.ClientVerifier`.

Reconnect mode (failover tests): when the websocket closes while the client runs, it reconnects
to the same URL with the same ``session_id`` (backoff 50 ms doubling to 1 s, until
``reconnect_deadline``), records drop → websocket open and drop → first message received, waits
``outstanding_timeout`` for the request that was outstanding, and carries on. Without it a drop
ends the client (its outstanding request then counts as lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from benchmarks.loadgen.verify import ClientVerifier, Request

V1 = "v1.kernel.websocket.jupyter.org"


@dataclass
class ClientSettings:
    """How every client of a run behaves (part of the worker's JSON configuration)."""

    url: str  # the server's base URL, http(s)://host:port/base/
    token: str = ""
    lines: int = 2  # output lines per execute request
    protocol: str = ""  # "" (legacy JSON) or V1
    reconnect: bool = False
    reconnect_deadline: float = 30.0  # seconds after a drop before the client gives up
    outstanding_timeout: float = 10.0  # after a reconnect, for the request outstanding at the drop
    request_timeout: float = 60.0  # a round trip given up on after this long
    connect_timeout: float = 60.0
    final_grace: float = 1.0  # at the end, for output still missing from completed round trips


class ClientStopped(Exception):
    """The websocket closed and could not (or may not) be reopened."""


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Codec:
    """Frames out (built from a template: cheap) and messages in, for one protocol."""

    def __init__(self, session_id: str, protocol: str) -> None:
        self.session_id = session_id
        self.v1 = protocol == V1

    def request(self, msg_id: str, msg_type: str, content: dict[str, Any]) -> str | bytes:
        header = (
            f'{{"msg_id":"{msg_id}","msg_type":"{msg_type}","session":"{self.session_id}",'
            f'"username":"loadgen","date":"{_now_text()}","version":"5.3"}}'
        )
        body = json.dumps(content)
        if self.v1:
            parts = [header.encode(), b"{}", b"{}", body.encode()]
            return bytes(serialize_msg_to_ws_v1(parts, "shell"))  # type: ignore[no-untyped-call]
        return (
            f'{{"header":{header},"parent_header":{{}},"metadata":{{}},"content":{body},'
            f'"buffers":[],"channel":"shell"}}'
        )

    def decode(self, raw: str | bytes) -> dict[str, Any]:
        if isinstance(raw, str):
            msg = json.loads(raw)
            return msg if isinstance(msg, dict) else {}
        if self.v1:
            channel, parts = deserialize_msg_from_ws_v1(raw)  # type: ignore[no-untyped-call]
            names = ("header", "parent_header", "metadata", "content")
            out: dict[str, Any] = {k: json.loads(p) for k, p in zip(names, parts, strict=False)}
            out["channel"] = channel
            return out
        # legacy binary: a message with buffers
        return dict(deserialize_binary_message(raw))  # type: ignore[no-untyped-call]


def execute_content(code: str) -> dict[str, Any]:
    return {
        "code": code,
        "silent": False,
        "store_history": False,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": False,
    }


class LoadClient:
    """Client *index* on kernel *kernel_id* (see the module docstring)."""

    def __init__(self, index: int, kernel_id: str, settings: ClientSettings) -> None:
        self.index = index
        self.kernel_id = kernel_id
        self.s = settings
        self.session_id = uuid.uuid4().hex
        self.codec = Codec(self.session_id, settings.protocol)
        self.verifier = ClientVerifier(index, settings.lines)
        base = settings.url.rstrip("/") + "/"
        if base.startswith("http"):
            base = "ws" + base[4:]
        self.ws_url = f"{base}api/kernels/{kernel_id}/channels?session_id={self.session_id}"
        self.conn: WebSocketClientConnection | None = None
        self.closing = False
        self.latencies = array("d")  # seconds, round trips sent and completed in the window
        self.in_window = 0  # round trips completed in the window
        self.drops = 0
        self.reconnects = 0
        self.reconnect_failures = 0
        self.reconnect_seconds: list[float] = []  # drop → websocket open again
        self.gaps: list[float] = []  # drop → first message received after it
        self.silent_reconnects = 0  # reconnected, but no message came before the end
        self._drop_at: float | None = None
        self.stopped: str | None = None  # why the client stopped early

    async def _open(self, limit: float) -> WebSocketClientConnection:
        req = HTTPRequest(
            self.ws_url,
            headers={"Authorization": f"token {self.s.token}"},
            connect_timeout=limit,
            request_timeout=limit,
        )
        return await websocket_connect(
            req,
            max_message_size=1 << 30,
            ping_interval=None,
            subprotocols=[V1] if self.codec.v1 else None,
        )

    async def connect(self) -> None:
        """Open the websocket and complete one kernel_info round trip."""
        self.conn = await self._open(self.s.connect_timeout)
        req = self.verifier.new_kernel_info(time.monotonic())
        frame = self.codec.request(req.msg_id, "kernel_info_request", {})
        if not await self._round_trip(req, frame, self.s.connect_timeout):
            raise TimeoutError(f"client {self.index}: no kernel_info_reply")

    async def execute(self) -> Request:
        """One execute round trip; the request (``done_at`` None when given up on)."""
        req, code = self.verifier.new_execute(time.monotonic())
        frame = self.codec.request(req.msg_id, "execute_request", execute_content(code))
        await self._round_trip(req, frame, self.s.request_timeout)
        return req

    async def run(self, start: float, end: float) -> None:
        """Round trips until *end* (monotonic); those sent from *start* on are measured."""
        try:
            while time.monotonic() < end:
                req = await self.execute()
                if req.done_at is not None and req.sent >= start and req.done_at <= end:
                    self.latencies.append(req.done_at - req.sent)
                    self.in_window += 1
            await self._settle()
        except ClientStopped as exc:
            self.stopped = str(exc)

    async def _settle(self) -> None:
        """Read a little longer while a completed round trip still misses output."""
        deadline = time.monotonic() + self.s.final_grace
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                while any(r.done_at is not None for r in self.verifier.pending.values()):
                    raw = await self._read()
                    if raw is None:
                        return
                    self._handle(raw)

    async def _send(self, frame: str | bytes) -> None:
        while True:
            assert self.conn is not None
            try:
                await self.conn.write_message(frame, binary=isinstance(frame, bytes))
                return
            except WebSocketClosedError:  # never sent: send it again once reconnected
                await self._reconnect()

    async def _read(self) -> str | bytes | None:
        """The next frame, or None when the websocket closed."""
        assert self.conn is not None
        return await self.conn.read_message()

    def _handle(self, raw: str | bytes) -> None:
        now = time.monotonic()
        if self._drop_at is not None:
            self.gaps.append(now - self._drop_at)
            self._drop_at = None
        self.verifier.observe(self.codec.decode(raw), now)

    async def _round_trip(self, req: Request, frame: str | bytes, limit: float) -> bool:
        """Send *frame* and read until *req*'s reply and idle arrived; False on timeout."""
        await self._send(frame)
        try:
            async with asyncio.timeout_at(req.sent + limit) as cm:
                while not req.round_trip_done:
                    raw = await self._read()
                    if raw is None:
                        cm.reschedule(None)  # the reconnect has a deadline of its own
                        await self._reconnect()
                        cm.reschedule(time.monotonic() + self.s.outstanding_timeout)
                    else:
                        self._handle(raw)
        except TimeoutError:
            self.verifier.abandon(req)
            return False
        return True

    async def _reconnect(self) -> None:
        conn = self.conn
        reason = f"{conn.close_code} {conn.close_reason}" if conn is not None else "no socket"
        if self.closing or not self.s.reconnect:
            raise ClientStopped(f"websocket closed: {reason}")
        dropped = time.monotonic()
        self.drops += 1
        if conn is not None:
            conn.close()  # closed by the peer; this releases tornado's side
        deadline = dropped + self.s.reconnect_deadline
        delay = 0.05
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError("reconnect deadline passed")
                self.conn = await self._open(min(remaining, 10.0))
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() + delay >= deadline:
                    self.reconnect_failures += 1
                    raise ClientStopped(
                        f"websocket closed ({reason}); no reconnect within "
                        f"{self.s.reconnect_deadline:g} s: {type(exc).__name__}: {exc}"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        self.reconnects += 1
        self.reconnect_seconds.append(time.monotonic() - dropped)
        if self._drop_at is None:  # a second drop before any message counts from the first
            self._drop_at = dropped

    def close(self) -> None:
        self.closing = True
        if self._drop_at is not None:
            self.silent_reconnects += 1
            self._drop_at = None
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.verifier.finish()
