"""The websocket ↔ ZMQ bridge: one :class:`KernelConnection` per websocket.

Each connection reaches its kernel through a :class:`~kernelfleet.kernels.channels.ClientLink`,
which owns its ZMQ sockets (shell, control and stdin, with identities of its own, so replies
reach the connection that asked, whatever other websockets exist for the same session) and
hands it the kernel's replies and the shared iopub. This module speaks websocket: it picks each
client's frame encoding and writes frames spliced from the kernel's raw JSON parts
(:mod:`kernelfleet.kernels.wire`), computed once per message for all connections.
A client that stops reading — more than ``max_pending_mb`` of output waiting and no write
completed for ``stall_seconds`` — is disconnected rather than growing the gateway's memory
without bound; it reconnects with its session id and gets the buffered iopub. A fast client
receiving one huge message is never cut off: its writes keep completing.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

from traitlets import Bool, Enum, Float, Int
from traitlets.config import LoggingConfigurable

from kernelfleet.config import option
from kernelfleet.kernels.channels import ClientLink, KernelChannels
from kernelfleet.kernels.notices import refusal_replies, standin_kernel_info
from kernelfleet.kernels.record import KernelRecord, Lifecycle
from kernelfleet.kernels.wire import (
    V1_PROTOCOL,
    KernelMessage,
    WireError,
    parse_client_frame,
)

log = logging.getLogger("kernelfleet.bridge")

Sender = Callable[[bytes, bool, int], None]


class BridgeSettings(LoggingConfigurable):
    """Websocket options."""

    legacy_buffers = option(
        Enum(
            ["strip", "binary"],
            default_value="strip",
            help="""What to do with a kernel message that carries binary buffers (e.g. a widget
            comm) on the legacy websocket protocol, which jupyter_server's gateway client
            speaks. 'strip' (default): send it as JSON without its buffers and log a warning
            — the session survives. 'binary': send a binary frame as Kernel Gateway does —
            jupyter_server 2.x gateway clients stop reading that browser tab's stream
            (contract.md). Clients of the v1 subprotocol always get the buffers.""",
        ),
        "KF_LEGACY_BUFFERS",
    )
    allow_v1_protocol = option(
        Bool(
            True,
            help="""Offer the v1.kernel.websocket.jupyter.org subprotocol to clients that ask
            for it. Default: true.""",
        ),
        "KF_ALLOW_V1_PROTOCOL",
    )
    ping_interval = option(
        Int(
            30,
            help="""Seconds between websocket pings; a client that does not answer within the
            same time is disconnected (0 disables). Default: 30.""",
        ),
        "KF_WS_PING_INTERVAL",
        "EG_WS_PING_INTERVAL_SECS",
    )
    stall_seconds = option(
        Float(
            10.0,
            help="""Seconds a client may take no output at all, while more than max_pending_mb
            wait for it, before it is disconnected. Default: 10.""",
        ),
        "KF_WS_STALL_SECONDS",
    )
    max_pending_mb = option(
        Int(
            64,
            help="""Megabytes of output that may wait for a slow websocket client before it is
            disconnected (it reconnects and replays the buffered output). Default: 64.""",
        ),
        "KF_WS_MAX_PENDING_MB",
    )
    max_message_mb = option(
        Float(
            10.0,
            min=0.001,
            help="""Largest websocket message, in megabytes (MiB), a client may send; a larger
            one closes that client's websocket (code 1009, "message too big"). It bounds the
            memory one client frame can take; a message carrying a widget's binary buffers,
            such as a file upload, must fit in it. jupyter_server itself accepts 10 MiB from a
            browser. Default: 10.""",
        ),
        "KF_WS_MAX_MESSAGE_MB",
    )


@dataclasses.dataclass
class Traffic:
    """What the websocket bridge relayed since the gateway started, for the metrics (plain
    counters: adding to one costs nothing next to a message's relay)."""

    opened: int = 0  # websocket connections accepted
    open: int = 0  # websocket connections open now
    to_clients: int = 0  # messages sent to clients
    to_clients_bytes: int = 0
    from_clients: int = 0  # client messages forwarded to kernels
    from_clients_bytes: int = 0
    dropped: int = 0  # client frames dropped as invalid


class KernelConnection:
    """One websocket's side of a kernel connection; its :class:`ClientLink` is the kernel's
    side. ``send(data, binary, nbytes)`` writes a frame; the websocket calls :meth:`written` as
    each write completes."""

    def __init__(
        self,
        record: KernelRecord,
        channels: KernelChannels,
        *,
        session_id: str,
        protocol: str | None,
        settings: BridgeSettings,
        send: Sender,
        traffic: Traffic | None = None,
    ) -> None:
        self.traffic = traffic or Traffic()
        self.record = record
        self.channels = channels
        self.session_id = session_id
        self.protocol = protocol
        self.settings = settings
        self._send = send
        self._link = ClientLink(channels, self, session_id=session_id, label=record.id)
        self._warned_buffers = False
        self._dropped: dict[str, int] = {}  # WireError reason -> client frames dropped
        # Messages handed to the websocket but not written yet, oldest first: what a client
        # cut off (or gone) never got, replayed to its session's next connection.
        self._unsent: collections.deque[KernelMessage] = collections.deque()
        self.on_gone: Callable[[], None] | None = None
        self.closed = False
        self._confirmed = False  # a first write completed

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        self.traffic.opened += 1
        self.traffic.open += 1
        backlog = self._link.open()
        self.record.connections = self.channels.connection_count
        for msg in backlog:
            self.deliver(msg)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.traffic.open -= 1
        if sum(self._dropped.values()) > len(self._dropped):
            log.info(
                "kernel %s: %d invalid client frames were dropped on this connection: %s",
                self.record.id,
                sum(self._dropped.values()),
                "; ".join(f"{n} x {reason}" for reason, n in self._dropped.items()),
            )
        unsent, self._unsent = list(self._unsent), collections.deque()
        self._link.close(unsent)
        self.record.connections = self.channels.connection_count

    # -- the Client protocol of kernels.channels (called through the ClientLink) ---------

    def kernel_gone(self) -> None:
        if self.on_gone is not None:
            self.on_gone()

    def deliver(self, msg: KernelMessage) -> None:
        if self.closed:
            return
        if self.protocol == V1_PROTOCOL:
            data, binary = msg.v1(), True
        elif msg.buffers and self.settings.legacy_buffers == "binary":
            data, binary = msg.legacy_binary(), True
        else:
            if msg.buffers and not self._warned_buffers:
                self._warned_buffers = True
                log.warning(
                    "kernel %s: dropping binary buffers of %s for a legacy-protocol client "
                    "(legacy_buffers=strip); further drops on this connection are not logged",
                    self.record.id,
                    msg.msg_type,
                )
            data, binary = msg.legacy_json(), False
        self._unsent.append(msg)
        self.traffic.to_clients += 1
        self.traffic.to_clients_bytes += len(data)
        self._send(data, binary, len(data))

    def _refuse(self, parts: list[bytes]) -> None:
        """A shell request to a dead kernel: a cell gets the reason as its error output (a
        kernel kept for a restart once its host is back has no process to ask)."""
        header = _header(parts)
        reason = self.record.reason or "The kernel is dead; restart it."
        if header.get("msg_type") == "execute_request":
            replies = refusal_replies(header, reason)
        elif header.get("msg_type") == "kernel_info_request":
            language = str(self.record.spec.get("language") or "")
            replies = standin_kernel_info(header, reason, language)
        else:
            return
        for msg in replies:
            self.deliver(msg)

    def written(self) -> None:
        """The oldest message handed to ``send`` was written (writes complete in order)."""
        if self._unsent:
            self._unsent.popleft()
        if not self._confirmed:
            self._confirmed = True
            self._link.delivered()

    # -- traffic --------------------------------------------------------------------------

    async def handle_incoming(self, data: str | bytes) -> None:
        """Forward one client frame to the kernel.

        An invalid frame is dropped; the first of each kind (:attr:`WireError.reason`) is
        logged, so a hostile client cannot flood the log, and the counts go in one line when
        the connection closes.
        """
        try:
            channel, parts = parse_client_frame(data, self.protocol)
        except WireError as exc:
            self.traffic.dropped += 1
            seen = self._dropped.get(exc.reason, 0)
            self._dropped[exc.reason] = seen + 1
            if not seen:
                log.warning(
                    "kernel %s: dropping client frame: %s (further frames dropped for this "
                    "reason on this connection are only counted)",
                    self.record.id,
                    exc,
                )
            return
        if channel == "shell" and self.record.lifecycle is Lifecycle.DEAD:
            self._refuse(parts)
            return
        self.record.touch()
        self.traffic.from_clients += 1
        self.traffic.from_clients_bytes += len(data)
        await self._link.send(channel, parts)


def _header(parts: list[bytes]) -> dict[str, Any]:
    try:
        value = json.loads(parts[0])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def pick_subprotocol(offered: list[str], settings: BridgeSettings) -> str | None:
    if settings.allow_v1_protocol and V1_PROTOCOL in offered:
        return V1_PROTOCOL
    return None
