"""The gateway side: a ``kernelfleet serve`` subprocess and a lean websocket client.

The gateway runs as its own process (as in production), so it never shares an event loop or
the GIL with the benchmark client, and py-spy can attach to it (``--py-spy``). The client speaks
the legacy JSON websocket protocol (the one jupyter_server's gateway client uses) with tornado's
websocket client; requests are formatted from a template and incoming frames are parsed only
when they can concern the request being timed (a substring test on the request's msg_id first).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from benchmarks.common import BenchEnv
from kernelfleet.client import GatewayClient

_LISTENING = re.compile(r"listening on (\S+)")


class GatewayProcess:
    """``python -m kernelfleet serve --port 0`` with a random token, in our private dirs."""

    def __init__(self, env: BenchEnv, name: str = "gateway", extra_args: list[str] | None = None):
        self.env = env
        self.name = name
        self.token = secrets.token_hex(16)
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path: Path = env.log_dir / f"{name}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, wait: float = 30.0) -> None:
        # KF_BENCH_GATEWAY_CMD: another command line for the gateway (a branch, a patched
        # build); it gets the same ``serve`` arguments.
        base = os.environ.get("KF_BENCH_GATEWAY_CMD") or f"{sys.executable} -m kernelfleet"
        cmd = [
            *shlex.split(base),
            "serve",
            "--ip=127.0.0.1",
            "--port=0",
            f"--token={self.token}",
            f"--data-dir={self.env.data_dir / self.name}",
            *self.extra_args,
        ]
        log = open(self.log_path, "wb")  # noqa: ASYNC230, SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited at start:\n{self.log_tail()}")
            match = _LISTENING.search(self.log_path.read_text(errors="replace"))
            if match:
                self.url = match.group(1).rstrip("/") + "/"
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"gateway did not start within {wait} s:\n{self.log_tail()}")

    def client(self) -> GatewayClient:
        return GatewayClient(self.url, token=self.token, timeout=120.0)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, wait: float = 60.0) -> None:
        """SIGTERM (the gateway shuts its kernels down), SIGKILL if it hangs."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + wait
            while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.proc = None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class WsKernel:
    """One kernel websocket (legacy JSON protocol) with just enough client logic to time it."""

    def __init__(self, conn: WebSocketClientConnection, session_id: str) -> None:
        self.conn = conn
        self.session_id = session_id

    @classmethod
    async def connect(cls, gw: GatewayProcess, kernel_id: str) -> WsKernel:
        sid = uuid.uuid4().hex
        url = gw.url.replace("http", "ws", 1) + f"api/kernels/{kernel_id}/channels?session_id={sid}"
        req = HTTPRequest(url, headers={"Authorization": f"token {gw.token}"}, request_timeout=60.0)
        conn = await websocket_connect(req, max_message_size=1 << 31, ping_interval=None)
        return cls(conn, sid)

    def _frame(self, msg_type: str, content: str, channel: str = "shell") -> tuple[str, str]:
        msg_id = uuid.uuid4().hex
        header = (
            f'{{"msg_id":"{msg_id}","msg_type":"{msg_type}","session":"{self.session_id}",'
            f'"username":"bench","date":"{_now()}","version":"5.3"}}'
        )
        frame = (
            f'{{"header":{header},"parent_header":{{}},"metadata":{{}},"content":{content},'
            f'"buffers":[],"channel":"{channel}"}}'
        )
        return msg_id, frame

    async def _recv(self) -> str:
        raw = await self.conn.read_message()
        if raw is None:
            raise ConnectionError(
                f"websocket closed: {self.conn.close_code} {self.conn.close_reason}"
            )
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")  # legacy binary frame: not expected here
        return raw

    async def kernel_info(self) -> dict[str, Any]:
        msg_id, frame = self._frame("kernel_info_request", "{}")
        await self.conn.write_message(frame)
        while True:
            raw = await self._recv()
            if msg_id not in raw:
                continue
            msg = json.loads(raw)
            if (
                msg.get("channel") == "shell"
                and msg["parent_header"].get("msg_id") == msg_id
                and msg["header"]["msg_type"] == "kernel_info_reply"
            ):
                return dict(msg["content"])

    async def execute(self, code: str) -> tuple[float, int, int]:
        """Run *code* until execute_reply and idle.

        Returns (seconds, bytes of stdout stream text, number of stream messages).
        """
        content = json.dumps(
            {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            }
        )
        t0 = time.perf_counter()
        msg_id, frame = self._frame("execute_request", content)
        await self.conn.write_message(frame)
        reply = idle = False
        nbytes = nmsgs = 0
        while not (reply and idle):
            raw = await self._recv()
            if msg_id not in raw:
                continue
            msg = json.loads(raw)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            channel = msg.get("channel")
            mtype = msg["header"]["msg_type"]
            if channel == "shell":
                reply = True
                if msg["content"].get("status") != "ok":
                    raise RuntimeError(f"execute failed: {msg['content']}")
            elif channel == "iopub":
                if mtype == "stream":
                    nbytes += len(msg["content"]["text"])
                    nmsgs += 1
                elif mtype == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
        return time.perf_counter() - t0, nbytes, nmsgs

    async def drain(self, quiet: float = 0.05) -> None:
        while True:
            try:
                await asyncio.wait_for(self.conn.read_message(), quiet)
            except TimeoutError:
                return

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


class GatewayKernel:
    """A kernel started through the gateway's REST API, reached over its websocket."""

    def __init__(
        self, gw: GatewayProcess, connect: bool = True, kernel_name: str = "python3"
    ) -> None:
        self.gw = gw
        self.connect = connect
        self.kernel_name = kernel_name
        self.client = gw.client()
        self.kernel_id: str | None = None
        self.ws: WsKernel | None = None

    async def start(self) -> dict[str, float]:
        """POST /api/kernels → websocket → first kernel_info_reply. Returns phase times.

        With ``connect=False`` (constructor) only the POST.
        """
        t0 = time.perf_counter()
        model = await self.client.start_kernel(self.kernel_name)
        self.kernel_id = model["id"]
        t_post = time.perf_counter()
        if not self.connect:
            return {"post": t_post - t0}
        self.ws = await WsKernel.connect(self.gw, model["id"])
        t_ws = time.perf_counter()
        await self.ws.kernel_info()
        t_reply = time.perf_counter()
        await self.ws.drain()
        return {"post": t_post - t0, "ws_open": t_ws - t0, "first_reply": t_reply - t0}

    async def execute(self, code: str) -> tuple[float, int, int]:
        assert self.ws is not None
        return await self.ws.execute(code)

    async def shutdown(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        if self.kernel_id is not None:
            with contextlib.suppress(Exception):
                await self.client.shutdown_kernel(self.kernel_id)
            self.kernel_id = None
