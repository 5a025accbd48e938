"""A multi-host SSH testbed made of Linux network namespaces (root only).

``Testbed(n).up()`` builds *n* hosts on a bridge: host *i* is the network namespace
``kft-host<i>`` with address ``10.89.0.(10+i)``, its own sshd (own host key) running in its own
UTS namespace (``hostname`` says ``kft-host<i>``) and mount namespace with a private tmpfs on
``/tmp``. Everything else of the filesystem is shared, so the same Python and kernelspecs exist on
every host. The gateway side is the bridge address ``10.89.0.1`` in the root namespace. The
hosts have no default route: they reach nothing but each other and the gateway.

The names are a :class:`Network` (:data:`SSH_TESTBED` by default; tests/specs uses its own)
and differ from ``shared/tools/testbed.sh`` (bridge ``kfbr0``, 10.88.0.0/24, ``kf-host*``) so
both can run at once. Nothing global is edited (no /etc/hosts, no ~/.ssh): clients use
:attr:`Testbed.key` and :attr:`Testbed.known_hosts`. ``down()`` removes everything, also what
a crashed earlier run left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class Network:
    """The names a testbed owns. Testbeds with different names run side by side (each one's
    ``up()`` first removes whatever is left under its own names)."""

    bridge: str
    net: str  # the first three octets: the gateway side is .1, host i is .(10+i)
    ns_prefix: str  # netns, UTS host name and state subdirectory of host i: <prefix><i>
    veth_prefix: str
    state_dir: Path  # keys, known_hosts, per-host sshd files; <state_dir>.lock is the lock
    sftp: bool = False  # an SFTP subsystem in each sshd (as Debian's default config has)

    @property
    def gateway_ip(self) -> str:
        return f"{self.net}.1"


#: The testbed of tests/ssh and the benchmarks.
SSH_TESTBED = Network("kftbr0", "10.89.0", "kft-host", "kftv", Path("/run/kft-testbed"))


def _paths_under_tmp() -> list[Path]:
    """The checkout and the interpreter's prefix, where they are under /tmp (outermost only)."""
    candidates = {Path(__file__).resolve().parents[1], Path(sys.prefix).resolve()}
    under = sorted(p for p in candidates if p.is_relative_to("/tmp") and p != Path("/tmp"))
    return [p for p in under if not any(p != q and p.is_relative_to(q) for q in under)]


def _cgroup_mounts() -> str:
    """Shell commands that mount, inside a host's mount namespace, the machine's cgroup
    hierarchies that kernel profiles use (memory, cpu), as a real host has them: ``ip netns
    exec`` gives the namespace a fresh /sys without them. A v1 hierarchy mounted again with
    the same controllers is the same hierarchy, so the agent's cgroups are the machine's."""
    root = "/sys/fs/cgroup"
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    if any(m[1] == root and m[2] == "cgroup2" for m in mounts):
        return f"mount -t cgroup2 cgroup2 {root} && "
    steps = [f"mount -t tmpfs -o mode=755 kft-cgroup {root} && "]
    for _dev, path, fstype, options, *_ in mounts:
        if fstype != "cgroup" or not path.startswith(root + "/"):
            continue
        controllers = [o for o in options.split(",") if o in {"memory", "cpu", "cpuacct"}]
        if not controllers:
            continue
        name = path.rsplit("/", 1)[1]
        steps.append(
            f"mkdir -p {root}/{name} && "
            f"mount -t cgroup -o {','.join(controllers)} cgroup {root}/{name} && "
        )
        for alias in controllers:
            if alias != name:
                steps.append(f"ln -s {name} {root}/{alias} && ")
    return "".join(steps)


class TestbedBusy(RuntimeError):
    """Another process (a concurrent test session) holds the testbed."""

    __test__ = False


def acquire_lock(path: Path, wait: float, what: str) -> int:
    """An exclusive ``flock`` on *path* (its fd, held until closed); after *wait* s of another
    process holding it, :class:`TestbedBusy` naming *what*."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise TestbedBusy(f"another test session holds {what} ({path})") from None
            time.sleep(0.5)  # flock has no awaitable form; this is a test fixture


def wait_for(
    predicate: Callable[[], Any], limit: float, what: str, details: Callable[[], str] = str
) -> Any:
    """Poll *predicate* until it returns something truthy (returned); on timeout raise with
    *what* and *details()* (a cluster's daemon log tails)."""
    deadline = time.monotonic() + limit
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # a daemon still starting refuses connections
            last = exc
        else:
            if value:
                return value
        time.sleep(0.2)
    raise RuntimeError(f"{what} within {limit:g} s (last error: {last!r})\n{details()}")


def skip_or_fail(tier: str, reason: str) -> NoReturn:
    """Skip a test whose real parts cannot run here; under ``CI=true`` fail it instead, so
    that a CI machine missing them cannot go green by skipping the *tier*."""
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the {tier} tests cannot run: {reason} (CI=true: not skipped)")
    pytest.skip(reason)


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def missing_requirements() -> str | None:
    """Why the testbed cannot run here, or None."""
    if os.geteuid() != 0:
        return "the SSH testbed needs root (network namespaces, a bridge, sshd)"
    for tool, package in (
        (SSHD, "openssh-server"),
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("ssh-keygen", "openssh-client"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} is missing (install the Debian package {package})"
    return None


@dataclass
class TestHost:
    __test__ = False  # not a pytest test class

    index: int
    name: str
    ip: str
    netns: str
    veth: str
    dir: Path


class Testbed:
    """N SSH hosts in network namespaces; see the module docstring."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        n: int = 3,
        user: str | None = None,
        service_user: str | None = None,
        network: Network = SSH_TESTBED,
    ):
        """*user*: a plain account to impersonate; *service_user*: a non-root SSH login allowed
        to run ``/usr/bin/python3`` as any other non-root user through sudo, no password;
        *network*: the names this testbed owns (its lock and sudoers file follow them)."""
        self.n = n
        self.user = user
        self.service_user = service_user
        self.network = network
        self.gateway_ip = network.gateway_ip
        self.dir = network.state_dir
        self.lock_path = Path(f"{network.state_dir}.lock")
        self.sudoers = Path("/etc/sudoers.d") / network.state_dir.name
        self.key = self.dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        self.hosts = [
            TestHost(
                index=i,
                name=f"{network.ns_prefix}{i}",
                ip=f"{network.net}.{10 + i}",
                netns=f"{network.ns_prefix}{i}",
                veth=f"{network.veth_prefix}{i}",
                dir=self.dir / f"{network.ns_prefix}{i}",
            )
            for i in range(1, n + 1)
        ]
        self._lock: int | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def up(self, wait: float = 60.0) -> Testbed:
        """Build the testbed. Only one process may hold it (the names are fixed): waits up to
        *wait* seconds for another test session to finish, then raises :class:`TestbedBusy`."""
        self._acquire(wait)
        self.down(release=False)  # whatever a crashed earlier run left behind
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        _run(
            "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kft-testbed", "-f", str(self.key)
        )
        (self.dir / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        os.chmod(self.dir / "authorized_keys", 0o600)
        bridge = self.network.bridge
        _run("ip", "link", "add", bridge, "type", "bridge")
        _run("sysctl", "-qw", f"net.ipv6.conf.{bridge}.disable_ipv6=1", check=False)
        _run("ip", "addr", "add", f"{self.gateway_ip}/24", "dev", bridge)
        _run("ip", "link", "set", bridge, "up")
        lines = []
        for host in self.hosts:
            self._make_host(host)
            pub = (host.dir / "ssh_host_ed25519_key.pub").read_text().split()
            lines.append(f"{host.ip} {pub[0]} {pub[1]}\n")
        self.known_hosts.write_text("".join(lines))
        for host in self.hosts:
            self.start_sshd(host)
        for name in (self.user, self.service_user):
            if name:
                self._make_user(name)
        if self.service_user:
            self._authorize(self.service_user)
        if self.service_user and shutil.which("visudo"):
            rule = f"{self.service_user} ALL=(ALL,!root) NOPASSWD: /usr/bin/python3\n"
            tmp = self.dir / "sudoers"
            tmp.write_text(rule)
            _run("visudo", "-c", "-q", "-f", str(tmp))
            self.sudoers.write_text(rule)
            os.chmod(self.sudoers, 0o440)
        return self

    def _acquire(self, wait: float) -> None:
        self._lock = acquire_lock(self.lock_path, wait, "the SSH testbed")

    def down(self, release: bool = True) -> None:
        for netns in self._existing_netns():
            self._kill_netns(netns)
            _run("ip", "netns", "delete", netns, check=False)
        veth, bridge = self.network.veth_prefix, self.network.bridge
        for i in range(1, 64):
            if Path(f"/sys/class/net/{veth}{i}").exists():
                _run("ip", "link", "del", f"{veth}{i}", check=False)
        if Path(f"/sys/class/net/{bridge}").exists():
            _run("ip", "link", "del", bridge, check=False)
        if self.service_user:
            self.sudoers.unlink(missing_ok=True)
        marker = self.dir / "created_users"
        if marker.exists():
            for name in marker.read_text().split():
                _run("userdel", "-f", "-r", name, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        if release and self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def _existing_netns(self) -> list[str]:
        out = _run("ip", "netns", "list", check=False).stdout
        prefix = self.network.ns_prefix
        return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]

    def _make_host(self, host: TestHost) -> None:
        _run("ip", "netns", "add", host.netns)
        _run(
            "ip",
            "link",
            "add",
            host.veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.netns,
        )
        _run("sysctl", "-qw", f"net.ipv6.conf.{host.veth}.disable_ipv6=1", check=False)
        _run("ip", "link", "set", host.veth, "master", self.network.bridge, "up")
        _run(
            "ip",
            "netns",
            "exec",
            host.netns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.eth0.disable_ipv6=1",
            check=False,
        )
        _run("ip", "-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        _run("ip", "-n", host.netns, "link", "set", "lo", "up")
        _run("ip", "-n", host.netns, "link", "set", "eth0", "up")
        host.dir.mkdir(mode=0o700)
        _run(
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            host.name,
            "-f",
            str(host.dir / "ssh_host_ed25519_key"),
        )
        (host.dir / "sshd_config").write_text(
            f"ListenAddress {host.ip}:22\n"
            f"HostKey {host.dir}/ssh_host_ed25519_key\n"
            f"PidFile {host.dir}/sshd.pid\n"
            f"AuthorizedKeysFile .ssh/authorized_keys {self.dir}/authorized_keys\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "UseDNS no\n"
            "StrictModes no\n"
            "MaxStartups 200:30:400\n"
            "MaxSessions 50\n"
            "PermitUserEnvironment no\n"
            + ("Subsystem sftp internal-sftp\n" if self.network.sftp else "")
        )

    def start_sshd(self, host: TestHost) -> None:
        """(Re)start the host's sshd in its own UTS + mount namespace with a private /tmp.

        A checkout or virtualenv that lives under /tmp (a CI clone, say) stays visible on the
        hosts: it is bind-mounted aside, the private tmpfs goes on /tmp, and it is mounted
        back at the same path ("same path on every host", as a real fleet has it)."""
        keep = _paths_under_tmp()
        stash = [f"{host.dir}/keep{i}" for i in range(len(keep))]
        before = "".join(
            f"mkdir -p {shlex.quote(s)} && mount --bind {shlex.quote(str(p))} {shlex.quote(s)} && "
            for p, s in zip(keep, stash, strict=True)
        )
        after = "".join(
            f"mkdir -p {shlex.quote(str(p))} && "
            f"mount --bind {shlex.quote(s)} {shlex.quote(str(p))} && "
            for p, s in zip(keep, stash, strict=True)
        )
        inner = (
            f"hostname {host.name} && {_cgroup_mounts()}{before}"
            f"mount -t tmpfs -o mode=1777 kft-{host.name}-tmp /tmp && {after}"
            f"exec {SSHD} -f {host.dir}/sshd_config -E {host.dir}/sshd.log"
        )
        _run(
            "ip",
            "netns",
            "exec",
            host.netns,
            "unshare",
            "--uts",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            inner,
        )
        deadline = time.monotonic() + 5
        while True:  # sshd daemonizes before it listens; nothing to wait on but the port
            with contextlib.suppress(OSError), socket.create_connection((host.ip, 22), 0.2):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd of {host.name} did not come up: see {host.dir}")
            time.sleep(0.02)

    def _make_user(self, name: str) -> None:
        try:
            pwd.getpwnam(name)
        except KeyError:
            _run("useradd", "-m", "-s", "/bin/bash", name)
            with open(self.dir / "created_users", "a") as f:
                f.write(name + "\n")
        _run("usermod", "-p", "*", name)

    def _authorize(self, name: str) -> None:
        """Let *name* log in with the testbed key (sshd reads keys as the user, and the
        testbed directory is root's)."""
        pw = pwd.getpwnam(name)
        ssh_dir = Path(pw.pw_dir) / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        key = Path(f"{self.key}.pub").read_text()
        existing = keys.read_text() if keys.exists() else ""
        if key not in existing:
            keys.write_text(existing + key)
        for path in (ssh_dir, keys):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        os.chmod(keys, 0o600)

    # -- inspection and faults ----------------------------------------------------------------
    def host(self, index: int) -> TestHost:
        return self.hosts[index - 1]

    def by_ip(self, ip: str) -> TestHost:
        for host in self.hosts:
            if host.ip == ip:
                return host
        raise KeyError(ip)

    def pids(self, host: TestHost) -> list[int]:
        out = _run("ip", "netns", "pids", host.netns, check=False).stdout
        return [int(p) for p in out.split()]

    def processes(self, host: TestHost) -> dict[int, str]:
        """pid -> command line of every process in the host."""
        procs = {}
        for pid in self.pids(host):
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            procs[pid] = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
        return procs

    def processes_matching(self, host: TestHost, text: str) -> dict[int, str]:
        return {pid: cmd for pid, cmd in self.processes(host).items() if text in cmd}

    def sshd_pid(self, host: TestHost) -> int | None:
        for pid, cmd in self.processes(host).items():
            if f"{host.dir}/sshd_config" in cmd and "listener" in cmd:
                return pid
        return None

    def run_in(self, host: TestHost, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run *argv* inside the host (its network, UTS and mount namespaces)."""
        pid = self.sshd_pid(host)
        if pid is None:
            raise RuntimeError(f"{host.name} has no sshd to enter")
        return _run("nsenter", "-t", str(pid), "-n", "-u", "-m", "--", *argv, check=False)

    def kill_host(self, host: TestHost) -> None:
        """Kill every process of the host: its sshd, agents and kernels."""
        self._kill_netns(host.netns, grace=0)

    def revive(self, host: TestHost) -> None:
        """Undo what a test did to *host*: its link up, its sshd running."""
        self.set_link(host, True)
        if self.sshd_pid(host) is None:
            self.start_sshd(host)

    def set_link(self, host: TestHost, up: bool) -> None:
        _run("ip", "link", "set", host.veth, "up" if up else "down")

    def _kill_netns(self, netns: str, grace: float = 2.0) -> None:
        def pids() -> list[int]:
            out = _run("ip", "netns", "pids", netns, check=False).stdout
            return [int(p) for p in out.split()]

        if grace:
            for pid in pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while pids() and time.monotonic() < deadline:
                time.sleep(0.05)
        for pid in pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 2
        while pids() and time.monotonic() < deadline:
            time.sleep(0.02)


@contextlib.contextmanager
def running_testbed(n: int, *, wait: float = 60.0, **kwargs: Any) -> Iterator[Testbed]:
    """A testbed of *n* hosts for a pytest fixture: the test skips (with the reason) when the
    testbed cannot run here or another test session holds it; it is taken down after."""
    import pytest

    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    bed = Testbed(n, **kwargs)
    try:
        bed.up(wait=wait)
    except TestbedBusy as exc:
        pytest.skip(str(exc))
    try:
        yield bed
    finally:
        bed.down()
