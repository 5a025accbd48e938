"""The response listener: where launchers that SSH cannot reach send their connection info.

A kernel in a YARN container, a pod or a Docker container has no SSH channel back like the host
agent's. Its launcher (``launchers/kernel_launcher.py``) sends the connection info to this one
TCP port instead, sealed (ChaCha20-Poly1305) with a key the gateway gave that one launch through
the kernel's environment. The wire format is defined by the sending side,
``launchers/respond.py`` (standard library only); its constants are imported from there.

Who calls what: a provisioner calls ``registration = await (await get_listener()).expect(
kernel_id, deadline)``, puts ``registration.env`` into the kernel's environment, submits the
kernel, then ``info = await registration.wait()``, and leaves the registration (``with``, or
:meth:`Registration.cancel`) when the launch is done or abandoned.

Untrusted input: frames are parsed by pure functions (:func:`body_length`, :func:`parse_frame`,
:func:`parse_payload`) that raise only :class:`FrameError`. A connection has ``read_timeout``
seconds for its one frame, at most ``max_connections`` are read at once (``busy`` beyond), and
each gets one reason line and is closed. Each refusal is logged once at WARNING with the peer
and the reason (a connection that sends nothing, like a TCP health check, only at DEBUG); keys
and plaintexts never are. A registration accepts exactly one authentic payload whose timestamp
is within ``max_clock_skew`` of our clock; accepted nonces are remembered (bounded), so a replay
is ``replayed`` even after the registration is gone. An authentic but invalid payload is refused
without failing the launch (its sender learns why from the answer); a sealed ``{"error": ...}``
report fails the launch at once. ``unknown_kernel`` vs ``auth_failed`` only tells whether a
kernel id is launching now: kernel ids are not secrets, keys are.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
import weakref
from collections import OrderedDict
from typing import Any

from traitlets import Float, Int, TraitError, Unicode, validate
from traitlets.config import Configurable, LoggingConfigurable

from kernelfleet.config import option, with_env_defaults
from kernelfleet.errors import Conflict, LaunchFailed, LaunchTimeout
from kernelfleet.launchers import respond as wire
from kernelfleet.transport.frames import (  # noqa: F401 - the listener's API names them
    KERNEL_ID,
    PORT_NAMES,
    ConnectionInfo,
    FailureReport,
    Frame,
    FrameError,
    Reason,
    body_length,
    format_address,
    open_frame,
    parse_frame,
    parse_payload,
)

log = logging.getLogger(__name__)


#: Accepted nonces remembered for replay detection, at most.
REPLAY_CACHE_SIZE = 4096
#: Seconds the answer to a launcher may take to go out before the connection is dropped.
ANSWER_TIMEOUT = 2.0


# -- registrations -------------------------------------------------------------------------------
class Registration:
    """One launch waiting for its connection info (made by :meth:`ResponseListener.expect`)."""

    def __init__(self, listener: ResponseListener, kernel_id: str, deadline: float | None):
        loop = asyncio.get_running_loop()
        self.kernel_id = kernel_id
        self.key = secrets.token_bytes(wire.KEY_SIZE)
        #: The address the accepted payload came from.
        self.peer: str | None = None
        self._listener = listener
        self._future: asyncio.Future[ConnectionInfo] = loop.create_future()
        self._future.add_done_callback(_retrieve)
        self._timer = None if deadline is None else loop.call_at(deadline, self._expire)
        self._started = loop.time()

    def __repr__(self) -> str:  # never show the key
        return f"Registration(kernel_id={self.kernel_id!r}, done={self.done})"

    @property
    def env(self) -> dict[str, str]:
        """The variables the launcher reads: pass them in the kernel's environment only."""
        return {
            wire.ADDRESS_ENV: self._listener.advertised_address,
            wire.KEY_ENV: base64.b64encode(self.key).decode("ascii"),
            wire.KERNEL_ID_ENV: self.kernel_id,
        }

    @property
    def done(self) -> bool:
        return self._future.done()

    async def wait(self) -> ConnectionInfo:
        """The connection info, once a valid payload arrived. Raises :class:`LaunchTimeout`
        past the deadline, :class:`LaunchFailed` when the launcher reported a failure or the
        registration was cancelled. Cancelling the waiter leaves the registration open."""
        return await asyncio.shield(self._future)

    def cancel(self) -> None:
        """Stop accepting payloads for this launch (idempotent); waiters get LaunchFailed."""
        self._fail(LaunchFailed(f"the launch of kernel {self.kernel_id} was cancelled"))
        self._listener._forget(self)

    def __enter__(self) -> Registration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def _resolve(self, info: ConnectionInfo, peer: str) -> None:
        self.peer = peer
        if self._timer is not None:
            self._timer.cancel()
        self._future.set_result(info)

    def _fail(self, exc: Exception) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self._future.done():
            self._future.set_exception(exc)

    def _expire(self) -> None:
        waited = asyncio.get_running_loop().time() - self._started
        self._fail(
            LaunchTimeout(
                f"kernel {self.kernel_id} did not send its connection info within "
                f"{waited:.0f} s; check the kernel's log on its backend, and that it can reach "
                f"{self._listener.advertised_address} (KF_RESPONSE_ADDRESS)"
            )
        )
        self._listener._forget(self)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


# -- the listener ------------------------------------------------------------------------------
class ResponseListener(LoggingConfigurable):
    """One TCP port that receives every launcher's sealed connection info (see the module
    docstring). Get the running loop's with :func:`get_listener`."""

    ip = option(
        Unicode(
            "0.0.0.0",
            help="""Address the response listener binds; launchers in YARN containers, pods
            and Docker containers connect to it. Default: 0.0.0.0 (every interface).""",
        ),
        "KF_RESPONSE_IP",
    )
    port = option(
        Int(
            8877,
            help="""TCP port of the response listener (0: any free port). Fix it when a
            firewall or NAT sits between kernels and the gateway. Default: 8877.""",
        ),
        "KF_RESPONSE_PORT",
    )
    address = option(
        Unicode(
            "",
            help="""host:port launchers are told to connect to, when not the bound address
            (a gateway behind NAT or in a container). Default: the bound address (this
            machine's first public IP when bound to every interface).""",
        ),
        "KF_RESPONSE_ADDRESS",
    )
    read_timeout = option(
        Float(5.0, help="Seconds a launcher has to send its whole frame. Default: 5."),
        "KF_RESPONSE_READ_TIMEOUT",
    )
    max_connections = option(
        Int(64, help="Connections read at once; more are answered 'busy'. Default: 64."),
        "KF_RESPONSE_MAX_CONNECTIONS",
    )
    max_clock_skew = option(
        Float(120.0, help="Seconds a payload's timestamp may be off our clock. Default: 120."),
        "KF_RESPONSE_MAX_CLOCK_SKEW",
    )

    @validate("port")
    def _valid_port(self, proposal: dict[str, Any]) -> int:
        value = int(proposal["value"])
        if not 0 <= value <= 65535:
            raise TraitError(f"response port {value} is not in 0..65535")
        return value

    @validate("address")
    def _valid_address(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"]).strip()
        if value:
            try:
                wire.split_address(value)
            except ValueError as exc:
                raise TraitError(f"KF_RESPONSE_ADDRESS: {exc}") from None
        return value

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._server: asyncio.Server | None = None
        self._start_lock = asyncio.Lock()
        self._advertised = ""
        self._registrations: dict[str, Registration] = {}
        self._accepted: OrderedDict[bytes, float] = OrderedDict()
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._reading = 0

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and serve (once; later calls return at once). Raises :class:`LaunchFailed`
        naming the address when the port cannot be bound."""
        async with self._start_lock:
            if self._server is not None:
                return
            try:
                server = await asyncio.start_server(self._serve, self.ip or None, self.port)
            except OSError as exc:
                raise LaunchFailed(
                    f"the response listener cannot listen on {self.ip}:{self.port}: "
                    f"{exc.strerror or exc}; set KF_RESPONSE_IP / KF_RESPONSE_PORT"
                ) from exc
            self._server = server
            host, port = self.bound_address
            self._advertised = self._advertise(host, port)
            log.info("response listener on %s, advertised as %s", host, self._advertised)

    def _advertise(self, host: str, port: int) -> str:
        if self.address:
            return self.address
        if host in ("0.0.0.0", "::", ""):
            from jupyter_client.localinterfaces import public_ips

            ips = public_ips()
            host = ips[0] if ips else "127.0.0.1"
        return format_address(host, port)

    @property
    def bound_address(self) -> tuple[str, int]:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the response listener is not started")
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    @property
    def advertised_address(self) -> str:
        """``host:port`` launchers connect to (``KF_RESPONSE_ADDRESS`` in their env)."""
        if not self._advertised:
            raise RuntimeError("the response listener is not started")
        return self._advertised

    async def close(self) -> None:
        """Stop listening, drop every open connection and fail every pending registration."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        # Aborting the connections ends their handlers (their reads end); cancelling them
        # instead would make Python 3.11's stream machinery log the cancellation as an error.
        for writer in self._connections.values():
            writer.transport.abort()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=ANSWER_TIMEOUT)
        if server is not None:
            await server.wait_closed()
        for registration in list(self._registrations.values()):
            registration._fail(LaunchFailed("the gateway's response listener was closed"))
        self._registrations.clear()

    # -- registrations ------------------------------------------------------------------------
    async def expect(self, kernel_id: str, deadline: float | None = None) -> Registration:
        """Register a launch of *kernel_id* and give it a fresh key. *deadline* is a time of
        the event loop's clock (as ``asyncio.timeout_at`` takes it): past it, ``wait()``
        raises :class:`LaunchTimeout` and payloads are refused. Raises :class:`Conflict`
        while another registration of the same kernel waits (cancel it first)."""
        if not KERNEL_ID.fullmatch(kernel_id):
            raise ValueError(f"kernel id {kernel_id!r} cannot be registered")
        await self.start()
        current = self._registrations.get(kernel_id)
        if current is not None and not current.done:
            raise Conflict(f"kernel {kernel_id} is already waiting for its connection info")
        registration = Registration(self, kernel_id, deadline)
        self._registrations[kernel_id] = registration
        return registration

    def _forget(self, registration: Registration) -> None:
        if self._registrations.get(registration.kernel_id) is registration:
            del self._registrations[registration.kernel_id]

    # -- frames -------------------------------------------------------------------------------
    def receive(self, data: bytes, peer: str) -> Reason:
        """Judge one complete frame from *peer* and act on it (no I/O, no await, so two
        frames cannot both be accepted). Logs a rejection; returns the answer."""
        try:
            frame = parse_frame(data)
            return self._consider(frame, peer)
        except FrameError as exc:
            self._rejected(peer, exc.reason, exc.detail)
            return exc.reason

    def _consider(self, frame: Frame, peer: str) -> Reason:
        if frame.nonce in self._accepted:
            raise FrameError(Reason.REPLAYED, f"replay of an accepted frame for {frame.kernel_id}")
        registration = self._registrations.get(frame.kernel_id)
        if registration is None:
            raise FrameError(Reason.UNKNOWN_KERNEL, f"no launch of {frame.kernel_id} is waiting")
        plaintext = open_frame(frame, registration.key)
        if registration.done:
            raise FrameError(Reason.DUPLICATE, f"{frame.kernel_id} has its answer already")
        payload = parse_payload(plaintext)
        if isinstance(payload, FailureReport):
            skew = time.time() - payload.timestamp
        else:
            skew = time.time() - payload["timestamp"]
        if abs(skew) > self.max_clock_skew:
            raise FrameError(
                Reason.STALE,
                f"the payload of {frame.kernel_id} is {skew:+.0f} s off the gateway's clock "
                f"(max {self.max_clock_skew:g} s): a replay, or the host's clock is wrong",
            )
        self._remember(frame.nonce)
        if isinstance(payload, FailureReport):
            message = f"the launcher of kernel {frame.kernel_id} failed: {payload.message}"
            log.warning("%s (from %s)", message, peer)
            registration._fail(LaunchFailed(message))
            return Reason.OK
        if payload["ip"] in ("0.0.0.0", "::"):
            payload["ip"] = peer
        log.info("connection info of kernel %s arrived from %s", frame.kernel_id, peer)
        registration._resolve(payload, peer)
        return Reason.OK

    def _remember(self, nonce: bytes) -> None:
        now = time.monotonic()
        horizon = now - 2 * self.max_clock_skew - 60
        while self._accepted and (
            len(self._accepted) >= REPLAY_CACHE_SIZE
            or next(iter(self._accepted.values())) < horizon
        ):
            self._accepted.popitem(last=False)
        self._accepted[nonce] = now

    def _rejected(self, peer: str, reason: Reason, detail: str) -> None:
        log.warning("response listener refused a frame from %s: %s (%s)", peer, reason, detail)

    # -- connections --------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else "unknown"
        try:
            if self._reading >= self.max_connections:
                self._rejected(peer, Reason.BUSY, f"{self._reading} connections are being read")
                writer.write(b"busy\n")  # at once, unread input and all: a launcher retries
                return
            self._reading += 1
            try:
                reason = await self._read_frame(reader, peer)
            finally:
                self._reading -= 1
            await _answer(reader, writer, reason)
        except Exception:  # a bug must not take the listener down; report it
            log.exception("response listener: error serving %s", peer)
        finally:
            del self._connections[task]
            writer.close()

    async def _read_frame(self, reader: asyncio.StreamReader, peer: str) -> Reason:
        data = b""
        try:
            async with asyncio.timeout(self.read_timeout):
                data = await reader.readexactly(wire.HEADER_SIZE)
                data += await reader.readexactly(body_length(data))
        except FrameError as exc:
            self._rejected(peer, exc.reason, exc.detail)
            return exc.reason
        except asyncio.IncompleteReadError as exc:
            if not data and not exc.partial:
                log.debug("response listener: %s closed without sending a frame", peer)
            else:
                self._rejected(peer, Reason.TRUNCATED, f"closed after {len(data + exc.partial)} B")
            return Reason.TRUNCATED
        except TimeoutError:
            self._rejected(peer, Reason.TIMEOUT, f"no whole frame in {self.read_timeout:g} s")
            return Reason.TIMEOUT
        except OSError as exc:
            self._rejected(peer, Reason.TRUNCATED, f"connection failed: {exc}")
            return Reason.TRUNCATED
        return self.receive(data, peer)


async def _answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reason: Reason
) -> None:
    """Write the reason line, then read what the sender still sends (a bounded amount, for
    :data:`ANSWER_TIMEOUT` at most) until it closes: closing with unread input would reset the
    connection and could destroy the answer before the launcher reads it."""
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            writer.write(reason.value.encode("ascii") + b"\n")
            writer.write_eof()
            await writer.drain()
            await reader.read(wire.HEADER_SIZE + wire.MAX_BODY)
            await reader.read(wire.HEADER_SIZE + wire.MAX_BODY)
    except (OSError, TimeoutError):
        writer.transport.abort()


# -- one listener per event loop ---------------------------------------------------------------
_LISTENERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ResponseListener] = (
    weakref.WeakKeyDictionary()
)


async def get_listener(parent: Configurable | None = None) -> ResponseListener:
    """The running loop's listener, created (from *parent*'s config and the ``KF_RESPONSE_*``
    environment) and started on first use; later calls ignore *parent*. Raises
    :class:`LaunchFailed` when it cannot bind (the next call tries again)."""
    loop = asyncio.get_running_loop()
    listener = _LISTENERS.get(loop)
    if listener is None:
        kwargs: dict[str, Any] = {} if parent is None else {"parent": parent}
        listener = _LISTENERS[loop] = ResponseListener(
            **with_env_defaults(ResponseListener, kwargs)
        )
    await listener.start()
    return listener


async def close_listener() -> None:
    """Close the running loop's listener, if it has one (gateway stop)."""
    listener = _LISTENERS.pop(asyncio.get_running_loop(), None)
    if listener is not None:
        await listener.close()


async def reset_listeners() -> None:
    """Close the running loop's listener and forget every listener (test seam)."""
    listener = _LISTENERS.pop(asyncio.get_running_loop(), None)
    _LISTENERS.clear()
    if listener is not None:
        await listener.close()
