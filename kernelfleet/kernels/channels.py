"""ZMQ plumbing of one kernel: the shared iopub subscriber, per-connection sockets, handshake.

Design:
- **One iopub subscriber per kernel**, not one per websocket. It runs from the kernel's start to
  its end, so ``execution_state``/``last_activity`` follow real iopub activity even when nobody is
  connected (culling depends on it), and so output produced while a client is away can be kept.
- **Per-connection shell/control/stdin DEALER sockets, with an identity per connection** (shell and
  stdin share it: a kernel addresses `input_request` to the shell sender). Replies
  are routed by identity, so a reply always reaches the connection that sent the request, even
  when a client (stock JupyterLab through jupyter_server) opens a second websocket for the same
  ``session_id`` and leaves the first one orphaned (contract.md, "second-websocket race"). No
  connection ever waits for another to close. A :class:`ClientLink` per connection owns them:
  the websocket bridge (:mod:`kernelfleet.gateway.bridge`) reaches the kernel only through its
  link, and every ZMQ socket of the gateway is created, read and closed in this module.
- **Replay per session_id**: when the last connection of a session goes away, iopub messages
  are kept for that session (bounded in count, bytes and time; one log per kernel shared by
  all away sessions, :mod:`kernelfleet.kernels.replay`) and replayed when a connection with
  the same ``session_id`` comes back.
- **Recent output for failover**: with replicas, the last iopub messages are kept with their
  arrival times, and a session new to this replica after a peer replica died gets what arrived
  since the death plus a loss notice (:mod:`kernelfleet.kernels.failover`).
- **Readiness** is awaited, not polled: a ``kernel_info_request`` is queued on a DEALER (ZMQ
  delivers it the moment the kernel binds), and requests are repeated only until the first iopub
  message proves the subscription is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import zmq
import zmq.asyncio
from jupyter_client.session import Session
from zmq.utils.monitor import parse_monitor_message

from kernelfleet.aio import cancel_and_wait
from kernelfleet.kernels.failover import Failover, RecentLimits, RecentOutput
from kernelfleet.kernels.notices import loss_notice
from kernelfleet.kernels.replay import BufferLimits, ReplayLog, dropped_notice
from kernelfleet.kernels.wire import KernelMessage, WireError, parse_kernel_message, to_zmq

log = logging.getLogger("kernelfleet.channels")

SOCKET_TYPES = {"shell": zmq.DEALER, "control": zmq.DEALER, "stdin": zmq.DEALER}
#: Seconds a connection of a new session may precede the notice of a peer's death and still
#: get that notice (kernels.failover).
FRESH_SECONDS = 5.0


class Client(Protocol):
    """A client connection (a websocket, :mod:`kernelfleet.gateway.bridge`) as its
    :class:`ClientLink` sees it."""

    def deliver(self, msg: KernelMessage) -> None:
        """Take one message for the client: a reply, an iopub message, a replayed one."""

    def kernel_gone(self) -> None:
        """The kernel's channels closed (it was shut down): the connection should close."""


def make_session(info: dict[str, Any]) -> Session:
    key = info.get("key") or b""
    return Session(
        key=key.encode() if isinstance(key, str) else key,
        signature_scheme=info.get("signature_scheme", "hmac-sha256"),
        username="kernelfleet",
    )


#: Longest wait, in seconds, for a connection's stdin handshake before its shell traffic flows.
HANDSHAKE_WAIT = 5.0


async def _handshake_done(sock: zmq.asyncio.Socket, monitor: zmq.asyncio.Socket) -> None:
    try:
        async with asyncio.timeout(HANDSHAKE_WAIT):
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    return
    except (TimeoutError, zmq.ZMQError):
        return  # a slow or closed socket: traffic flows as it would have without the wait
    finally:
        with contextlib.suppress(zmq.ZMQError):
            sock.disable_monitor()
        monitor.close(linger=0)


def _url(info: dict[str, Any], channel: str) -> str:
    transport = info.get("transport", "tcp")
    ip = info["ip"]
    port = info[f"{channel}_port"]
    if transport == "tcp":
        host = f"[{ip}]" if ":" in ip else ip
        return f"tcp://{host}:{port}"
    return f"{transport}://{ip}-{port}"


class KernelChannels:
    """The gateway's ZMQ view of one kernel (see module docstring)."""

    def __init__(
        self,
        context: zmq.asyncio.Context,
        info: dict[str, Any],
        on_message: Callable[[KernelMessage], None],
        limits: BufferLimits | None = None,
        *,
        recent: RecentLimits | None = None,
        failover: Callable[[KernelChannels], Failover | None] | None = None,
    ) -> None:
        self.context = context
        self.info = dict(info)
        self.session = make_session(self.info)
        self._on_message = on_message
        self.limits = limits or BufferLimits()
        self.links: set[ClientLink] = set()
        self._attached_at: dict[ClientLink, int] = {}
        self._seq = 0
        self._replay = ReplayLog(self.limits)  # output for sessions whose clients are away
        self._iopub: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._iopub_seen = asyncio.Event()
        #: Done once the iopub subscriber's handshake succeeded (or gave up waiting).
        self._iopub_joined: asyncio.Future[None] | None = None
        self._idle_waiters: dict[str, asyncio.Future[None]] = {}
        self._closed = False
        #: The last iopub messages (replicas only), and what a new session gets from them.
        self.recent = RecentOutput(recent) if recent is not None else None
        self._failover = failover
        self._sessions: dict[str, None] = {}  # sessions attached here (the newest 10000)
        #: Connections of sessions new here that got no failover replay, with their attach
        #: time: if a peer's death is noticed just after, they get its notice late.
        self._fresh: dict[ClientLink, float] = {}
        self._unconfirmed: set[ClientLink] = set()  # got a failover replay, wrote nothing yet

    # -- sockets --------------------------------------------------------------------------

    def socket(
        self,
        channel: str,
        identity: bytes | None = None,
        *,
        eager: bool = False,
        handshake: list[asyncio.Future[None]] | None = None,
    ) -> zmq.asyncio.Socket:
        """A new socket connected to *channel* of the kernel (CurveZMQ applied if configured).

        ZMQ retries a refused connection (a kernel that has not bound yet) with exponential
        backoff; capped at 50 ms here, or a constant 5 ms for an *eager* socket used only
        while a kernel starts, so the gateway notices a freshly bound kernel at once.

        With *handshake* (a list), a future is appended that is done once the socket's ZMQ
        handshake with the kernel succeeded — from then on the kernel knows its identity —
        or after :data:`HANDSHAKE_WAIT` seconds at the most."""
        stype = zmq.SUB if channel == "iopub" else SOCKET_TYPES[channel]
        sock = self.context.socket(stype)
        sock.linger = 0
        sock.setsockopt(zmq.RECONNECT_IVL, 5 if eager else 10)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 0 if eager else 50)
        if identity is not None:
            sock.identity = identity
        pub = self.info.get("curve_publickey")
        sec = self.info.get("curve_secretkey")
        if pub and sec:
            # The connection file carries one keypair; jupyter_client uses it on both ends.
            sock.curve_secretkey = sec.encode() if isinstance(sec, str) else sec
            sock.curve_publickey = pub.encode() if isinstance(pub, str) else pub
            sock.curve_serverkey = pub.encode() if isinstance(pub, str) else pub
        if stype == zmq.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        if handshake is not None:
            # the monitor must exist before connect(), or the event may come before it
            monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            handshake.append(asyncio.ensure_future(_handshake_done(sock, monitor)))
        sock.connect(_url(self.info, channel))
        return sock

    def start(self) -> None:
        """Connect the iopub subscriber and start reading it."""
        self._iopub_seen.clear()
        joined: list[asyncio.Future[None]] = []
        self._iopub = self.socket("iopub", handshake=joined)
        self._iopub_joined = joined[0]
        self._reader = asyncio.create_task(self._read_iopub(self._iopub), name="iopub-reader")

    async def reset(self, info: dict[str, Any]) -> None:
        """Reconnect everything after a restart (ports or keys may have changed)."""
        await self._stop_reader()
        self.info = dict(info)
        self.session = make_session(self.info)
        self.start()
        for link in list(self.links):
            link.channels_reset()

    async def _stop_reader(self) -> None:
        if self._iopub_joined is not None:
            self._iopub_joined.cancel()
        await cancel_and_wait(self._reader)
        self._reader = None
        if self._iopub is not None:
            self._iopub.close(linger=0)
            self._iopub = None

    async def close(self) -> None:
        """Stop reading and tell every connection the kernel is gone (they close)."""
        self._closed = True
        await self._stop_reader()
        if self.recent is not None:
            self.recent.close()
        self._replay.clear()
        for link in list(self.links):
            link.kernel_gone()
        self.links.clear()

    # -- iopub fan-out --------------------------------------------------------------------

    async def _read_iopub(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            try:
                msg = parse_kernel_message(self.session, "iopub", frames)
            except WireError as exc:
                log.warning("dropping iopub message: %s", exc)
                continue
            self._iopub_seen.set()
            if self.recent is not None:
                self.recent.add(msg)
            if self._idle_waiters and msg.msg_type == "status":
                self._resolve_idle(msg)
            try:
                self._on_message(msg)
            except Exception:
                log.exception("iopub activity callback failed")
            self.broadcast(msg)

    def _resolve_idle(self, msg: KernelMessage) -> None:
        waiter = self._idle_waiters.get(msg.parent_msg_id() or "")
        if waiter is not None and not waiter.done() and msg.execution_state == "idle":
            waiter.set_result(None)

    def broadcast(self, msg: KernelMessage) -> None:
        """Send a gateway-made iopub message to every client (and the session buffers)."""
        for link in tuple(self.links):
            try:
                link.deliver(msg)
            except Exception:  # one broken connection must not silence the others
                log.exception("delivering a kernel message to a websocket failed")
        self._replay.append(msg)

    def attach(self, link: ClientLink) -> list[KernelMessage]:
        """Register a connection; returns the iopub messages buffered for its session."""
        self.links.add(link)
        self._seq += 1
        self._attached_at[link] = self._seq
        sid = link.session_id
        back = self._replay.back(sid) if sid else None
        if back is None:
            replay = self._failover_replay(sid) if sid and sid not in self._sessions else []
            if sid and sid not in self._sessions and not replay and self._failover is not None:
                now = time.monotonic()
                self._fresh = {k: t for k, t in self._fresh.items() if now - t < FRESH_SECONDS}
                self._fresh[link] = now
            if replay:
                # known here once its client got something: if this connection dies before
                # (a client that gave up on a slow upgrade), its retry gets the replay again
                self._unconfirmed.add(link)
            else:
                self._remember(sid)
            return replay
        notice = [dropped_notice(back, self.limits)] if back.dropped_messages else []
        return [*notice, *back.messages]

    def late_failover(self, replica: str, died: float, died_wall: str, uncertainty: float) -> None:
        """A peer's death was noticed after connections new here had attached (a proxy can be
        faster than the database): they get its notice now. No replay: what arrived since
        they attached reached them live, and the time between the death and their attach is
        reported instead (the requests with output in it)."""
        if self.recent is None:
            return
        late = {
            k: t for k, t in self._fresh.items() if k in self.links and t >= died - FRESH_SECONDS
        }
        if not late:
            return
        for link in late:
            del self._fresh[link]
        since = min(*late.values(), died)
        requests = self.recent.affected_requests(since, uncertainty)
        notice = loss_notice(replica, died_wall, requests, complete=self.recent.covers(since))
        log.info(
            "%d session(s) arrived just before replica %s was known stopped: %d request(s) "
            "may be incomplete",
            len(late),
            replica,
            len(requests),
        )
        for link in late:
            try:
                link.deliver(notice)
            except Exception:
                log.exception("delivering a failover notice failed")

    def confirm(self, link: ClientLink) -> None:
        """*link* wrote its first message to its client."""
        if link in self._unconfirmed:
            self._unconfirmed.discard(link)
            self._remember(link.session_id)

    def sweep(self) -> None:
        """Periodic housekeeping (the liveness monitor's round): expired away sessions."""
        self._replay.sweep()

    def knows(self, sid: str) -> bool:
        """Whether a connection of session *sid* was attached here before."""
        return sid in self._sessions

    def _remember(self, sid: str) -> None:
        if not sid:
            return
        self._sessions.pop(sid, None)
        self._sessions[sid] = None
        if len(self._sessions) > 10_000:
            del self._sessions[next(iter(self._sessions))]

    def _failover_replay(self, sid: str) -> list[KernelMessage]:
        """For a session this replica never served, after a peer replica died: the output
        it cannot have delivered, behind a notice of what may be missing."""
        if self._failover is None:
            return []
        failover = self._failover(self)
        if failover is None:
            return []
        log.info(
            "session %s arrived after replica %s stopped: replaying %d message(s), %d "
            "request(s) may be incomplete",
            sid,
            failover.replica,
            len(failover.messages),
            len(failover.requests),
        )
        notice = loss_notice(
            failover.replica, failover.died_wall, failover.requests, failover.complete
        )
        return [notice, *failover.messages]

    def detach(self, link: ClientLink, unsent: Iterable[KernelMessage] = ()) -> None:
        """Unregister a connection; if it was its session's last one, start buffering for the
        session, beginning with *unsent* (what the connection never wrote to its client)."""
        self.links.discard(link)
        self._fresh.pop(link, None)
        self._unconfirmed.discard(link)
        seq = self._attached_at.pop(link, 0)
        sid = link.session_id
        if self._closed or not sid:
            return
        # Buffer unless a *newer* connection of the session is live. An older one may be the
        # orphan a stock JupyterLab leaves open (contract.md): it must not stop the buffering.
        if any(o.session_id == sid and self._attached_at.get(o, 0) > seq for o in self.links):
            return
        self._replay.leave(sid, list(unsent))

    @property
    def connection_count(self) -> int:
        return len(self.links)

    # -- requests -------------------------------------------------------------------------

    async def request(
        self, channel: str, msg_type: str, content: dict[str, Any] | None = None
    ) -> KernelMessage:
        """Send one request on a private socket and return the kernel's reply."""
        sock = self.socket(channel, identity=f"kf-{uuid.uuid4().hex[:12]}".encode())
        try:
            msg = self.session.msg(msg_type, content or {})
            await sock.send_multipart(self.session.serialize(msg))
            while True:
                reply = parse_kernel_message(self.session, channel, await sock.recv_multipart())
                if reply.parent_msg_id() == msg["header"]["msg_id"]:
                    return reply
        finally:
            sock.close(linger=0)

    async def wait_ready(self) -> dict[str, Any]:
        """Wait until the kernel answers ``kernel_info`` and its iopub reaches us.

        Done when the ``idle`` status of one of our requests arrives on iopub: then the
        subscription is live and no status of the handshake is still in flight (it would
        otherwise flip the kernel's state to busy after it was reported idle). Returns the
        ``kernel_info_reply`` content. The caller bounds the wait with its timeout.
        """
        sock = self.socket(
            "shell", identity=f"kf-ready-{uuid.uuid4().hex[:8]}".encode(), eager=True
        )
        loop = asyncio.get_running_loop()
        patience = 0.05  # doubled on each miss, up to 1 s: a loaded machine delivers late
        try:
            if self._iopub_joined is not None:
                # a request sent before the subscriber joined would have its idle lost
                await asyncio.wait([self._iopub_joined])
            while True:
                msg = self.session.msg("kernel_info_request", {})
                msg_id = msg["header"]["msg_id"]
                idle: asyncio.Future[None] = loop.create_future()
                self._idle_waiters[msg_id] = idle
                try:
                    await sock.send_multipart(self.session.serialize(msg))
                    while True:
                        reply = parse_kernel_message(
                            self.session, "shell", await sock.recv_multipart()
                        )
                        if reply.parent_msg_id() == msg_id:
                            break
                    # If the subscription was not live yet, the idle never comes: ask again.
                    try:
                        await asyncio.wait_for(idle, patience)
                        return reply.content()
                    except TimeoutError:
                        patience = min(1.0, patience * 2)
                        continue
                finally:
                    self._idle_waiters.pop(msg_id, None)
        finally:
            sock.close(linger=0)


class ClientLink:
    """One client connection's own ZMQ side of a kernel, and the only owner of its sockets.

    It holds DEALER sockets for shell, control and stdin with identities of their own (shell
    and stdin share one: a kernel addresses ``input_request`` to the shell sender), one reader
    task per socket, and the connection's place among the kernel's iopub links. Replies and
    iopub messages go to the client's ``deliver`` directly (bound at construction: no call
    through the link on the data path); :meth:`send` takes client-sent parts to the kernel.
    After a kernel restart (:meth:`KernelChannels.reset`) the link reconnects its sockets
    itself. *label* names the connection in log lines (the kernel id).
    """

    def __init__(
        self, channels: KernelChannels, client: Client, *, session_id: str, label: str
    ) -> None:
        self.session_id = session_id
        self.deliver: Callable[[KernelMessage], None] = client.deliver
        self.kernel_gone: Callable[[], None] = client.kernel_gone
        self._channels = channels
        self._label = label
        self._sockets: dict[str, zmq.asyncio.Socket] = {}
        self._readers: list[asyncio.Task[None]] = []
        self._stdin_ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed = False

    def open(self) -> list[KernelMessage]:
        """Connect the sockets and join the kernel's iopub; returns the iopub messages buffered
        for this session while it had no connection (to deliver first)."""
        self._open_sockets()
        return self._channels.attach(self)

    def delivered(self) -> None:
        """The client got its first message (for the failover bookkeeping)."""
        self._channels.confirm(self)

    def close(self, unsent: Iterable[KernelMessage] = ()) -> None:
        """Close the sockets and leave the iopub; *unsent* (what the client never got) is kept
        for the session's next connection."""
        if self._closed:
            return
        self._closed = True
        self._close_sockets()
        self._channels.detach(self, unsent)

    def channels_reset(self) -> None:
        """Reconnect after a kernel restart (its ports or keys may have changed)."""
        if not self._closed:
            self._close_sockets()
            self._open_sockets()

    async def send(self, channel: str, parts: list[bytes]) -> None:
        """Sign client-sent *parts* and send them on *channel* (shell, control or stdin).

        Shell traffic waits for the stdin socket's handshake (at most :data:`HANDSHAKE_WAIT`):
        until it is done the kernel does not know the stdin identity and would drop an
        ``input_request``. A message for a closed socket is dropped.
        """
        if channel == "shell" and not self._stdin_ready.done():
            await asyncio.wait({self._stdin_ready})
        sock = self._sockets.get(channel)
        if sock is None:
            return
        with contextlib.suppress(zmq.ZMQError):
            await sock.send_multipart(to_zmq(self._channels.session, parts))

    def _open_sockets(self) -> None:
        # Control gets an identity of its own, as jupyter_client's own channels allow.
        ident = f"{self.session_id or 'ws'}-{uuid.uuid4().hex[:8]}"
        identities = {"shell": ident, "stdin": ident, "control": f"{ident}-control"}
        handshake: list[asyncio.Future[None]] = []
        for channel, identity in identities.items():
            sock = self._channels.socket(
                channel,
                identity=identity.encode(),
                handshake=handshake if channel == "stdin" else None,
            )
            self._sockets[channel] = sock
            self._readers.append(
                asyncio.create_task(self._read(channel, sock), name=f"ws-{channel}-reader")
            )
        self._stdin_ready = handshake[0]

    def _close_sockets(self) -> None:
        self._stdin_ready.cancel()
        for task in self._readers:
            task.cancel()
        self._readers.clear()
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()

    async def _read(self, channel: str, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            try:
                self.deliver(parse_kernel_message(self._channels.session, channel, frames))
            except WireError as exc:
                log.warning("kernel %s: dropping %s message: %s", self._label, channel, exc)
            except Exception:  # never let one message end this connection's channel
                log.exception("kernel %s: %s message not delivered", self._label, channel)
