"""One host agent running over one asyncssh connection: open it, send requests, get events.

The connection carries exactly one SSH session (the agent's), whatever the number of kernels on
the host, so sshd's ``MaxSessions`` never limits us and no login happens per launch, poll or
signal. Replies are matched to requests by id; ``exit`` events go to a callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncssh

from kernelfleet.transport.protocol import AGENT_VERSION, bootstrap_command, source_line

log = logging.getLogger(__name__)

STDERR_KEEP = 4000


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to reach one host. Equal targets share one connection."""

    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None
    agent_python: str = "python3"
    connect_timeout: float = 5.0
    keepalive_interval: float = 2.0
    keepalive_count_max: int = 2

    def describe(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}"

    def connect_options(self, *, keepalive: bool = True) -> dict[str, Any]:
        """``asyncssh.connect`` options for this target (host keys always verified)."""
        options: dict[str, Any] = {
            "port": self.port,
            "connect_timeout": self.connect_timeout,
            "known_hosts": self.known_hosts or (),
        }
        if keepalive:
            options["keepalive_interval"] = self.keepalive_interval
            options["keepalive_count_max"] = self.keepalive_count_max
        if self.user:
            options["username"] = self.user
        if self.key_file:
            options["client_keys"] = [self.key_file]
            options["agent_path"] = None
        return options


def parse_line(line: bytes) -> dict[str, Any] | None:
    """One line the agent wrote, as a JSON object; None for anything else (not JSON, not an
    object, nested too deep for the parser), which the caller drops."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) else None


class HostDown(Exception):
    """The host cannot be reached, or its agent cannot run. ``reason`` is user-presentable."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


class AgentRequestError(Exception):
    """The agent refused or failed a request (``kind`` is the agent's error class)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def describe_connect_error(target: SSHTarget, exc: BaseException) -> str:
    """A message for a failed SSH connection that says what to do about it."""
    known_hosts = target.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return (
            f"the SSH host key of {target.host} is unknown or has changed ({exc.reason}); "
            f"if the host is genuine, add its key to {known_hosts} "
            f"(ssh-keyscan -p {target.port} {target.host} >> {known_hosts}) or point "
            "KF_SSH_KNOWN_HOSTS at a file that has it"
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return (
            f"SSH login as {target.user or 'the current user'} was refused "
            "(check KF_SSH_USER and KF_SSH_KEY)"
        )
    if isinstance(exc, asyncssh.DisconnectError):
        return f"SSH connection closed: {exc.reason}"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return f"no SSH answer within {target.connect_timeout:g} s"
    if isinstance(exc, OSError):
        return f"cannot connect to port {target.port}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


class AgentClient:
    """The gateway's end of one agent process."""

    def __init__(
        self,
        target: SSHTarget,
        conn: asyncssh.SSHClientConnection,
        process: asyncssh.SSHClientProcess[bytes],
        hello: dict[str, Any],
        on_event: Callable[[dict[str, Any]], None],
    ):
        self.target = target
        self.hello = hello
        self._conn = conn
        self._process = process
        self._on_event = on_event
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._stderr = bytearray()
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._tasks = [
            asyncio.create_task(self._read_replies()),
            asyncio.create_task(self._read_stderr()),
        ]

    @property
    def ip(self) -> str | None:
        """The host address the SSH connection reached (the agent's view of it)."""
        ip = self.hello.get("ip")
        return ip if isinstance(ip, str) else None

    @property
    def hostname(self) -> str:
        return str(self.hello.get("hostname", ""))

    @property
    def is_open(self) -> bool:
        return not self.closed.done()

    @classmethod
    async def open(
        cls, target: SSHTarget, on_event: Callable[[dict[str, Any]], None]
    ) -> AgentClient:
        """Connect to *target*, start the agent and wait for its hello.

        Raises :class:`HostDown` with a presentable reason on any failure.
        """
        options = target.connect_options()
        conn: asyncssh.SSHClientConnection | None = None
        try:
            async with asyncio.timeout(target.connect_timeout * 2):
                conn = await asyncssh.connect(target.host, **options)
                process = await conn.create_process(
                    bootstrap_command(target.agent_python), encoding=None
                )
                process.stdin.write(source_line())
                line = await process.stdout.readline()
        except asyncio.CancelledError:
            if conn is not None:
                conn.abort()
            raise
        except Exception as exc:
            if conn is not None:
                conn.abort()
            raise HostDown(target.host, describe_connect_error(target, exc)) from exc
        hello = parse_line(line) if line else None
        if hello is None or hello.get("event") != "hello":
            stderr = b""
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    stderr = await process.stderr.read(STDERR_KEEP)
            conn.abort()
            detail = stderr.decode("utf-8", "replace").strip() or "no output"
            raise HostDown(
                target.host,
                f"the kernelfleet agent did not start with {target.agent_python!r} "
                f"(set KF_AGENT_PYTHON to a Python 3.9+ on the host): {detail}",
            )
        if hello.get("version") != AGENT_VERSION:
            conn.abort()
            raise HostDown(
                target.host,
                f"agent version {hello.get('version')!r} does not match the gateway's "
                f"{AGENT_VERSION!r}",
            )
        if hello.get("error"):
            conn.abort()
            raise HostDown(
                target.host, f"the agent cannot use its state directory: {hello['error']}"
            )
        if not isinstance(hello.get("kernels", {}), dict):
            conn.abort()
            raise HostDown(target.host, "the agent's hello does not list its kernels as an object")
        return cls(target, conn, process, hello, on_event)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and await its reply (cancellable; the reply is then dropped)."""
        if self.closed.done():
            raise HostDown(self.target.host, self.closed.result())
        self._next_id += 1
        rid = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            message = {"id": rid, "op": op, **fields}
            try:
                self._process.stdin.write((json.dumps(message) + "\n").encode())
            except (OSError, asyncssh.Error) as exc:
                raise HostDown(self.target.host, f"the SSH channel is closed ({exc})") from exc
            reply = await future
        finally:
            self._pending.pop(rid, None)
        if not reply.get("ok"):
            error = reply.get("error") or {}
            if not isinstance(error, dict):
                error = {"kind": "protocol", "message": f"malformed error reply {error!r:.200}"}
            raise AgentRequestError(str(error.get("kind", "")), str(error.get("message", "")))
        return reply

    async def _read_replies(self) -> None:
        reason = "the SSH connection closed"
        try:
            while True:
                line = await self._process.stdout.readline()
                if not line:
                    break
                message = parse_line(line)
                if message is None:
                    log.warning("agent on %s sent a malformed line", self.target.host)
                    continue
                rid = message.get("id")
                if rid is not None:
                    # ids are the ints we sent (not True for 1, and a list is no key)
                    future = self._pending.get(rid) if type(rid) is int else None
                    if future is not None and not future.done():
                        future.set_result(message)
                elif message.get("event"):
                    try:
                        self._on_event(message)
                    except Exception:
                        log.exception("handling agent event from %s", self.target.host)
        except asyncio.CancelledError:
            reason = "the connection was closed by the gateway"
            raise
        except Exception as exc:
            reason = f"the SSH connection was lost ({type(exc).__name__}: {exc})"
        finally:
            self._finish(reason)

    async def _read_stderr(self) -> None:
        with contextlib.suppress(Exception):
            while chunk := await self._process.stderr.read(4096):
                self._stderr += chunk
                del self._stderr[:-STDERR_KEEP]

    def _finish(self, reason: str) -> None:
        stderr = self._stderr.decode("utf-8", "replace").strip()
        if stderr:
            reason = f"{reason}; agent said: {stderr[-500:]}"
        if not self.closed.done():
            self.closed.set_result(reason)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(HostDown(self.target.host, reason))
        self._conn.abort()

    async def close(self) -> None:
        """Close the connection; the agent exits, kernels keep running."""
        for task in self._tasks:
            task.cancel()
        self._conn.close()
        with contextlib.suppress(Exception):
            await self._conn.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)
