"""Ship a built kernel environment to SSH hosts: one archive, streamed, unpacked in place.

Every host is served at once over its own asyncssh connection (the same
:class:`~kernelfleet.transport.agent_client.SSHTarget` and SSH settings as ``hosts check`` and
``spec sync``). On each, one command runs: the receiver
(``kernelfleet/launchers/envrecv.py``, standard library only) under the agent's interpreter,
sent as ``python3 -I -c <source>`` the way the host probe is. Over that one channel:

1. the gateway writes a JSON line (destination, sha256, size, name);
2. the receiver answers ``cached`` when ``<dest>/.kf-env.json`` already records that sha256 -
   nothing more is sent - or ``send``;
3. the archive's bytes follow on the channel's stdin in 256 KiB chunks, unpacked by the host as
   they arrive (no copy of the archive is kept there) and hashed on the way;
4. the receiver checks sha256 and size, writes the marker last and renames its temp dir into
   place, then answers one JSON line.

Why a stream on the command's stdin and not SFTP: it needs no SFTP subsystem on the host, one
round trip decides "cached", and unpacking overlaps the transfer instead of following it.

Crash rules: a host that fails (no connection, no Python, a write it may not do, a full disk,
a checksum mismatch, a connection lost half-way) is reported in its :class:`HostShip` with the
cause and the fix; the others carry on. The receiver deletes its temp dir on every failure it
sees, and an SSH connection lost half-way reaches it as the end of its stdin (a size mismatch),
so nothing half-shipped is left. A destination with the marker is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

import asyncssh

from kernelfleet.errors import PublicError
from kernelfleet.launchers.envrecv import Refused, check_host_path
from kernelfleet.specs.hostcheck import connect_fix, python_command, ssh_options
from kernelfleet.transport.agent_client import SSHTarget, describe_connect_error, parse_line

#: (host, what happened) - called for every step worth showing: connected, cached, sent x of y
#: MB, done, failed.
Progress = Callable[[str, str], None]

CHUNK = 256 * 1024
#: Seconds a host may take to accept the next chunk, or to answer, before it is failed.
STALL_SECONDS = 60.0
#: Seconds the receiver may take after the last byte (drain, checksum, marker, rename).
FINISH_SECONDS = 300.0
PROGRESS_STEPS = 10


@dataclass(frozen=True)
class HostShip:
    """One host's outcome of a ship (or a remove).

    ``cached``: the host already had this archive (nothing was sent); for a remove, the
    directory was already absent. ``bytes_sent``: archive bytes written to the host.
    ``error``: empty when ``ok``; otherwise what failed, then ``fix:`` and what to do.
    """

    host: str
    ok: bool
    cached: bool
    seconds: float
    bytes_sent: int
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "ok": self.ok,
            "cached": self.cached,
            "seconds": round(self.seconds, 3),
            "bytes_sent": self.bytes_sent,
            "error": self.error,
        }


class _HostFailed(Exception):
    def __init__(self, cause: str, fix: str, bytes_sent: int = 0):
        super().__init__(f"{cause}; fix: {fix}")
        self.text = f"{cause}; fix: {fix}"
        self.bytes_sent = bytes_sent


@functools.cache
def receiver_source() -> str:
    return resources.files("kernelfleet.launchers").joinpath("envrecv.py").read_text("utf-8")


def receiver_command(target: SSHTarget) -> str:
    """The fixed command line that runs the receiver on *target* (parameters go on stdin)."""
    return python_command(target.agent_python, receiver_source())


def _checked_path(path: str) -> str:
    try:
        return check_host_path(path)
    except Refused as exc:
        raise PublicError(f"cannot ship to {path!r}: {exc.message}", status=400) from None


# -- connection ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _connection(target: SSHTarget) -> AsyncIterator[asyncssh.SSHClientConnection]:
    try:
        async with asyncio.timeout(target.connect_timeout * 2):
            conn = await asyncssh.connect(target.host, **ssh_options(target))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise _HostFailed(
            describe_connect_error(target, exc), connect_fix(target, exc, "~/.ssh/known_hosts")
        ) from exc
    try:
        yield conn
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await conn.wait_closed()


async def _start_receiver(
    conn: asyncssh.SSHClientConnection, target: SSHTarget, request: dict[str, Any]
) -> asyncssh.SSHClientProcess[bytes]:
    process: asyncssh.SSHClientProcess[bytes] = await conn.create_process(
        receiver_command(target), encoding=None
    )
    process.stdin.write(json.dumps(request).encode() + b"\n")
    return process


async def _answer(process: asyncssh.SSHClientProcess[bytes], target: SSHTarget) -> dict[str, Any]:
    """The receiver's next JSON line (lines a login script prints are skipped); a missing one
    is explained from its exit and stderr."""
    while line := await process.stdout.readline():
        answer = parse_line(line)
        if answer is not None:
            return answer
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await process.wait_closed()
    err = b""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1):
            err = await process.stderr.read()
    status = process.exit_status
    if status is None and process.exit_signal is None:
        raise _HostFailed(
            f"the SSH connection to {target.host} broke before the receiver answered",
            f"check that {target.host} is up and reachable, then try again",
        )
    text = err.decode("utf-8", "replace").strip()[-300:] or f"exit status {status}"
    if status in (126, 127) or "SyntaxError" in text or "Unknown option" in text:
        raise _HostFailed(  # missing, or older than the receiver's Python 3.8
            f"{target.agent_python} does not run the receiver on {target.host}: {text}",
            f"install Python 3.8+ on {target.host} or set KF_AGENT_PYTHON to one",
        )
    raise _HostFailed(
        f"the receiver on {target.host} ended without an answer: {text}",
        "ship again; if it fails the same way, run 'kernelfleet hosts check' for the host",
    )


def _refusal(answer: dict[str, Any], target: SSHTarget, path: str, size: int) -> _HostFailed:
    """The host's ``{"ok": false}`` answer as a cause and a fix."""
    kind = str(answer.get("kind") or "")
    error = str(answer.get("error") or "no reason given")
    host = target.host
    parent = path.rsplit("/", 1)[0] or "/"
    cause = error
    if kind == "checksum":
        fix = (
            "the archive changed in transit or on this machine since it was built: rebuild the "
            "environment (which writes a fresh archive and checksum) and ship again"
        )
    elif kind in ("unsafe", "archive"):
        fix = "the archive is not one kernelfleet built: rebuild the environment and ship again"
    elif kind == "foreign":
        fix = f"move the foreign files out of {path} on {host}, then remove again"
    elif kind == "os" and answer.get("errno") in ("EACCES", "EPERM", "EROFS"):
        fix = (
            f"let the SSH user {target.user or '(current user)'} write {parent} on {host} "
            "(create it and chown it), or point KF_ENV_HOST_ROOT at a directory it may write"
        )
    elif kind == "os" and answer.get("errno") in ("ENOSPC", "EDQUOT"):
        fix = f"free at least {size * 4 / 1e6:.0f} MB on the filesystem of {parent} on {host}"
    elif kind == "request":
        fix = "this is a kernelfleet bug: report it with this message"
    else:
        fix = f"check {parent} on {host} and ship again"
    return _HostFailed(cause, fix)


# -- ship ----------------------------------------------------------------------------------------


@dataclass
class _Upload:
    """The archive's bytes on their way to one host's receiver (stdin, then EOF)."""

    process: asyncssh.SSHClientProcess[bytes]
    archive: Path
    size: int
    host: str
    progress: Progress
    sent: int = 0

    def _local_failure(self, exc: OSError) -> _HostFailed:
        return _HostFailed(
            f"reading the archive {self.archive} on this machine failed: {exc}",
            "rebuild the environment, then ship again",
            self.sent,
        )

    async def _read(self, f: BinaryIO) -> bytes:
        try:
            return await asyncio.to_thread(f.read, CHUNK)
        except OSError as exc:
            raise self._local_failure(exc) from exc

    async def run(self) -> None:
        step = max(self.size // PROGRESS_STEPS, 1)
        next_report = step
        try:
            f: BinaryIO = await asyncio.to_thread(self.archive.open, "rb")
        except OSError as exc:
            raise self._local_failure(exc) from exc
        try:
            while chunk := await self._read(f):
                self.process.stdin.write(chunk)
                async with asyncio.timeout(STALL_SECONDS):
                    await self.process.stdin.drain()
                self.sent += len(chunk)
                if next_report <= self.sent < self.size:
                    self.progress(
                        self.host, f"sent {self.sent / 1e6:.1f} of {self.size / 1e6:.1f} MB"
                    )
                    next_report += step
        finally:
            f.close()
        self.process.stdin.write_eof()


async def _transfer(
    conn: asyncssh.SSHClientConnection,
    target: SSHTarget,
    archive: Path,
    request: dict[str, Any],
    progress: Progress,
) -> tuple[bool, int]:
    """(cached, bytes sent) after the receiver's success answer; :class:`_HostFailed` else."""
    host, size, dest = target.host, int(request["size"]), str(request["dest"])
    process = await _start_receiver(conn, target, request)
    try:
        async with asyncio.timeout(STALL_SECONDS):
            first = await _answer(process, target)
        if first.get("ok") is True and first.get("status") == "cached":
            return True, 0
        if first.get("status") != "send":
            raise _refusal(first, target, dest, size)
        progress(host, f"sending {size / 1e6:.1f} MB")
        upload = _Upload(process, archive, size, host, progress)
        sender = asyncio.create_task(upload.run())
        reply = asyncio.create_task(_answer(process, target))
        try:
            await asyncio.wait({sender, reply}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done() and not reply.done() and sender.exception() is not None:
                # Sent, or the channel broke: the receiver's answer says how it ended.
                exc = sender.exception()
                if isinstance(exc, (_HostFailed, TimeoutError)):
                    raise exc
            async with asyncio.timeout(FINISH_SECONDS):
                answer = await reply
        except _HostFailed as exc:
            exc.bytes_sent = upload.sent
            raise
        except TimeoutError as exc:
            where = f"{upload.sent / 1e6:.1f} of {size / 1e6:.1f} MB sent"
            stalled = not sender.done() or upload.sent < size
            raise _HostFailed(
                f"{host} took no data for {STALL_SECONDS:g} s ({where})"
                if stalled
                else f"{host} did not finish unpacking within {FINISH_SECONDS:g} s",
                f"check the disk and load of {host}, then ship again",
                upload.sent,
            ) from exc
        except (asyncssh.Error, OSError) as exc:  # ConnectionLost, BrokenPipeError, ...
            where = f"{upload.sent / 1e6:.1f} of {size / 1e6:.1f} MB sent"
            raise _HostFailed(
                f"the SSH connection to {host} broke ({where}): {exc}",
                f"check that {host} is up and reachable, then ship again (the host deletes "
                "what it had received)",
                upload.sent,
            ) from exc
        finally:
            for task in (sender, reply):
                if not task.done():
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if answer.get("ok") is not True:
            failed = _refusal(answer, target, dest, size)
            failed.bytes_sent = upload.sent
            raise failed
        return answer.get("status") == "cached", upload.sent
    finally:
        process.close()


async def _ship_one(
    archive: Path, request: dict[str, Any], target: SSHTarget, progress: Progress
) -> HostShip:
    host = target.host
    started = time.monotonic()
    try:
        async with _connection(target) as conn:
            progress(host, "connected")
            cached, sent = await _transfer(conn, target, archive, request, progress)
    except asyncio.CancelledError:
        raise
    except _HostFailed as exc:
        progress(host, f"failed: {exc.text}")
        return HostShip(host, False, False, time.monotonic() - started, exc.bytes_sent, exc.text)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}; fix: ship again (the host kept nothing half-shipped)"
        progress(host, f"failed: {text}")
        return HostShip(host, False, False, time.monotonic() - started, 0, text)
    seconds = time.monotonic() - started
    progress(host, "cached" if cached else f"done: {sent / 1e6:.1f} MB in {seconds:.2f} s")
    return HostShip(host, True, cached, seconds, sent)


async def ship_to_hosts(
    archive: Path,
    sha256: str,
    dest: str,
    targets: Sequence[SSHTarget],
    *,
    progress: Progress,
) -> list[HostShip]:
    """Make ``dest`` (``<host_root>/<name>/<digest12>``, an absolute path on the hosts) hold the
    environment of *archive* on every target, all at once; results in the order of *targets*.

    A host whose ``dest`` already records *sha256* is ``cached`` (no bytes sent). Never raises
    for a host's problem: each failure is a :class:`HostShip` with ``ok`` false and ``error``.
    Raises :class:`PublicError` if *dest* is not an absolute, normalized path or *archive* is
    missing (nothing is sent anywhere then).
    """
    dest = _checked_path(dest)
    try:
        size = (await asyncio.to_thread(archive.stat)).st_size
    except OSError as exc:
        raise PublicError(
            f"the environment archive {archive} cannot be read ({exc.strerror}): rebuild the "
            "environment"
        ) from exc
    request = {
        "op": "ship",
        "dest": dest,
        "sha256": sha256,
        "size": size,
        "name": dest.rsplit("/", 2)[-2],
    }
    return list(await asyncio.gather(*(_ship_one(archive, request, t, progress) for t in targets)))


# -- remove --------------------------------------------------------------------------------------


async def _remove_one(path: str, target: SSHTarget) -> HostShip:
    host = target.host
    started = time.monotonic()
    try:
        async with _connection(target) as conn:
            process = await _start_receiver(conn, target, {"op": "remove", "path": path})
            try:
                process.stdin.write_eof()
                async with asyncio.timeout(FINISH_SECONDS):
                    answer = await _answer(process, target)
            finally:
                process.close()
            if answer.get("ok") is not True:
                raise _refusal(answer, target, path, 0)
    except asyncio.CancelledError:
        raise
    except _HostFailed as exc:
        return HostShip(host, False, False, time.monotonic() - started, 0, exc.text)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}; fix: remove again"
        return HostShip(host, False, False, time.monotonic() - started, 0, text)
    absent = answer.get("status") == "absent"
    return HostShip(host, True, absent, time.monotonic() - started, 0)


async def remove_from_hosts(dest_parent: str, targets: Sequence[SSHTarget]) -> list[HostShip]:
    """Delete ``dest_parent`` on every target, all at once: ``<host_root>/<name>`` (every
    shipped build of one environment) or ``<host_root>/<name>/<digest12>`` (one build).
    Results in the order of *targets*; a host where it is absent succeeds with ``cached``
    true. The host refuses if the directory holds anything but shipped environments (a
    mistyped root must not delete someone's files)."""
    path = _checked_path(dest_parent)
    return list(await asyncio.gather(*(_remove_one(path, t) for t in targets)))
