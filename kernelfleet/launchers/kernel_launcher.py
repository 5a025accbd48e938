"""Start a kernel where it runs and tell the gateway's response listener how to reach it.

This file runs where the kernel runs: a YARN container, a pod, a Docker container, any host the
gateway cannot reach over SSH. It uses the standard library (plus pyzmq, only for ``--curve``,
which every Python kernel has) and ``respond.py`` beside it. Python 3.9+::

    python kernel_launcher.py [--ip IP] [--port-range LO..HI] [--kernel-name NAME] [--curve]
        [--ready-timeout SECONDS] [--runtime-dir DIR] -- KERNEL_ARGV...
    python kernel_launcher.py [options] --argv-json '["python3", "-m", "ipykernel_launcher",
        "-f", "{connection_file}"]'
    python kernel_launcher.py [options] --argv-b64 <base64 of that JSON list>

Its environment must hold ``KF_RESPONSE_ADDRESS``, ``KF_RESPONSE_KEY`` and
``KF_RESPONSE_KERNEL_ID`` (a gateway registration's ``env``; see ``respond.py``). The key is
never taken from the command line, and these three variables are removed from the kernel's
environment (which gets ``KERNEL_ID`` instead, unless it has one).

What it does, in order: picks five free ports (inside ``--port-range`` when given) and holds
them with bound, non-listening sockets so nothing else takes them; makes a fresh HMAC key (and
a CurveZMQ key pair with ``--curve``); writes the connection file, 0600, in a fresh 0700
directory; starts the kernel argv as a list (never through a shell) with ``{connection_file}``
replaced; waits until the kernel accepts connections on all five ports; releases the held
sockets; sends the connection info, sealed, to the listener. If the kernel exits or does not
listen within ``--ready-timeout`` seconds, it sends a sealed failure report instead, so the
gateway fails the launch at once rather than at its deadline.

Why it stays the kernel's parent instead of exec-ing it: readiness can only be seen from outside
the kernel, after it started; the connection file holds secrets and is removed when the kernel
exits; and a container runtime signals its main process, so the launcher relays SIGTERM, SIGINT,
SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the kernel's process group and exits with the kernel's
status (128+N for signal N). The kernel runs in its own process group (a signal meant for the
launcher's group reaches it once, relayed) and, on Linux, gets SIGTERM if the launcher dies. The
cost is one idle Python process.

Exit status: the kernel's, or 2 (bad arguments or environment), 3 (the listener refused or could
not be reached: the kernel is stopped), 4 (the kernel did not start).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

try:  # as a module of the kernelfleet package, or as a script next to respond.py
    from kernelfleet.launchers import respond
except ImportError:  # pragma: no cover - the shipped layout
    import respond  # type: ignore[no-redef]

CONNECTION_FILE_TOKEN = "{connection_file}"  # noqa: S105 - a placeholder, not a secret
RELAYED_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
EXIT_USAGE, EXIT_REFUSED, EXIT_NOT_STARTED = 2, 3, 4
#: The kernel's environment as base64 JSON, from a backend whose containers start from a shell
#: script (YARN): variables it names that the container does not set are given to the kernel.
KERNEL_ENV = "KF_KERNEL_ENV"


class LaunchError(Exception):
    """The kernel could not be started; the message goes to the gateway."""


def log(message):
    print(f"kernelfleet launcher: {message}", file=sys.stderr, flush=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="kernel_launcher.py", description="Start a kernel and report it to the gateway."
    )
    parser.add_argument(
        "--ip",
        default="",
        help="address the kernel binds (default: the "
        "local address that routes to the gateway's listener)",
    )
    parser.add_argument("--port-range", default="", help="LO..HI, inclusive (default: any port)")
    parser.add_argument("--kernel-name", default="", help="the kernelspec's name, reported")
    parser.add_argument("--curve", action="store_true", help="CurveZMQ keys (needs pyzmq)")
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=60.0,
        help="seconds the kernel has to listen on its ports (default: 60)",
    )
    parser.add_argument(
        "--response-timeout",
        type=float,
        default=30.0,
        help="seconds to reach the gateway's listener (default: 30)",
    )
    parser.add_argument(
        "--runtime-dir",
        default=None,
        help="where the connection file's "
        "private directory is made (default: the system's temporary directory)",
    )
    parser.add_argument(
        "--spark-context",
        action="store_true",
        help="hold a SparkContext while the kernel runs (a Spark driver's main program in YARN "
        "cluster mode whose kernel starts no Spark itself: YARN waits for one)",
    )
    parser.add_argument("--argv-json", default=None, help="the kernel argv as a JSON list")
    parser.add_argument(
        "--argv-b64",
        default=None,
        help="the kernel argv as base64 of a JSON list (survives any quoting on the way)",
    )
    parser.add_argument("kernel_argv", nargs=argparse.REMAINDER, help="-- the kernel argv")
    args = parser.parse_args(argv)
    kernel_argv = args.kernel_argv[1:] if args.kernel_argv[:1] == ["--"] else args.kernel_argv
    if args.argv_b64 is not None:
        try:
            args.argv_json = base64.b64decode(args.argv_b64, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            parser.error("--argv-b64 is not base64 of UTF-8 text")
    if args.argv_json is not None:
        if kernel_argv:
            parser.error("give the kernel argv either after -- or as --argv-json, not both")
        try:
            kernel_argv = json.loads(args.argv_json)
        except ValueError:
            parser.error("--argv-json is not JSON")
    if (
        not isinstance(kernel_argv, list)
        or not kernel_argv
        or not all(isinstance(a, str) for a in kernel_argv)
    ):
        parser.error("the kernel argv must be a non-empty list of strings")
    args.kernel_argv = kernel_argv
    args.port_range = parse_port_range(args.port_range, parser)
    return args


def parse_port_range(text, parser):
    if not text.strip() or text.strip() == "0..0":
        return None
    lo, sep, hi = text.partition("..")
    try:
        lo, hi = int(lo), int(hi)
    except ValueError:
        lo = hi = -1
    if not sep or not 0 < lo <= hi <= 65535 or hi - lo + 1 < len(respond.PORT_NAMES):
        parser.error(f"--port-range {text!r} must be LO..HI holding at least 5 ports")
    return lo, hi


def route_address(host, port):
    """The local address this machine uses to reach *host* (no packet is sent)."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.connect(addr)
        return sock.getsockname()[0]


def hold(ip, port):
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # The kernel binds with SO_REUSEADDR too (libzmq does): Linux lets it bind a port that a
    # non-listening socket holds.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((ip, port))
    except OSError:
        sock.close()
        return None
    return sock


def hold_ports(ip, port_range):
    """Five held sockets on free ports of *ip*, inside *port_range* (lo, hi) when given."""
    held = []
    try:
        if port_range is None:
            while len(held) < len(respond.PORT_NAMES):
                sock = hold(ip, 0)
                if sock is None:
                    raise LaunchError(f"no free port on {ip}")
                held.append(sock)
        else:
            import random  # only here: every import delays the kernel's start

            candidates = list(range(port_range[0], port_range[1] + 1))
            random.shuffle(candidates)
            for port in candidates:
                sock = hold(ip, port)
                if sock is not None:
                    held.append(sock)
                if len(held) == len(respond.PORT_NAMES):
                    break
            else:
                raise LaunchError(f"fewer than 5 free ports in {port_range[0]}..{port_range[1]}")
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return held


def make_runtime_dir(parent=None):
    """A new private directory (mode 0700) for the connection file, under *parent*, else
    $TMPDIR, else /tmp (tempfile.mkdtemp's work, without its ~5 ms of imports)."""
    base = parent or os.environ.get("TMPDIR") or "/tmp"  # noqa: S108 - a fresh 0700 dir
    for _ in range(100):
        path = os.path.join(base, f"kernelfleet-{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path
    raise LaunchError(f"no new directory could be made in {base}")


def make_secrets(curve):
    # os.urandom is what the secrets module reads; importing it (and hmac) costs ~7 ms
    fields = {"key": os.urandom(32).hex(), "signature_scheme": "hmac-sha256"}
    if curve:
        try:
            import zmq
        except ImportError:
            raise LaunchError("--curve needs pyzmq in the kernel's environment") from None
        public, secret = zmq.curve_keypair()
        fields.update(
            curve_publickey=public.decode("ascii"), curve_secretkey=secret.decode("ascii")
        )
    return fields


def write_connection_file(directory, kernel_id, info):
    path = os.path.join(directory, f"kernel-{kernel_id}.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=1)
    return path


def accepts(ip, port):
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(ip, ip)
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_listening(proc, ip, ports, timeout):
    """Return once the kernel accepts connections on every port; LaunchError if it exits or
    the time is up. There is no event for "listening", so this polls, briefly at first."""
    deadline = time.monotonic() + timeout
    pending = list(ports)
    delay = 0.005
    while pending:
        if proc.poll() is not None:
            raise LaunchError(f"the kernel exited with status {proc.returncode} during startup")
        pending = [port for port in pending if not accepts(ip, port)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise LaunchError(f"the kernel did not listen on ports {pending} within {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.025)  # a kernel starts in ~0.5 s: answer it promptly


def _kernel_preexec():
    """Runs in the kernel's process before exec: its own process group and, on Linux, SIGTERM
    when the launcher dies (prctl PR_SET_PDEATHSIG, looked up before the fork)."""
    prctl = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec():
        os.setpgid(0, 0)
        if prctl is not None:
            prctl(1, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent:  # the launcher died before prctl took effect
                os._exit(1)

    return preexec


def relay_signals(proc):
    def relay(signum, frame):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)

    for name in RELAYED_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), relay)


def stop(proc, grace=5.0):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def decode_kernel_env(text):
    """The variables of a KF_KERNEL_ENV value ('' → none); ValueError if it is not base64 of
    a JSON object of strings."""
    if not text:
        return {}
    try:
        value = json.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise ValueError("not base64 of a JSON object") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
        for k, v in value.items()
    ):
        raise ValueError("not a JSON object of variable names and string values")
    return value


def report_failure(message, timeout):
    log(message)
    try:
        respond.respond({"error": message}, timeout=timeout, log=log)
    except respond.ResponseError as exc:
        log(f"the failure could not be reported: {exc.message}")


def launch(args):
    """Everything after the arguments are parsed; returns the exit status."""
    try:
        host, port, _, kernel_id = respond.read_env()
    except respond.ResponseError as exc:
        log(exc.message)
        return EXIT_USAGE
    env = {k: v for k, v in os.environ.items() if k not in (*respond.RESPONSE_ENV, KERNEL_ENV)}
    try:
        for name, value in decode_kernel_env(os.environ.get(KERNEL_ENV, "")).items():
            env.setdefault(name, value)
    except ValueError as exc:
        report_failure(f"{KERNEL_ENV}: {exc}", args.response_timeout)
        return EXIT_USAGE
    env.setdefault("KERNEL_ID", kernel_id)  # as the SSH agent sets it
    held, proc, runtime_dir, spark = [], None, None, None
    try:
        if args.spark_context:
            spark = start_spark_context()
        advertised = route_address(host, port)
        ip = args.ip or advertised
        if ip not in ("0.0.0.0", "::"):
            advertised = ip
        held = hold_ports(ip, args.port_range)
        ports = {name: held[i].getsockname()[1] for i, name in enumerate(respond.PORT_NAMES)}
        info = dict(ports, ip=ip, transport="tcp", kernel_name=args.kernel_name)
        info.update(make_secrets(args.curve))
        runtime_dir = make_runtime_dir(args.runtime_dir)
        connection_file = write_connection_file(runtime_dir, kernel_id, info)
        argv = [a.replace(CONNECTION_FILE_TOKEN, connection_file) for a in args.kernel_argv]
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                preexec_fn=_kernel_preexec(),  # noqa: PLW1509 - the launcher has one thread
            )
        except OSError as exc:
            raise LaunchError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        relay_signals(proc)
        wait_listening(proc, ip, ports.values(), args.ready_timeout)
    except (LaunchError, OSError) as exc:
        if proc is not None and proc.poll() is None:
            stop(proc)
        report_failure(str(exc), args.response_timeout)
        cleanup(runtime_dir, spark)
        return EXIT_NOT_STARTED
    finally:
        for sock in held:
            sock.close()
    try:
        respond.respond(
            dict(info, ip=advertised, pid=proc.pid), timeout=args.response_timeout, log=log
        )
    except respond.ResponseError as exc:
        log(f"{exc.message}; stopping the kernel")
        stop(proc)
        cleanup(runtime_dir, spark)
        return EXIT_REFUSED
    log(f"kernel {kernel_id} (pid {proc.pid}) listens on {advertised}; reported to {host}:{port}")
    code = proc.wait()
    cleanup(runtime_dir, spark)
    return code if code >= 0 else 128 - code


def cleanup(runtime_dir, spark=None):
    if runtime_dir:
        import shutil  # after the kernel ran: not on the start's path

        shutil.rmtree(runtime_dir, ignore_errors=True)
    if spark is not None:
        try:
            spark.stop()
        except Exception as exc:  # the driver's JVM may be gone already
            log(f"stopping the SparkContext: {exc!r}")


def start_spark_context():
    """A SparkContext on the driver JVM that started this process (YARN's AM registers once
    one exists); LaunchError when PySpark is missing or it fails."""
    try:
        from pyspark import SparkContext
    except ImportError:
        raise LaunchError("--spark-context needs pyspark in the driver's Python") from None
    try:
        return SparkContext.getOrCreate()
    except Exception as exc:
        raise LaunchError(f"the SparkContext could not start: {exc!r}") from None


def main(argv=None):
    return launch(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
