"""A small async client of the gateway API, for tools, tests and benchmarks.

It speaks exactly what jupyter_server's gateway client speaks (token header, legacy JSON
websocket frames unless asked for v1), so code driven by it exercises the same paths. A
:class:`KernelSocket` offers one API on both websocket protocols: messages are dicts with
``header``, ``parent_header``, ``metadata``, ``content``, ``buffers`` (a list of ``bytes``),
``channel``, ``msg_id`` and ``msg_type``, whichever protocol carried them.
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_binary_message,
    serialize_msg_to_ws_v1,
)
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, websocket_connect

from kernelfleet.kernels.timestamps import format_timestamp, utcnow
from kernelfleet.kernels.wire import V1_PROTOCOL

Message = dict[str, Any]
#: Answers an ``input_request`` (given its content) with the text to send back.
InputHandler = Callable[[dict[str, Any]], str | Awaitable[str]]


__all__ = [
    "V1_PROTOCOL",
    "GatewayClient",
    "GatewayError",
    "InputHandler",
    "KernelSocket",
    "Message",
    "result_of",
    "stdout_of",
]


class GatewayError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


@dataclass
class GatewayClient:
    url: str
    token: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 120.0

    def _headers(self) -> dict[str, str]:
        out = dict(self.headers)
        if "Authorization" not in out:
            out["Authorization"] = f"token {self.token}"
        return out

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send a request; returns (status, decoded JSON or text) without raising on 4xx/5xx."""
        data = None if body is None else json.dumps(body)
        if data is None and method in {"POST", "PATCH", "PUT"}:
            data = "{}"
        req = HTTPRequest(
            self.url.rstrip("/") + path,
            method=method,
            headers=self._headers(),
            body=data,
            request_timeout=self.timeout,
            # tornado runs 10 requests at a time and drops a queued one after connect_timeout
            # (20 s by default): a crowd of slow kernel starts must wait its turn, not fail
            connect_timeout=self.timeout,
            allow_nonstandard_methods=True,
        )
        try:
            resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        except (HTTPClientError, StreamClosedError, OSError) as exc:
            # No HTTP answer at all (connection reset, timeout): report it as tornado does.
            return 599, str(exc)
        text = resp.body.decode() if resp.body else ""
        try:
            return resp.code, json.loads(text) if text else None
        except ValueError:
            return resp.code, text

    async def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        status, value = await self.request(method, path, body)
        if status != expect:
            raise GatewayError(status, value)
        return value

    async def start_kernel(self, name: str = "python3", env: dict[str, str] | None = None) -> Any:
        return await self.call("POST", "/api/kernels", {"name": name, "env": env or {}}, 201)

    async def shutdown_kernel(self, kernel_id: str) -> None:
        await self.call("DELETE", f"/api/kernels/{kernel_id}", expect=204)

    async def connect(
        self, kernel_id: str, session_id: str | None = None, subprotocol: str | None = None
    ) -> KernelSocket:
        ws_url = self.url.replace("http", "ws", 1).rstrip("/")
        sid = session_id or uuid.uuid4().hex
        req = HTTPRequest(
            f"{ws_url}/api/kernels/{kernel_id}/channels?session_id={quote(sid)}",
            headers=self._headers(),
            request_timeout=self.timeout,
        )
        conn = await websocket_connect(
            req, subprotocols=[subprotocol] if subprotocol else None, max_message_size=1 << 30
        )
        return KernelSocket(conn, sid, conn.selected_subprotocol)


class KernelSocket:
    """A kernel websocket speaking the legacy JSON protocol, or the v1 binary subprotocol when
    the gateway selected it (:attr:`protocol`); the API is the same on both.

    Messages with buffers go out as legacy binary frames on the legacy protocol. Messages
    :meth:`recv` skipped on behalf of :meth:`wait_for` wait in :attr:`backlog` and come first.
    """

    def __init__(
        self, conn: WebSocketClientConnection, session_id: str, protocol: str | None = None
    ) -> None:
        self.conn = conn
        self.session_id = session_id
        self.protocol = protocol if protocol is not None else conn.selected_subprotocol
        self.backlog: list[Message] = []

    @property
    def binary(self) -> bool:
        """True on the v1 subprotocol, whose every frame is binary."""
        return self.protocol == V1_PROTOCOL

    def make(
        self,
        msg_type: str,
        content: dict[str, Any],
        channel: str = "shell",
        buffers: list[bytes] | None = None,
    ) -> Any:
        return {
            "header": {
                "msg_id": uuid.uuid4().hex,
                "msg_type": msg_type,
                "session": self.session_id,
                "username": "test",
                "date": format_timestamp(utcnow()),
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "content": content,
            "buffers": list(buffers or []),
            "channel": channel,
        }

    def encode(self, msg: Message) -> str | bytes:
        """The websocket frame for *msg* on this socket's protocol."""
        buffers = [bytes(b) for b in msg.get("buffers") or []]
        if self.binary:
            parts = [
                json.dumps(msg.get(key) or {}).encode()
                for key in ("header", "parent_header", "metadata", "content")
            ]
            frame: bytes = serialize_msg_to_ws_v1(  # type: ignore[no-untyped-call]
                [*parts, *buffers], msg.get("channel", "shell")
            )
            return frame
        if buffers:
            legacy: bytes = serialize_binary_message(  # type: ignore[no-untyped-call]
                {**msg, "buffers": buffers}
            )
            return legacy
        return json.dumps({**msg, "buffers": []})

    def decode(self, raw: str | bytes) -> Message:
        """A received frame as a message dict (see the module docstring)."""
        if isinstance(raw, str):
            msg: Message = json.loads(raw)
            msg["buffers"] = []
        elif self.binary:
            channel, parts = deserialize_msg_from_ws_v1(raw)  # type: ignore[no-untyped-call]
            header, parent, metadata, content = (json.loads(p) for p in parts[:4])
            msg = {
                "header": header,
                "parent_header": parent,
                "metadata": metadata,
                "content": content,
                "buffers": [bytes(b) for b in parts[4:]],
                "channel": channel,
            }
        else:
            msg = deserialize_binary_message(raw)  # type: ignore[no-untyped-call]
            msg["buffers"] = [bytes(b) for b in msg.get("buffers") or []]
        msg.setdefault("msg_id", msg["header"].get("msg_id"))
        msg.setdefault("msg_type", msg["header"].get("msg_type"))
        return msg

    async def send(self, msg: dict[str, Any]) -> str:
        frame = self.encode(msg)
        await self.conn.write_message(frame, binary=isinstance(frame, bytes))
        return str(msg["header"]["msg_id"])

    async def _read(self) -> Message:
        raw = await self.conn.read_message()
        if raw is None:
            raise ConnectionError("websocket closed")
        return self.decode(raw)

    async def recv(self) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        return await self._read()

    async def wait_for(self, match: Callable[[Message], bool]) -> Message:
        """Receive until a message *match*es; the others are kept for :meth:`recv`."""
        for i, msg in enumerate(self.backlog):
            if match(msg):
                return self.backlog.pop(i)
        while True:
            msg = await self._read()
            if match(msg):
                return msg
            self.backlog.append(msg)

    async def request(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> Any:
        """Send a request and return its reply; whatever else arrives meanwhile (the request's
        own iopub messages, another cell's output) is kept for :meth:`recv`."""
        msg_id = await self.send(self.make(msg_type, content, channel))
        return await self.wait_for(
            lambda msg: msg["parent_header"].get("msg_id") == msg_id and msg["channel"] == channel
        )

    async def execute(
        self,
        code: str,
        *,
        allow_stdin: bool = False,
        on_input: InputHandler | None = None,
        stop_on_error: bool = True,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run *code*; returns (execute_reply content, iopub messages until idle).

        With *on_input*, stdin is allowed and each ``input_request`` of the cell is answered
        with what *on_input* returns for its content. Messages of other requests are dropped.
        """
        msg_id = await self.send(
            self.execute_request(
                code, allow_stdin=allow_stdin or on_input is not None, stop_on_error=stop_on_error
            )
        )
        return await self.collect(msg_id, on_input=on_input)

    def execute_request(
        self, code: str, *, allow_stdin: bool = False, stop_on_error: bool = True
    ) -> Message:
        """An ``execute_request`` with every field (Apache Toree rejects a partial one)."""
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": allow_stdin,
            "stop_on_error": stop_on_error,
        }
        msg: Message = self.make("execute_request", content)
        return msg

    async def collect(
        self, msg_id: str, *, on_input: InputHandler | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Wait for the shell reply to *msg_id* and its iopub messages until idle, answering
        its input requests with *on_input* (an ``input_request`` without it is an error).
        Messages of other requests are dropped."""
        reply: dict[str, Any] | None = None
        iopub: list[dict[str, Any]] = []
        idle = False
        while reply is None or not idle:
            msg = await self.recv()
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["channel"] == "shell":
                reply = msg["content"]
            elif msg["channel"] == "iopub":
                iopub.append(msg)
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
            elif msg["channel"] == "stdin" and msg["msg_type"] == "input_request":
                if on_input is None:
                    raise RuntimeError(f"unexpected input_request: {msg['content']}")
                value = on_input(msg["content"])
                if inspect.isawaitable(value):
                    value = await value
                await self.answer(msg, value)
        return reply, iopub

    async def answer(self, input_request: Message, value: str) -> str:
        """Send the ``input_reply`` with *value* to *input_request*; returns its msg_id."""
        reply = self.make("input_reply", {"value": value}, "stdin")
        reply["parent_header"] = input_request["header"]
        return await self.send(reply)

    def close(self) -> None:
        self.conn.close()


def stdout_of(iopub: list[dict[str, Any]]) -> str:
    return "".join(
        m["content"]["text"]
        for m in iopub
        if m["msg_type"] == "stream" and m["content"].get("name") == "stdout"
    )


def result_of(iopub: list[dict[str, Any]]) -> str | None:
    for m in iopub:
        if m["msg_type"] == "execute_result":
            return str(m["content"]["data"].get("text/plain"))
    return None
