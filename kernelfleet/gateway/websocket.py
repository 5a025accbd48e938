"""The ``/api/kernels/{id}/channels`` websocket handler.

Authentication and the ownership check happen before the upgrade (a refused client gets a JSON
401/404, not a dropped socket). Upgrades without an ``Origin`` header (jupyter_server's gateway
client sends none) are accepted. ``TCP_NODELAY`` is set on open: without it every burst of
small messages waits ~40 ms for Nagle and delayed ACKs. A client message may not exceed
``max_message_mb``; an invalid one is dropped (:meth:`KernelConnection.handle_incoming`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tornado import websocket

from kernelfleet.errors import BadRequest, Conflict, Forbidden
from kernelfleet.gateway.base import BaseHandler
from kernelfleet.gateway.bridge import KernelConnection, pick_subprotocol
from kernelfleet.kernels.record import KernelRecord


class KernelWebsocketHandler(websocket.WebSocketHandler, BaseHandler):
    connection: KernelConnection | None = None
    record: KernelRecord | None = None
    _pending = 0
    _stalled_since: float | None = None
    _largest = 0

    def set_default_headers(self) -> None:
        pass

    async def prepare(self) -> None:
        await BaseHandler.prepare(self)

    async def get(self, *args: Any, **kwargs: Any) -> None:
        headers = self.request.headers
        connection = {s.strip().lower() for s in headers.get("Connection", "").split(",")}
        if headers.get("Upgrade", "").lower() != "websocket" or "upgrade" not in connection:
            # tornado would answer a plain-text 400; clients expect our JSON shape
            raise BadRequest(
                "This URL is a websocket: connect with 'Upgrade: websocket' and "
                "'Connection: Upgrade' (a websocket client does)."
            )
        refused = self._check_cross_origin(self.check_origin)  # tornado's own algorithm
        if refused is not None:
            raise Forbidden(
                f"Websocket from another origin refused ({refused[:120]}); an admin allows it "
                "with allow_origin (KF_ALLOW_ORIGIN).",
                reason="Origin Not Allowed",
            )
        record = await self.kf.registry.find(kwargs["kernel_id"], self.identity)
        if record.channels is None:
            raise Conflict(f"Kernel {record.id} is not running yet; connect after it started.")
        session_id = self.get_query_argument("session_id", "") or ""
        check = self.kf.registry.failover_check
        if check is not None and session_id and not record.channels.knows(session_id):
            # a session new here may come from a replica that just died (kernels.replicas)
            await check()
        self.record = record
        await super().get(*args, **kwargs)

    def check_origin(self, origin: str) -> bool:
        allowed = self.kf.cors.allow_origin
        if allowed == "*" or (allowed and origin == allowed):
            return True
        return super().check_origin(origin)

    @property
    def max_message_size(self) -> int:
        """Bytes a client message may have (``BridgeSettings.max_message_mb``); tornado closes
        the websocket on a larger one before reading it."""
        return int(self.kf.bridge.max_message_mb * 1024 * 1024)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return pick_subprotocol(subprotocols, self.kf.bridge)

    def open(self, *args: str, **kwargs: str) -> None:
        self.set_nodelay(True)
        record = self.record
        assert record is not None and record.channels is not None
        session_id = self.get_query_argument("session_id", "") or ""
        self.connection = KernelConnection(
            record,
            record.channels,
            session_id=session_id,
            protocol=self.selected_subprotocol,
            settings=self.kf.bridge,
            send=self._send,
            traffic=self.kf.traffic,
        )
        self.connection.on_gone = self._kernel_gone
        self.connection.open()

    def _send(self, data: bytes, binary: bool, nbytes: int) -> None:
        if self.ws_connection is None or self.ws_connection.is_closing():
            return
        limit = self.kf.bridge.max_pending_mb * 1024 * 1024
        if self._pending > limit:
            # Over the limit is fine while writes complete (one huge output message is); a
            # client that took nothing for stall_seconds, or that falls 4x the limit (plus
            # room for its largest messages) behind, is cut off; it reconnects and gets the
            # session's buffered output.
            now = time.monotonic()
            if self._stalled_since is None:
                self._stalled_since = now
            if (
                now - self._stalled_since > self.kf.bridge.stall_seconds
                or self._pending > 4 * limit + 2 * self._largest
            ):
                self.close(1013, "client too slow: reconnect to receive buffered output")
                return
        try:
            fut = self.write_message(data, binary=binary)
        except websocket.WebSocketClosedError:
            return
        self._pending += nbytes
        self._largest = max(self._largest, nbytes)
        fut.add_done_callback(lambda f: self._written(f, nbytes))

    def _written(self, fut: asyncio.Future[None], nbytes: int) -> None:
        self._pending -= nbytes
        self._stalled_since = None
        if fut.cancelled() or fut.exception() is not None:
            return  # not written: the connection keeps it for the session's replay
        if self.connection is not None:
            self.connection.written()

    def _kernel_gone(self) -> None:
        self.close(1000, "kernel shut down")

    async def on_message(self, message: str | bytes) -> None:
        if self.connection is not None:
            await self.connection.handle_incoming(message)

    def on_close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
