"""Host-side helpers of the kernelfleet agent: files, ports, processes, users.

Shipped to the hosts together with ``agent.py`` (standard library only, Python 3.9+); see that
module for the protocol. Everything here is synchronous and small: the agent calls it from its
event loop (reading ``/proc`` files and binding sockets does not block).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import re
import socket
import stat
import subprocess

KERNEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


class AgentError(Exception):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


def process_start_time(pid):
    """The start time of *pid* in clock ticks (field 22 of /proc/pid/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def listening_ports(ip):
    """Ports in LISTEN state bound on *ip* or on the wildcard address: IPv4 sockets, and IPv6
    sockets on ``::`` or ``::ffff:<ip>`` (a JVM, e.g. Apache Toree, binds IPv4 that way)."""
    wanted = set()
    try:
        packed = socket.inet_aton(ip)
        wanted.add(f"{int.from_bytes(packed, 'little'):08X}")
    except OSError:
        pass
    wanted.add("00000000")
    # /proc/net/tcp6 prints each 32-bit word of the address in host (little-endian) order.
    wanted6 = {"0" * 32} | {"0000000000000000FFFF0000" + w for w in wanted if w != "00000000"}
    found = set()
    for table, addrs in (("/proc/net/tcp", wanted), ("/proc/net/tcp6", wanted6)):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 4 or parts[3] != "0A":
                continue
            addr, _, port = parts[1].partition(":")
            if addr in addrs:
                found.add(int(port, 16))
    return found


def runtime_root(uid):
    """The private per-user directory for kernel files on this host (host-local /tmp)."""
    return f"/tmp/kernelfleet-{uid}"  # noqa: S108 - created 0700 and ownership-checked


def meminfo():
    mem = {}
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                mem[key] = int(rest.split()[0]) * 1024
    return mem


def working_dir(requested, home):
    if isinstance(requested, str) and os.path.isdir(requested):
        return requested
    return home if os.path.isdir(home) else "/"


def read_tail(path, max_bytes):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def secure_dir(path, uid, gid):
    """Create *path* as a 0700 directory owned by uid:gid, or check an existing one is that."""
    try:
        os.mkdir(path, 0o700)
        if os.geteuid() == 0:
            os.chown(path, uid, gid)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or (st.st_mode & 0o077):
        raise AgentError(
            "state", f"unsafe directory {path} (must be a 0700 directory owned by uid {uid})"
        )


def remove_tree(path):
    if not path or not os.path.isdir(path):
        return
    for name in os.listdir(path):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(path, name))
    with contextlib.suppress(OSError):
        os.rmdir(path)


def resolve_user(request, agent_uid):
    """The account a kernel runs as, and how the agent becomes it: None (it is the agent's
    own), "setuid" (the agent is root) or "sudo" (``sudo -n -u USER``, no password prompt)."""
    name = request.get("user")
    prohibited = set(request.get("prohibited_uids") or [0])
    if not name:
        return pwd.getpwuid(agent_uid), None
    if not isinstance(name, str) or not USER_RE.match(name):
        raise AgentError("user", "invalid user name")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise AgentError("user", f"user {name!r} does not exist on this host") from None
    if pw.pw_uid in prohibited:
        raise AgentError("forbidden", f"user {name!r} is privileged and may not run kernels")
    if pw.pw_uid == agent_uid:
        return pw, None
    return pw, "setuid" if agent_uid == 0 else "sudo"


def pick_ports(ip, port_range, reserved, preferred=None):
    """Bind 5 free ports (held, not listening) inside *port_range* (or anywhere).

    *preferred* (the ports of the kernel's previous run, on restart) are taken when all
    five are free, so clients connected to the old kernel reach the new one.
    """
    held = []
    if preferred:
        for name in PORT_NAMES:
            port = preferred.get(name)
            sock = None
            in_range = not port_range or port_range[0] <= (port or 0) <= port_range[1]
            if isinstance(port, int) and port not in reserved and in_range:
                sock = try_hold(ip, port)
            if sock is None:
                for other in held:
                    other.close()
                held = []
                break
            held.append(sock)
        if held:
            return held
    try:
        if port_range:
            lo, hi = int(port_range[0]), int(port_range[1])
            candidates = [p for p in range(lo, hi + 1) if p not in reserved]
            random.shuffle(candidates)
            for port in candidates:
                if len(held) == len(PORT_NAMES):
                    break
                sock = try_hold(ip, port)
                if sock is not None:
                    held.append(sock)
            if len(held) < len(PORT_NAMES):
                raise AgentError(
                    "ports",
                    f"port range {lo}..{hi} is exhausted: fewer than {len(PORT_NAMES)} free ports",
                )
        else:
            while len(held) < len(PORT_NAMES):
                sock = try_hold(ip, 0)
                if sock is None:
                    raise AgentError("ports", f"no free port on {ip}")
                if sock.getsockname()[1] in reserved:
                    sock.close()
                    continue
                held.append(sock)
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return held


def try_hold(ip, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((ip, port))
    except OSError:
        sock.close()
        return None
    return sock


def write_connection_file(path, ip, ports, request, pw):
    conn = request.get("connection") or {}
    info = dict(ports)
    info.update(
        ip=ip,
        transport="tcp",
        key=str(conn.get("key", "")),
        signature_scheme=str(conn.get("signature_scheme", "hmac-sha256")),
        kernel_name=str(request.get("kernel_name", "")),
    )
    if conn.get("curve_secretkey"):
        info["curve_publickey"] = str(conn["curve_publickey"])
        info["curve_secretkey"] = str(conn["curve_secretkey"])
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        if pw.pw_uid != os.geteuid():
            os.fchown(fd, pw.pw_uid, pw.pw_gid)
        os.write(fd, json.dumps(info, indent=1).encode())
    finally:
        os.close(fd)


#: Run by ``sudo -n -u USER <python> -I -c RUNAS_BOOTSTRAP``: one JSON line on stdin carries
#: the helper modules and the kernel to start (secrets included: never on a command line).
RUNAS_BOOTSTRAP = (
    "import sys,json,types;d=json.loads(sys.stdin.buffer.readline())\n"
    "for n,s in d['modules']:\n"
    " m=types.ModuleType(n);sys.modules[n]=m;exec(compile(s,n,'exec'),m.__dict__)\n"
    "sys.modules[d['modules'][0][0]].exec_kernel(d['kernel'])"
)

#: Fixed programs run as the kernel's user through sudo; their only argument is a number or a
#: path the agent built itself.
KILL_GROUP_CODE = "import os,sys\ntry:\n os.killpg(int(sys.argv[1]),9)\nexcept OSError:\n pass"
REMOVE_DIR_CODE = "import shutil,sys\nshutil.rmtree(sys.argv[1],ignore_errors=True)"


def sudo_argv(user, python, code, *args):
    return ["sudo", "-n", "-u", user, "--", python, "-I", "-c", code, *args]


def exec_kernel(spec):
    """Runs as the kernel's user (under sudo): make the private files, then become the kernel.

    stdin is the payload pipe: it is replaced by /dev/null; stdout and stderr already are the
    kernel log the agent opened.
    """
    pw = pwd.getpwuid(os.getuid())
    try:
        secure_dir(runtime_root(pw.pw_uid), pw.pw_uid, pw.pw_gid)
        secure_dir(spec["runtime_dir"], pw.pw_uid, pw.pw_gid)
        write_connection_file(spec["connection_file"], spec["ip"], spec["ports"], spec, pw)
    except (AgentError, OSError) as exc:
        os.write(2, f"kernelfleet: cannot prepare the kernel's files: {exc}\n".encode())
        os._exit(126)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    argv = spec["argv"]
    try:
        os.chdir(spec["cwd"])
        os.execvpe(argv[0], argv, spec["env"])  # noqa: S606 - an argv list, no shell
    except OSError as exc:
        os.write(2, f"kernelfleet: executable not runnable: {argv[0]}: {exc.strerror}\n".encode())
    os._exit(127)


def popen_kernel(launch, hostlib_source, python):
    """Start the kernel process of *launch* (blocking: the agent runs it in a thread).

    The connection file is written first (under sudo, by the helper as the kernel's user);
    stdout and stderr go to the kernel log; the process gets a session of its own.
    """
    pw, mode, argv = launch["pw"], launch["mode"], launch["argv"]
    if mode != "sudo":
        write_connection_file(launch["connection_file"], launch["ip"], launch["ports"], launch, pw)
    log_fd = os.open(
        launch["log_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600
    )
    kwargs = {"env": launch["env"], "cwd": launch["cwd"], "stdin": subprocess.DEVNULL}
    payload = None
    if mode == "setuid":
        os.fchown(log_fd, pw.pw_uid, pw.pw_gid)
        kwargs.update(
            user=pw.pw_uid, group=pw.pw_gid, extra_groups=os.getgrouplist(pw.pw_name, pw.pw_gid)
        )
    elif mode == "sudo":
        spec = {k: v for k, v in launch.items() if k != "pw"}
        modules = [["kernelfleet_hostlib", hostlib_source]]
        payload = json.dumps({"modules": modules, "kernel": spec}) + "\n"
        argv = sudo_argv(pw.pw_name, python, RUNAS_BOOTSTRAP)
        kwargs = {"env": {"PATH": "/usr/bin:/bin"}, "cwd": "/", "stdin": subprocess.PIPE}
    try:
        popen = subprocess.Popen(
            argv, stdout=log_fd, stderr=log_fd, start_new_session=True, close_fds=True, **kwargs
        )
    except FileNotFoundError:
        raise AgentError("exec", f"executable not found: {argv[0]}") from None
    except PermissionError:
        raise AgentError("exec", f"executable not runnable: {argv[0]}") from None
    except OSError as exc:
        raise AgentError("exec", f"cannot start {argv[0]}: {exc.strerror}") from None
    finally:
        os.close(log_fd)
    if payload is not None:
        with contextlib.suppress(OSError):
            popen.stdin.write(payload.encode())
            popen.stdin.close()
    return popen
