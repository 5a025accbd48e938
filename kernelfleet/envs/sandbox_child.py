"""The first process inside a build's sandbox (stdlib only; run as ``python -I -S <this file>
CONFIG STATUS_FD`` by :mod:`kernelfleet.envs.sandbox`, usually under ``unshare --net --pid``).

CONFIG is a JSON file in the sandbox's private directory::

    {"argv": [...], "env": {...}, "cwd": "/path", "user": "nobody" | null,
     "forward": {"port": 3128, "socket": "/tmp/kf-sandbox-…/proxy.sock"} | null}

What it does, as root (or as the root of a user namespace):

1. with ``forward``: brings ``lo`` up (a new network namespace has it down) and listens on
   ``127.0.0.1:<port>``; each connection accepted there is carried over a new connection to
   the unix socket of the gateway's allow-list proxy. The socket lies in a directory only root
   can enter, so the build reaches the proxy only through this forwarder;
2. forks the build: ``setgroups([])``, ``setgid``/``setuid`` to *user*, ``PR_SET_NO_NEW_PRIVS``
   (no setuid binary gives root back), umask 022, ``chdir(cwd)`` as that user, default
   SIGPIPE/SIGXFSZ, then ``execvpe(argv, env)`` — *env* is the build's whole environment;
3. forwards until the build exits, reaping every orphan meanwhile (in a PID namespace it is
   PID 1; when it exits the kernel kills whatever the build left behind), and exits with the
   build's status (128 + N when signal N killed it).

Without ``forward`` and outside a PID namespace it execs the build in place (no fork).
Set-up failures are written as one line (cause, then fix) to STATUS_FD, which the gateway
reads after the exit; the build itself never holds that descriptor (close-on-exec).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import pwd
import signal
import socket
import struct
import sys
import threading
from typing import Any

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
PR_SET_NO_NEW_PRIVS = 38
IFREQ = "16sh22x"  # struct ifreq: ifr_name[16], ifr_flags, padding to 40 bytes
CHUNK = 64 * 1024
#: Exit statuses of set-up failures (those of a shell: cannot execute, not found).
CANNOT_RUN = 126
NOT_FOUND = 127


class SetupError(Exception):
    """A set-up step failed; the message (cause, then fix) goes to the status descriptor."""


def no_such_user(user: str) -> str:
    return (
        f"The build user {user!r} does not exist on this machine: create it (useradd "
        f"--system {user}) or set KF_ENV_BUILD_USER to an existing unprivileged user."
    )


def report(status_fd: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(status_fd, (" ".join(message.split()) + "\n").encode("utf-8", "replace"))


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack(IFREQ, b"lo", 0)
        flags = struct.unpack(IFREQ, fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack(IFREQ, b"lo", flags | IFF_UP))


def listen(port: int) -> socket.socket:
    try:
        loopback_up()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError as exc:
        raise SetupError(
            f"The sandbox could not open its proxy port 127.0.0.1:{port} ({exc.strerror}): "
            "the gateway needs CAP_NET_ADMIN inside the build's network namespace."
        ) from None
    return sock


def no_new_privs() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise SetupError(
            f"The sandbox could not set no_new_privs ({os.strerror(errno)}): "
            "run the gateway on Linux 3.5 or later."
        )


def become(user: str | None, cwd: str) -> None:
    """Drop to *user* for good (all of uid, gid, groups) and enter *cwd* as that user."""
    if user is not None:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise SetupError(no_such_user(user)) from None
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
        if os.getuid() == 0 or os.geteuid() == 0:
            raise SetupError(f"The build user {user!r} is root: choose an unprivileged user.")
    no_new_privs()
    os.umask(0o022)
    try:
        os.chdir(cwd)
    except OSError as exc:
        who = f"the build user {user!r}" if user else "the build"
        raise SetupError(
            f"{who} cannot enter {cwd} ({exc.strerror}): the build directory and its parents "
            "must be reachable by the build user, and the directory owned by it."
        ) from None


def exec_build(config: dict[str, Any], status_fd: int) -> None:
    """Become the build (never returns): on failure, report and exit 126/127."""
    argv: list[str] = config["argv"]
    try:
        become(config["user"], config["cwd"])
        for signum in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signum, signal.SIG_DFL)
        os.execvpe(argv[0], argv, config["env"])  # noqa: S606 - an argv list, no shell
    except SetupError as exc:
        report(status_fd, str(exc))
        os._exit(CANNOT_RUN)
    except OSError as exc:
        who = f"the build user {config['user']!r}" if config["user"] else "the build"
        report(
            status_fd,
            f"The build command {argv[0]!r} could not be started as {who} ({exc.strerror}): "
            "install it where the build user can read and execute it.",
        )
        os._exit(NOT_FOUND if isinstance(exc, FileNotFoundError) else CANNOT_RUN)
    except BaseException as exc:
        report(status_fd, f"The sandbox failed before starting the build: {exc!r}")
        os._exit(CANNOT_RUN)


def relay(source: socket.socket, sink: socket.socket) -> None:
    """Copy *source* to *sink* until end of file, then half-close *sink*; on an error, shut
    both down (which ends the other direction too)."""
    try:
        while data := source.recv(CHUNK):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        for each in (source, sink):
            with contextlib.suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)


def carry(client: socket.socket, socket_path: str) -> None:
    """One connection of the build, carried to the proxy's unix socket (a thread each way)."""
    with client:
        try:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError:
            return
        with upstream:
            try:
                upstream.connect(socket_path)
            except OSError:
                return
            back = threading.Thread(target=relay, args=(upstream, client), daemon=True)
            back.start()
            relay(client, upstream)
            back.join()


def serve(listener: socket.socket, socket_path: str) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=carry, args=(client, socket_path), daemon=True).start()


def supervise(build_pid: int, listener: socket.socket | None, socket_path: str) -> int:
    """Forward (when *listener*) and reap every child until the build exits; its exit code.
    Threads, not asyncio: importing asyncio alone would double the sandbox's start-up time."""
    if listener is not None:
        threading.Thread(target=serve, args=(listener, socket_path), daemon=True).start()
    while True:
        pid, status = os.wait()  # orphans of the namespace are reaped here too
        if pid == build_pid:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


def main(args: list[str]) -> int:
    config_path, status_text = args
    status_fd = int(status_text)
    os.set_inheritable(status_fd, False)
    try:
        with open(config_path, encoding="utf-8") as fh:
            config = json.load(fh)
        forward = config.get("forward")
        listener = listen(int(forward["port"])) if forward else None
    except SetupError as exc:
        report(status_fd, str(exc))
        return CANNOT_RUN
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report(status_fd, f"The sandbox could not read its configuration: {exc!r}")
        return CANNOT_RUN
    if listener is None and os.getpid() != 1:
        exec_build(config, status_fd)
    pid = os.fork()
    if pid == 0:
        exec_build(config, status_fd)
    code = supervise(pid, listener, forward["socket"] if forward else "")
    sys.stdout.flush()
    os._exit(code)  # not sys.exit: forwarding threads may still be blocked in recv


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
