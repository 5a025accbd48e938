"""A small async client of the gateway API, for tools, tests and benchmarks.

It speaks exactly what jupyter_server's gateway client speaks (token header, legacy JSON
websocket frames unless asked for v1), so code driven by it exercises the same paths.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, websocket_connect

from kernelfleet.kernels.record import format_timestamp, utcnow


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
        return KernelSocket(conn, sid)


class KernelSocket:
    """A kernel websocket speaking the legacy JSON protocol."""

    def __init__(self, conn: WebSocketClientConnection, session_id: str) -> None:
        self.conn = conn
        self.session_id = session_id
        self.backlog: list[dict[str, Any]] = []

    def make(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> Any:
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
            "buffers": [],
            "channel": channel,
        }

    async def send(self, msg: dict[str, Any]) -> str:
        await self.conn.write_message(json.dumps(msg))
        return str(msg["header"]["msg_id"])

    async def recv(self) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        raw = await self.conn.read_message()
        if raw is None:
            raise ConnectionError("websocket closed")
        if isinstance(raw, bytes):
            raise ValueError("binary frame on the legacy protocol")
        value: dict[str, Any] = json.loads(raw)
        return value

    async def request(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> Any:
        msg_id = await self.send(self.make(msg_type, content, channel))
        while True:
            msg = await self.recv()
            if msg["parent_header"].get("msg_id") == msg_id and msg["channel"] == channel:
                return msg

    async def execute(self, code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run *code*; returns (execute_reply content, iopub messages until idle)."""
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }  # every field: some kernels (Apache Toree) reject a partial request
        msg_id = await self.send(self.make("execute_request", content))
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
        return reply, iopub

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
