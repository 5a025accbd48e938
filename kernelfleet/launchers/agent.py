"""The kernelfleet host agent: launches and watches the kernels of one host.

This file runs on the kernel host, not in the gateway. The gateway keeps one persistent SSH
connection per host and starts this agent on it with a fixed command line; the agent's source
then arrives as the first line on stdin (a JSON string), so hosts need nothing installed but a
Python 3.9+ interpreter. It uses the standard library only.

Protocol: JSON lines on stdin/stdout. The agent first writes a ``hello`` event (its version,
the host name, the address the gateway reached it on, the kernels it finds in its state
directory). Requests are ``{"id": n, "op": ..., ...}`` and get exactly one answer
``{"id": n, "ok": true, ...}`` or ``{"id": n, "ok": false, "error": {"kind": k, "message": m}}``.
Unsolicited events are ``{"event": "exit", "kernel_id": ..., "code": ...}``.

Security: request values never reach a shell. Argv is executed as a list and the environment is
passed as a mapping. Secrets (the HMAC key and the Curve secret key) arrive in the request over
the SSH channel and are only written to the 0600 connection file; they are never logged or put
on a command line.

Kernels are started detached (their own session, stdin from /dev/null, output to a per-kernel
log file), so they survive the agent, the SSH connection and the gateway. Every kernel is
recorded in the state directory so a later agent adopts it and can still signal it.

Impersonation (a launch naming ``user``): an agent running as root starts the kernel with that
uid, gid and groups directly; any other agent goes through ``sudo -n -u USER`` (no password
prompt: the admin allows the SSH user to run the agent's Python as kernel users), where a small
helper (``hostlib.exec_kernel``) creates the kernel's private files as that user and execs the
kernel. sudo relays signals; SIGKILL and file removal are done as the user through sudo too.
Uids in ``prohibited_uids`` (default: 0) are refused either way.

Readiness: a kernel is reported started only when all five of its ports are listening. No
kernel gives an event for that, so the agent reads ``/proc/net/tcp`` on a short, growing
interval while it waits for the kernel's exit event at the same time. The chosen ports are
held by bound, non-listening ``SO_REUSEADDR`` sockets until the kernel listens on them, so
another process cannot take them in between; if one still loses a port, the launch is retried
with fresh ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

# The gateway ships hostlib.py with this file and installs it as the top-level module
# kernelfleet_hostlib before running main() (see kernelfleet.transport.protocol).
import kernelfleet_cgroups  # type: ignore[import-not-found]
import kernelfleet_hostlib  # type: ignore[import-not-found]
from kernelfleet_hostlib import (  # type: ignore[import-not-found]
    ENV_NAME_RE,
    KERNEL_ID_RE,
    KILL_GROUP_CODE,
    PORT_NAMES,
    REMOVE_DIR_CODE,
    AgentError,
    listening_ports,
    meminfo,
    pick_ports,
    popen_kernel,
    process_start_time,
    read_tail,
    remove_tree,
    resolve_user,
    runtime_root,
    secure_dir,
    sudo_argv,
    working_dir,
)

#: hostlib's source, passed on to the helper that starts a kernel as another user via sudo.
HOSTLIB_SOURCE = kernelfleet_hostlib.__source__

AGENT_VERSION = "kernelfleet-agent/1"

MAX_LINE = 64 * 1024 * 1024
LOG_TAIL = 2000
PORT_ATTEMPTS = 3
STALE_RECORD_SECONDS = 7 * 24 * 3600


def popen_in_cgroups(launch):
    """Start the kernel (blocking: run in a thread) and move it into its cgroups at once."""
    popen = popen_kernel(launch, HOSTLIB_SOURCE, sys.executable)
    if launch["cgroups"]:
        try:
            kernelfleet_cgroups.join(launch["cgroups"], popen.pid)
        except OSError as exc:
            popen.kill()
            popen.wait()
            kernelfleet_cgroups.remove(launch["cgroups"])
            raise AgentError("limits", f"cannot put the kernel in its cgroup: {exc}") from None
    return popen


class Kernel:
    """One kernel process this agent knows about (launched or adopted)."""

    def __init__(self, kernel_id, record):
        self.kernel_id = kernel_id
        self.record = record
        self.pid = record["pid"]
        self.popen = None
        self.pidfd = None
        self.exit_code = record.get("exit_code")
        self.exited = asyncio.Event()
        if record.get("exited"):
            self.exited.set()

    @property
    def alive(self):
        return not self.exited.is_set()


async def accepts(ip, port):
    """Whether something listens on *ip*:*port* (a refused or hanging connect: no)."""
    loop = asyncio.get_running_loop()
    host = "127.0.0.1" if ip in ("0.0.0.0", "") else ip
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), 0.5)
        return True
    except (TimeoutError, OSError):
        return False
    finally:
        sock.close()


class Agent:
    def __init__(self, loop, writer):
        self.loop = loop
        self.writer = writer
        self.uid = os.geteuid()
        self.state_root = runtime_root(self.uid)
        self.records_dir = os.path.join(self.state_root, "kernels")
        self.kernels = {}
        self.launches = {}
        self.reserved_ports = set()
        self.tasks = set()

    # -- output -------------------------------------------------------------------------
    def send(self, message):
        self.writer.write((json.dumps(message, separators=(",", ":")) + "\n").encode())

    # -- state directory ----------------------------------------------------------------
    def init_state(self):
        secure_dir(self.state_root, self.uid, os.getegid())
        secure_dir(self.records_dir, self.uid, os.getegid())
        for name in os.listdir(self.records_dir):
            if not name.endswith(".json"):
                continue
            kid = name[:-5]
            try:
                with open(os.path.join(self.records_dir, name)) as f:
                    record = json.load(f)
            except (OSError, ValueError):
                continue
            kernel = Kernel(kid, record)
            if kernel.alive and process_start_time(kernel.pid) != record.get("start_time"):
                kernel.exit_code = None
                kernel.exited.set()
            if not kernel.alive:
                # Ended while no agent watched: its secrets go now; its log and record stay
                # (so "why did it die" has an answer) until cleaned up or stale.
                with contextlib.suppress(OSError, KeyError):
                    os.unlink(record["connection_file"])
                if time.time() - record.get("started", 0) > STALE_RECORD_SECONDS:
                    self.kernels[kid] = kernel
                    self.spawn(self.cleanup(kid, keep_log=False))
                    continue
            self.kernels[kid] = kernel
            if kernel.alive:
                self.watch(kernel)

    def save_record(self, kernel):
        path = os.path.join(self.records_dir, kernel.kernel_id + ".json")
        tmp = f"{path}.{os.getpid()}.tmp"  # another agent of this user may write too
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(kernel.record, f)
        os.replace(tmp, path)

    def drop_record(self, kernel_id):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.records_dir, kernel_id + ".json"))

    # -- process watching ----------------------------------------------------------------
    def watch(self, kernel):
        try:
            kernel.pidfd = os.pidfd_open(kernel.pid)
        except (AttributeError, OSError):
            kernel.pidfd = None
        if kernel.pidfd is not None:
            self.loop.add_reader(kernel.pidfd, self.on_exit, kernel)
        else:
            self.spawn(self.watch_by_polling(kernel))

    async def watch_by_polling(self, kernel):
        # Fallback for kernels without pidfd support (Linux < 5.3): no exit event exists.
        while kernel.alive:
            if process_start_time(kernel.pid) != kernel.record.get("start_time"):
                self.on_exit(kernel)
                return
            if kernel.popen is not None and kernel.popen.poll() is not None:
                self.on_exit(kernel)
                return
            await asyncio.sleep(1.0)

    def on_exit(self, kernel):
        if kernel.pidfd is not None:
            self.loop.remove_reader(kernel.pidfd)
            os.close(kernel.pidfd)
            kernel.pidfd = None
        if kernel.exited.is_set():
            return
        code = None
        if kernel.popen is not None:
            code = kernel.popen.poll()
        kernel.exit_code = code
        kernel.exited.set()
        kernel.record["exited"] = True
        kernel.record["exit_code"] = code
        event = {"event": "exit", "kernel_id": kernel.kernel_id, "pid": kernel.pid, "code": code}
        if kernelfleet_cgroups.oom_killed(kernel.record.get("cgroups") or []):
            kernel.record["exit_reason"] = event["reason"] = "oom"
        with contextlib.suppress(OSError):
            self.save_record(kernel)
        self.send(event)

    def spawn(self, coro):
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # -- requests -------------------------------------------------------------------------
    async def handle(self, request):
        rid = request.get("id")
        op = request.get("op")
        try:
            handler = getattr(self, "op_" + str(op), None)
            if handler is None:
                raise AgentError("protocol", f"unknown operation {op!r}")
            result = await handler(request)
            result["id"] = rid
            result["ok"] = True
            self.send(result)
        except AgentError as exc:
            self.send_error(rid, exc.kind, exc.message)
        except asyncio.CancelledError:
            self.send_error(rid, "cancelled", "cancelled")
        except Exception as exc:  # report it, never die on one request
            self.send_error(rid, "internal", f"{type(exc).__name__}: {exc}")

    def send_error(self, rid, kind, message):
        self.send({"id": rid, "ok": False, "error": {"kind": kind, "message": message}})

    def kernel_for(self, request):
        kid = request.get("kernel_id")
        if not isinstance(kid, str) or not KERNEL_ID_RE.match(kid):
            raise AgentError("protocol", "invalid kernel id")
        return kid

    async def op_status(self, request):
        return {
            "kernels": {
                kid: {"alive": k.alive, "pid": k.pid, "code": k.exit_code}
                for kid, k in self.kernels.items()
            }
        }

    async def op_host(self, request):
        mem = meminfo()
        return {
            "loadavg": list(os.getloadavg()),
            "cpus": os.cpu_count() or 1,
            "mem_total": mem.get("MemTotal", 0),
            "mem_available": mem.get("MemAvailable", 0),
            "kernels": sum(1 for k in self.kernels.values() if k.alive),
        }

    async def op_signal(self, request):
        kid = self.kernel_for(request)
        signum = int(request.get("signum", 0))
        kernel = self.kernels.get(kid)
        if kernel is None:
            raise AgentError("unknown", f"no kernel {kid} on this host")
        return {"delivered": await self.signal_kernel(kernel, signum)}

    async def signal_kernel(self, kernel, signum):
        """Signal the kernel's process group; True if the kernel was alive to get it.

        Under sudo the agent may signal only sudo itself, which relays every signal but
        SIGKILL to the kernel: SIGKILL is sent as the kernel's user, through sudo.
        """
        pgid = kernel.record.get("pgid", kernel.pid)
        if signum == signal.SIGKILL and kernel.record.get("mode") == "sudo":
            await self.run_as(kernel.record["user"], KILL_GROUP_CODE, str(pgid))
        if kernel.alive:
            try:
                os.killpg(pgid, signum)
                return True
            except ProcessLookupError:
                return False
        if signum == signal.SIGKILL:
            # The leader is gone; kill what is left of its process group.
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
        return False

    async def run_as(self, user, code, *args):
        """Run a fixed helper program as *user* through sudo (bounded; errors ignored)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *sudo_argv(user, sys.executable, code, *args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={"PATH": "/usr/bin:/bin"},
            )
        except OSError:
            return
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:  # noqa: UP041 - a different class before Python 3.11
            with contextlib.suppress(OSError):
                proc.kill()
            await proc.wait()

    async def op_abort(self, request):
        """Stop a kernel whatever its state (launching or running) and remove its files."""
        kid = self.kernel_for(request)
        task = self.launches.get(kid)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        kernel = self.kernels.get(kid)
        stopped = task is not None or (kernel is not None and kernel.alive)
        await self.cleanup(kid, keep_log=bool(request.get("keep_log")))
        return {"stopped": stopped}

    async def op_cleanup(self, request):
        kid = self.kernel_for(request)
        await self.cleanup(kid, keep_log=bool(request.get("keep_log")))
        return {}

    async def cleanup(self, kid, keep_log):
        """Kill what is left of the kernel and remove its files (its log when *keep_log* is
        false and the agent owns it) and its record."""
        kernel = self.kernels.get(kid)
        if kernel is None:
            return
        await self.signal_kernel(kernel, signal.SIGKILL)
        if kernel.alive:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(kernel.exited.wait(), 5.0)
        record = kernel.record
        if record.get("cgroups"):
            await self.loop.run_in_executor(None, kernelfleet_cgroups.remove, record["cgroups"])
        runtime_dir = record.get("runtime_dir")
        if not keep_log and record.get("log_owned"):
            with contextlib.suppress(OSError, KeyError):
                os.unlink(record["log_path"])
        if record.get("mode") == "sudo":
            if runtime_dir:
                await self.run_as(record["user"], REMOVE_DIR_CODE, runtime_dir)
        else:
            with contextlib.suppress(OSError, KeyError):
                os.unlink(record["connection_file"])
            if not keep_log or os.path.dirname(record.get("log_path", "")) != runtime_dir:
                remove_tree(runtime_dir)
        self.kernels.pop(kid, None)
        self.drop_record(kid)

    async def op_log(self, request):
        kid = self.kernel_for(request)
        kernel = self.kernels.get(kid)
        if kernel is None:
            raise AgentError("unknown", f"no kernel {kid} on this host")
        max_bytes = max(0, min(int(request.get("max_bytes", 65536)), 16 * 1024 * 1024))
        return {"log": read_tail(kernel.record["log_path"], max_bytes)}

    async def op_launch(self, request):
        kid = self.kernel_for(request)
        existing = self.kernels.get(kid)
        if existing is not None and existing.alive:
            raise AgentError("exists", f"kernel {kid} is already running on this host")
        if kid in self.launches:
            raise AgentError("exists", f"kernel {kid} is already being launched")
        # Registered before any await, so an ``abort`` sent right after finds it.
        task = self.loop.create_task(self.launch(kid, request, existing is not None))
        self.launches[kid] = task
        try:
            return await task
        finally:
            self.launches.pop(kid, None)

    # -- launching ------------------------------------------------------------------------
    async def launch(self, kid, request, has_old_record):
        if has_old_record:  # a restart: the previous process of this kernel has exited
            await self.cleanup(kid, keep_log=True)
        pw, mode = resolve_user(request, self.uid)
        argv = request.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise AgentError("protocol", "argv must be a non-empty list of strings")
        env = request.get("env") or {}
        if not all(isinstance(k, str) and ENV_NAME_RE.match(k) for k in env) or not all(
            isinstance(v, str) for v in env.values()
        ):
            raise AgentError("protocol", "env must map variable names to strings")
        ip = request.get("ip") or "0.0.0.0"
        deadline = time.monotonic() + float(request.get("timeout", 60))
        limits = request.get("limits") or {}
        memory, cpus = limits.get("memory"), limits.get("cpus")
        if not all(v is None or (isinstance(v, (int, float)) and v > 0) for v in (memory, cpus)):
            raise AgentError("protocol", "limits must be positive numbers")

        # The kernel's private files live in its user's runtime root; under sudo that user
        # creates them itself (exec_kernel), and the log stays with the agent so it can read it.
        runtime_dir = os.path.join(runtime_root(pw.pw_uid), kid)
        conn_file = os.path.join(runtime_dir, "connection.json")
        if mode != "sudo":
            secure_dir(runtime_root(pw.pw_uid), pw.pw_uid, pw.pw_gid)
            secure_dir(runtime_dir, pw.pw_uid, pw.pw_gid)
        log_dir = request.get("log_dir")
        if log_dir:
            log_path = os.path.join(log_dir, f"kernel-{kid}.log")
        elif mode == "sudo":
            own_logs = os.path.join(self.state_root, "logs")
            secure_dir(own_logs, self.uid, os.getegid())
            log_path = os.path.join(own_logs, f"kernel-{kid}.log")
        else:
            log_path = os.path.join(runtime_dir, "kernel.log")

        full_env = dict(env)
        full_env.setdefault("PATH", os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"))
        full_env.update(
            HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name, SHELL=pw.pw_shell or "/bin/sh"
        )
        full_env["KERNEL_ID"] = kid
        launch = {
            "kernel_id": kid,
            "argv": [a.replace("{connection_file}", conn_file) for a in argv],
            "env": full_env,
            "cwd": working_dir(request.get("cwd"), pw.pw_dir),
            "pw": pw,
            "mode": mode,
            "ip": ip,
            "runtime_dir": runtime_dir,
            "connection_file": conn_file,
            "connection": request.get("connection") or {},
            "kernel_name": request.get("kernel_name", ""),
            "log_path": log_path,
            "cgroups": [],
        }
        if memory or cpus:  # a kernel profile's limits: a cgroup of its own
            try:
                launch["cgroups"] = await self.loop.run_in_executor(
                    None, kernelfleet_cgroups.create, kid, memory, cpus
                )
            except kernelfleet_cgroups.CgroupError as exc:
                msg = f"this host cannot enforce the kernel's limits: {exc}"
                raise AgentError("limits", msg) from None

        last_failure = None
        began = time.monotonic()
        for attempt in range(PORT_ATTEMPTS):
            held = pick_ports(
                ip,
                request.get("port_range"),
                self.reserved_ports,
                request.get("ports") if attempt == 0 else None,
            )
            ports = {name: held[i].getsockname()[1] for i, name in enumerate(PORT_NAMES)}
            self.reserved_ports.update(ports.values())
            kernel = None
            try:
                launch["ports"] = ports
                kernel = await self.start_process(launch)
                kernel.record.update(
                    runtime_dir=runtime_dir,
                    connection_file=conn_file,
                    log_path=log_path,
                    log_owned=not log_dir,
                    user=pw.pw_name,
                    mode=mode,
                    ip=ip,
                    ports=ports,
                    cgroups=launch["cgroups"],
                )
                self.save_record(kernel)
                spawned = time.monotonic()
                if await self.wait_ready(kernel, ip, ports, deadline):
                    ready = time.monotonic()
                    return {
                        "seconds": {"spawn": spawned - began, "listen": ready - spawned},
                        "pid": kernel.pid,
                        "pgid": kernel.record["pgid"],
                        "ip": ip,
                        "ports": ports,
                        "connection_file": conn_file,
                        "log_path": log_path,
                        "runtime_dir": runtime_dir,
                        "user": pw.pw_name,
                    }
                tail = read_tail(log_path, LOG_TAIL)
                last_failure = tail
                await self.cleanup(kid, keep_log=True)
                kernel = None
                if "Address already in use" not in tail:
                    raise AgentError(
                        "exited",
                        "the kernel process exited during startup; end of its log:\n" + tail,
                    )
            except BaseException:
                if kernel is None:
                    kernelfleet_cgroups.remove(launch["cgroups"], wait=0)
                if kernel is not None:
                    await self.cleanup(kid, keep_log=False)
                elif mode != "sudo":
                    with contextlib.suppress(OSError):
                        os.unlink(conn_file)
                    remove_tree(runtime_dir)
                raise
            finally:
                for sock in held:
                    sock.close()
                self.reserved_ports.difference_update(ports.values())
        raise AgentError(
            "ports",
            f"the kernel lost its ports to other processes {PORT_ATTEMPTS} times; last log:\n"
            + (last_failure or ""),
        )

    async def start_process(self, launch):
        """Start the kernel process described by *launch*; returns its :class:`Kernel`."""
        pw, mode = launch["pw"], launch["mode"]
        popen = await self.loop.run_in_executor(None, popen_in_cgroups, launch)
        record = {
            "pid": popen.pid,
            "pgid": popen.pid,
            "start_time": process_start_time(popen.pid),
            "started": time.time(),
            "mode": mode,
            "user": pw.pw_name,
        }
        kernel = Kernel(launch["kernel_id"], record)
        kernel.popen = popen
        self.kernels[kernel.kernel_id] = kernel
        self.watch(kernel)
        return kernel

    async def wait_ready(self, kernel, ip, ports, deadline):
        # Reading /proc/net/tcp walks the kernel's whole socket table (every namespace): on a
        # busy machine that is milliseconds per read. So a cheap TCP connect to one port is
        # the poll, and the table is read only once that port listens, to confirm them all.
        # The poll interval stays short (a refused connect costs microseconds): a growing
        # one made readiness late by up to the interval, e.g. 38 ms for a kernel that took
        # 70 ms instead of 60 to listen on a busy host.
        wanted = set(ports.values())
        probe = ports.get("hb_port") or min(wanted)
        delay = 0.002
        while True:
            if not kernel.alive:
                return False
            if await accepts(ip, probe) and wanted <= listening_ports(ip):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AgentError(
                    "timeout",
                    "the kernel did not listen on its ports in time; end of its log:\n"
                    + read_tail(kernel.record["log_path"], LOG_TAIL),
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(kernel.exited.wait(), min(delay, remaining))
            delay = min(delay * 1.2, 0.01)

    # -- main loop ------------------------------------------------------------------------
    async def run(self, reader):
        while True:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                self.send({"event": "error", "message": "request line too long"})
                break
            if not line:
                break
            try:
                request = json.loads(line)
            except (ValueError, RecursionError):
                self.send({"event": "error", "message": "malformed request"})
                continue
            if not isinstance(request, dict):
                continue
            self.spawn(self.handle(request))
        # The gateway went away: launches nobody will hear about are undone; running kernels
        # stay up (they are detached) for the next agent to adopt.
        for task in list(self.launches.values()):
            task.cancel()
        if self.launches:
            await asyncio.gather(*self.launches.values(), return_exceptions=True)


def server_address():
    parts = os.environ.get("SSH_CONNECTION", "").split()
    return parts[2] if len(parts) == 4 else None


async def amain():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    agent = Agent(loop, writer)
    try:
        agent.init_state()
        error = None
    except (AgentError, OSError) as exc:
        error = str(exc)
    agent.send(
        {
            "event": "hello",
            "version": AGENT_VERSION,
            "hostname": socket.gethostname(),
            "ip": server_address(),
            "uid": agent.uid,
            "python": sys.version.split()[0],
            "error": error,
            "kernels": (await agent.op_status({}))["kernels"],
        }
    )
    if error is None:
        await agent.run(reader)
    await writer.drain()


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(amain())


if __name__ == "__main__":
    main()
