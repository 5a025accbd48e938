"""Running one build step (an sdist's build runs arbitrary code) away from the gateway.

:func:`run_sandboxed` runs a command line under a :class:`SandboxPolicy`:

- **as another user** (``policy.user``, e.g. ``nobody``; the gateway must be root): all of
  uid, gid and supplementary groups are dropped, with ``PR_SET_NO_NEW_PRIVS``, so no setuid
  program gives them back. The user cannot read the gateway's 0600 files (its store key) nor
  its ``/proc/<pid>/environ``;
- **with exactly the given environment** plus ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` (and
  their lower-case forms) naming the allow-list proxy, and ``NO_PROXY`` empty: nothing of the
  gateway's environment (its token, ``KF_*``) is inherited;
- **cut off from the network** (``policy.isolate_network``): the command runs in new network,
  PID and mount namespaces (``unshare --net --pid --fork --mount-proc``; with a user
  namespace when the gateway is not root). The namespace has only ``lo``; a forwarder on
  ``127.0.0.1:3128`` inside it (:mod:`kernelfleet.envs.sandbox_child`) carries each connection
  to the gateway's :class:`~kernelfleet.envs.proxy.AllowListProxy`, which connects only to
  ``policy.allowed_hosts`` — never to the gateway's own or loopback addresses unless named.
  Its ``/proc`` shows only the sandbox's processes. Without isolation the proxy listens on
  the gateway's ``127.0.0.1`` instead, and binds only programs that honour the proxy
  variables (pip and uv do);
- **with a deadline**: past *timeout* seconds the whole process group is killed — and with
  isolation the PID namespace, so a process that left the group (``setsid``) dies as well — and
  :class:`SandboxTimeout` says how to raise the limit. Whatever the build leaves running when it
  exits is killed too.

The caller prepares *cwd*: it must exist, be reachable (its parents searchable) by the build
user, and belong to it (``chown`` it and whatever the build writes into) — the sandbox does
not change ownership. Each line the command writes (stdout and stderr, merged; ANSI escapes
and control characters removed) goes to *on_line*, and so does each request the proxy refused,
prefixed ``sandbox proxy:``.

:func:`sandbox_problem` says, in one line (cause, then fix), why this machine cannot honour a
policy; :func:`run_sandboxed` raises :class:`SandboxError` with that line rather than run with
less. The first call probes ``unshare`` (a few milliseconds, blocking); a success is kept, a
failure re-probed after a minute.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kernelfleet.envs.proxy import AllowListProxy, ProxyRequestError
from kernelfleet.envs.sandbox_child import no_such_user
from kernelfleet.errors import PublicError

#: The port of the forwarder inside a build's network namespace (nothing else listens there).
FORWARD_PORT = 3128
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
CHILD = Path(__file__).with_name("sandbox_child.py")
#: The environment of ``unshare`` and the sandbox's first process (not the build's).
CHILD_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
#: Seconds to wait for the last output once the command exited.
DRAIN_SECONDS = 5.0
#: A line longer than this many characters is passed on in pieces.
MAX_LINE = 16 * 1024
#: ``unshare`` flags, best first: /proc of the sandbox's own, then without (some containers
#: forbid mounting proc).
_ISOLATION = (
    ("--net", "--pid", "--fork", "--kill-child", "--mount-proc"),
    ("--net", "--pid", "--fork", "--kill-child"),
)
_USERNS = ("--user", "--map-root-user")
#: Seconds a failed ``unshare`` probe is believed before it is tried again.
RETRY_PROBE_SECONDS = 60.0
_PROBED: dict[int, tuple[tuple[str, ...] | str, float]] = {}
_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_BREAK = re.compile(r"\r\n|\r|\n")


class SandboxError(PublicError):
    """The build could not run in the sandbox it was asked for (the message: cause, fix)."""

    status = 503
    reason = "Build Sandbox Unavailable"


class SandboxTimeout(SandboxError):
    status = 504
    reason = "Build Timeout"


@dataclass(frozen=True)
class SandboxPolicy:
    """How a build runs. *user*: an unprivileged account to run as (``None``: the gateway's
    own user, no switch). *allowed_hosts*: ``host`` or ``host:port`` entries the build may
    reach through the proxy (no port: 443 for HTTPS, 80 for plain HTTP). *isolate_network*: a
    network namespace whose only way out is that proxy."""

    user: str | None
    allowed_hosts: tuple[str, ...]
    isolate_network: bool


def clean_line(text: str) -> str:
    """*text* without ANSI escape sequences, other control characters and trailing blanks."""
    return _CONTROL.sub("", _ESCAPE.sub("", text)).rstrip()


class LineSplitter:
    """Turns a byte stream into lines for *on_line*: UTF-8 (invalid bytes replaced), split at
    LF, CRLF or a lone CR, cleaned with :func:`clean_line`, at most *limit* characters each."""

    def __init__(self, on_line: Callable[[str], None], limit: int = MAX_LINE):
        self.on_line = on_line
        self.limit = limit
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""
        self._skip_lf = False

    def feed(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if not text:
            return
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        if not text:
            return
        text = self._pending + text
        parts = _BREAK.split(text)
        self._pending = parts.pop()
        self._skip_lf = text.endswith("\r")
        for part in parts:
            self._emit(part)
        while len(self._pending) > self.limit:
            self._emit(self._pending[: self.limit])
            self._pending = self._pending[self.limit :]

    def close(self) -> None:
        """Pass on the last line, if the stream did not end with a line break."""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if rest:
            self._emit(rest)

    def _emit(self, part: str) -> None:
        line = clean_line(part)
        for start in range(0, max(len(line), 1), self.limit):
            self.on_line(line[start : start + self.limit])


def proxied_env(env: Mapping[str, str], port: int) -> dict[str, str]:
    """The build's whole environment: *env* and the proxy variables for ``127.0.0.1:port``."""
    url = f"http://127.0.0.1:{port}"
    result = dict(env)
    for name in PROXY_VARIABLES:
        result[name] = result[name.lower()] = url
    result["NO_PROXY"] = result["no_proxy"] = ""
    return result


def _user_problem(user: str) -> str | None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return no_such_user(user)
    if entry.pw_uid == 0:
        return f"The build user {user!r} is root: set KF_ENV_BUILD_USER to an unprivileged user."
    if os.geteuid() != 0:
        return (
            f"Builds run as the user {user!r}, but the gateway runs as uid {os.geteuid()}, not "
            "root, so it cannot switch users: run the gateway as root, or build as the "
            "gateway's own user."
        )
    return None


def _isolation(euid: int) -> tuple[str, ...] | str:
    """The ``unshare`` command line prefix that works here, or why none does. A prefix that
    worked is kept; a failure is probed again after :data:`RETRY_PROBE_SECONDS` (it may have
    been a passing shortage, e.g. of namespaces)."""
    known = _PROBED.get(euid)
    if known is not None and (
        not isinstance(known[0], str) or time.monotonic() - known[1] < RETRY_PROBE_SECONDS
    ):
        return known[0]
    result = _probe(euid)
    _PROBED[euid] = (result, time.monotonic())
    return result


def _probe(euid: int) -> tuple[str, ...] | str:
    unshare = shutil.which("unshare", path=CHILD_ENV["PATH"])
    if unshare is None:
        return (
            "unshare (util-linux) is not installed, so builds cannot get a network namespace "
            "of their own: install util-linux."
        )
    error = ""
    for flags in _ISOLATION:
        argv = (unshare, *(_USERNS if euid != 0 else ()), *flags)
        try:
            probe = subprocess.run(
                [*argv, "--", shutil.which("true", path=CHILD_ENV["PATH"]) or "/bin/true"],
                capture_output=True,
                text=True,
                timeout=10,
                env=CHILD_ENV,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            error = str(exc)
            continue
        if probe.returncode == 0:
            return argv
        error = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
    if euid != 0:
        fix = (
            "run the gateway as root, or allow unprivileged user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces)"
        )
    else:
        fix = (
            "give the gateway CAP_SYS_ADMIN (a container needs --privileged or --cap-add "
            "SYS_ADMIN and no seccomp filter on unshare)"
        )
    return f"This machine does not let the gateway create namespaces ({error}): {fix}."


def sandbox_problem(policy: SandboxPolicy) -> str | None:
    """Why this machine cannot run builds under *policy* (one line: cause, then fix), or
    ``None`` when it can."""
    for entry in policy.allowed_hosts:
        try:
            AllowListProxy([entry])
        except ProxyRequestError as exc:
            return (
                f"The allowed host {entry!r} is not a host or host:port ({exc}): correct "
                "KF_ENV_ALLOWED_HOSTS or KF_ENV_INDEX_URL."
            )
    if policy.user is not None:
        problem = _user_problem(policy.user)
        if problem:
            return problem
    if policy.isolate_network:
        isolation = _isolation(os.geteuid())
        if isinstance(isolation, str):
            return isolation
    return None


def _private_dir() -> Path:
    """A new directory only this process's user can enter (``mkdtemp`` makes it 0700)."""
    path = Path(tempfile.mkdtemp(prefix="kf-sandbox-"))
    if len(str(path / "proxy.sock")) > 100:  # sun_path holds 108 bytes
        path.rmdir()
        path = Path(tempfile.mkdtemp(prefix="kf-sandbox-", dir="/tmp"))
    return path


def _read_status(fd: int) -> str:
    chunks: list[bytes] = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    lines = b"".join(chunks).decode("utf-8", "replace").splitlines()
    return lines[0] if lines else ""


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, 9)


async def run_sandboxed(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    policy: SandboxPolicy,
    on_line: Callable[[str], None],
    timeout: float,  # noqa: ASYNC109 - the contract's: the build's whole deadline
) -> int:
    """Run *argv* under *policy* in *cwd* (which the caller has given to the build user) with
    exactly *env* (plus the proxy variables); each output line to *on_line*. Returns the exit
    status (128 + N when signal N ended it). Raises :class:`SandboxError` when the sandbox
    cannot be set up or the command cannot be started (with the cause and fix), and
    :class:`SandboxTimeout` after *timeout* seconds (everything it started is killed)."""
    if not argv:
        raise ValueError("run_sandboxed needs a command")
    problem = await asyncio.to_thread(sandbox_problem, policy)
    if problem is not None:
        raise SandboxError(problem)
    prefix: tuple[str, ...] = ()
    if policy.isolate_network:
        isolation = _isolation(os.geteuid())
        if isinstance(isolation, str):
            raise SandboxError(isolation)
        prefix = isolation
    refused: set[str] = set()

    def refusal(reason: str) -> None:
        if reason not in refused:  # clients retry: say it once
            refused.add(reason)
            on_line(f"sandbox proxy: {reason}")

    proxy = AllowListProxy(policy.allowed_hosts, on_refusal=refusal)
    private = await asyncio.to_thread(_private_dir)
    try:
        if policy.isolate_network:
            socket_path = str(private / "proxy.sock")
            await proxy.serve_unix(socket_path)
            port = FORWARD_PORT
            forward: dict[str, object] | None = {"port": port, "socket": socket_path}
        else:
            port = await proxy.serve_tcp()
            forward = None
        config = {
            "argv": list(argv),
            "env": proxied_env(env, port),
            "cwd": str(cwd),
            "user": policy.user,
            "forward": forward,
        }
        config_path = private / "config.json"
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(config, fh)
        command = [*prefix, sys.executable, "-I", "-S", str(CHILD), str(config_path)]
        return await _run(command, on_line, timeout)
    finally:
        await proxy.close()
        await asyncio.to_thread(shutil.rmtree, private, True)


async def _run(
    command: list[str],
    on_line: Callable[[str], None],
    timeout: float,  # noqa: ASYNC109
) -> int:
    """Run the sandbox's first process (*command* and its status descriptor); its status."""
    read_fd, write_fd = os.pipe()
    try:
        os.set_blocking(read_fd, False)
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                str(write_fd),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(write_fd,),
                start_new_session=True,
                env=CHILD_ENV,
                cwd="/",
            )
        finally:
            os.close(write_fd)
        returncode = await _wait(proc, on_line, timeout)
        message = _read_status(read_fd)
    finally:
        os.close(read_fd)
    if message:
        raise SandboxError(message)
    return returncode if returncode >= 0 else 128 - returncode


async def _wait(
    proc: asyncio.subprocess.Process,
    on_line: Callable[[str], None],
    timeout: float,  # noqa: ASYNC109
) -> int:
    """Pass *proc*'s output on until it exits (killing its group after *timeout*)."""
    assert proc.stdout is not None
    splitter = LineSplitter(on_line)

    async def pump(stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            splitter.feed(chunk)
        splitter.close()

    reading = asyncio.create_task(pump(proc.stdout))
    try:
        try:
            async with asyncio.timeout(timeout):
                return await proc.wait()
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise SandboxTimeout(
                f"The build took longer than {timeout:g} s and was stopped (with everything it "
                "started): an admin can raise the limit with KF_ENV_BUILD_TIMEOUT (seconds)."
            ) from None
        finally:
            _kill_group(proc.pid)  # what the build left running in its process group
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_SECONDS):
                    await asyncio.shield(reading)
    finally:
        if proc.returncode is None:
            _kill_group(proc.pid)
            await proc.wait()
        if not reading.done():
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
