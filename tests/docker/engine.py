"""A private Docker engine for the tests: Debian's ``docker.io`` started by hand (root only).

Layout (docs/resource-managers.md §3, with this testbed's own names): one ``dockerd`` in the
root network namespace, listening only on :data:`SOCKET`. Its default ``bridge`` network is
the bridge ``kfdock0`` holding 10.92.0.1/24, which we create before dockerd starts, so
containers get 10.92.0.x and reach the gateway side at 10.92.0.1; the gateway dials them
directly. dockerd runs with ``--iptables=false --ip-masq=false --ip-forward=false``: nothing is
published, NATed or forwarded, and no firewall rule or sysctl of the machine is changed (the
few sysctls dockerd could touch are recorded anyway and put back by :meth:`DockerEngine.down`).
Container cgroups live under ``/kf-docker`` in every hierarchy.

dockerd starts its own containerd (state under the exec root). Its data root is
``$KF_TEST_CACHE/docker-<version>`` (default ``/opt/kernelfleet-test``), outside the
repository and kept between runs, so a loaded image is loaded once per machine; everything
else (containers, services, the swarm, networks) is removed at ``up()`` and ``down()``. No
image is ever pulled: images come from ``docker load`` of the archives that
:mod:`kernelfleet.images.build` writes, or from ``docker import`` of a rootfs tar
(:meth:`DockerEngine.import_busybox`). dockerd runs as a production engine would: a Swarm
task of a *tagged* image makes dockerd itself try a pull first (and log its failure), so the
provisioner names a service's image by its ID, which dockerd never pulls.

Swarm is started on demand (:meth:`DockerEngine.swarm_init`), one node, managers on
127.0.0.1, overlay subnets from 10.96.0.0/16. A service on the ``bridge`` network runs its task
as a container on ``kfdock0``; the task's ``NetworksAttachments`` carries no address there, so
read it from the task's container (:meth:`DockerEngine.task_container_ip`).

Only one engine runs at a time (:data:`LOCK`). Started by hand with ``python -m
tests.docker.engine up`` (``make docker-up``) it keeps running after the command; ``down``
(``make docker-down``) stops it, and so does the next test session, which always starts an
engine of its own.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from kernelfleet.images.build import load_into_docker
from kernelfleet.images.oci import TarEntry, write_rootfs_tar
from tests.k8s.node import alive, kill_processes, unmount_under
from tests.testbed import acquire_lock, wait_for

STATE_DIR = Path("/run/kf-docker")
LOCK = Path("/run/kf-docker.lock")
SOCKET = STATE_DIR / "docker.sock"
DOCKERD = "/usr/sbin/dockerd"
BRIDGE = "kfdock0"
GATEWAY_IP = "10.92.0.1"
SUBNET = ipaddress.IPv4Network("10.92.0.0/24")
#: Where Swarm takes the subnets of its overlay networks (``ingress``, ``docker_gwbridge``).
SWARM_POOL = ipaddress.IPv4Network("10.96.0.0/16")
GWBRIDGE = "docker_gwbridge"
CGROUP_PARENT = "kf-docker"
API_VERSION = "v1.41"  # Docker 20.10's
#: The label the gateway puts on what it creates (containers, services).
MANAGED_BY = ("app.kubernetes.io/managed-by", "kernelfleet")
BUSYBOX_IMAGE = "kernelfleet.test/busybox:docker"
#: Processes of ours, recognized by a path under :data:`STATE_DIR` among their arguments.
OUR_EXECUTABLES = frozenset({"dockerd", "containerd", "containerd-shim-runc-v2", "docker-proxy"})
#: What dockerd's forwarding flags govern: recorded at ``up()``, put back at ``down()``.
SYSCTLS = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
#: tool -> the Debian package that has it
TOOLS = {"dockerd": "docker.io", "docker": "docker.io", "ip": "iproute2", "umount": "mount"}


def missing_requirements() -> str | None:
    """Why the engine cannot run here, or None."""
    if os.geteuid() != 0:
        return "the Docker testbed needs root (a bridge, dockerd, mounts)"
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} is missing (install the Debian package {package})"
    return None


def cache_dir() -> Path:
    """``$KF_TEST_CACHE``, else ``/opt/kernelfleet-test`` (as scripts/*-deps.sh read it)."""
    return Path(os.environ.get("KF_TEST_CACHE") or "/opt/kernelfleet-test")


def dockerd_version() -> str:
    """dockerd's version number ("20.10.24"), or ``unknown`` if it does not say."""
    with contextlib.suppress(OSError):
        out = subprocess.run([DOCKERD, "--version"], capture_output=True, text=True).stdout
        found = re.search(r"version (\d+(?:\.\d+)+)", out)
        if found:
            return found.group(1)
    return "unknown"


def docker_cli() -> str:
    """Debian's client (the engine's own version) when installed, else whatever is on PATH."""
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def read_sysctls(keys: tuple[str, ...] = SYSCTLS) -> dict[str, str]:
    found = {}
    for key in keys:
        with contextlib.suppress(OSError):
            found[key] = Path("/proc/sys", *key.split(".")).read_text().strip()
    return found


def write_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        path = Path("/proc/sys", *key.split("."))
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value)


def _ip(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *argv], check=check, capture_output=True, text=True)


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _link_addresses(name: str) -> list[ipaddress.IPv4Interface]:
    out = _ip("-j", "-4", "addr", "show", "dev", name, check=False).stdout or "[]"
    return [
        ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
        for link in json.loads(out)
        for a in link.get("addr_info", [])
    ]


def _cgroup_parents() -> list[Path]:
    """Our cgroup parent in every mounted cgroup hierarchy where it exists."""
    roots = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] in ("cgroup", "cgroup2"):
            roots.append(Path(fields[1]) / CGROUP_PARENT)
    return [r for r in roots if r.is_dir()]


def _kill_cgroup_processes() -> None:
    """SIGKILL whatever still runs in a container cgroup (the containers of a killed engine)."""
    for parent in _cgroup_parents():
        for procs in parent.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)


def _remove_cgroups() -> list[Path]:
    """Remove our cgroups, leaves first; return those that would not go."""
    left = []
    for parent in _cgroup_parents():
        for group in sorted(
            (p for p in parent.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
        ):
            with contextlib.suppress(OSError):
                group.rmdir()
        try:
            parent.rmdir()
        except OSError:
            left.append(parent)
    return left


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection over a unix socket (the Docker API's transport)."""

    def __init__(self, path: Path, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DockerApiError(RuntimeError):
    def __init__(self, code: int, method: str, path: str, body: str):
        super().__init__(f"{method} {path}: HTTP {code}: {body[:2000]}")
        self.code = code
        self.body = body


class DockerEngine:
    """See the module docstring. ``up()``, then ``down()``; a person uses the same engine
    through ``python -m tests.docker.engine up|down|status`` and ``docker -H <host>``."""

    def __init__(self, state_dir: Path = STATE_DIR, data_root: Path | None = None):
        self.dir = state_dir
        self.data_root = data_root or cache_dir() / f"docker-{dockerd_version()}"
        self.timings: dict[str, float] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock: int | None = None

    # -- addresses ------------------------------------------------------------------------------
    gateway_ip = GATEWAY_IP
    subnet = SUBNET
    bridge = BRIDGE

    @property
    def socket_path(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def host(self) -> str:
        """What ``docker -H`` and ``DOCKER_HOST`` take: ``unix:///run/kf-docker/docker.sock``."""
        return f"unix://{self.socket_path}"

    @property
    def exec_root(self) -> Path:
        return self.dir / "exec"

    @property
    def pidfile(self) -> Path:
        return self.dir / "docker.pid"

    @property
    def log_path(self) -> Path:
        return self.dir / "dockerd.log"

    # -- lifecycle ------------------------------------------------------------------------------
    def up(self, timeout: float = 30, wait: float = 60) -> DockerEngine:
        """Remove what an earlier run left, make the bridge and start dockerd; ready when it
        answers ``/_ping`` and no container, service or swarm of an earlier run is left in
        the data root. Raises :class:`~tests.testbed.TestbedBusy` if another process holds
        the engine for more than *wait* s; on failure, tears down and raises with the log."""
        if self._lock is None:
            self._lock = acquire_lock(LOCK, wait, "the Docker testbed")
        try:
            self._cleanup()
            t0 = time.monotonic()
            self.dir.mkdir(mode=0o700, parents=True)
            (self.dir / "sysctls.json").write_text(json.dumps(read_sysctls()))
            self.data_root.mkdir(parents=True, exist_ok=True)
            _ip("link", "add", BRIDGE, "type", "bridge")
            subprocess.run(
                ["sysctl", "-qw", f"net.ipv6.conf.{BRIDGE}.disable_ipv6=1"], capture_output=True
            )
            _ip("addr", "add", f"{GATEWAY_IP}/{SUBNET.prefixlen}", "dev", BRIDGE)
            _ip("link", "set", BRIDGE, "up")
            self.start_engine(timeout)
            self._purge()  # a crashed run's containers and swarm come back with the data root
            self.timings["up_s"] = time.monotonic() - t0
        except BaseException:
            try:
                self.down()
            except Exception as exc:  # keep the start's error; say what cleanup left
                print(f"DockerEngine.down() after a failed start: {exc}", file=sys.stderr)
            raise
        return self

    def down(self) -> None:
        """Remove every service and container (the data root is the testbed's alone), leave
        the swarm, stop dockerd and kill whatever it left running (containerd, shims,
        container processes), unmount what is still mounted under the state dir and the data
        root, delete ``docker_gwbridge`` and ``kfdock0``, put the sysctls back, remove our
        cgroups and the state dir; the data root (images) stays. Also cleans what a crashed
        earlier run left. Safe to call twice, and from another process than ``up()``'s."""
        if self._lock is None:
            self._lock = acquire_lock(LOCK, 60, "the Docker testbed")
        try:
            self._cleanup()
        finally:
            self._release()

    def _cleanup(self) -> None:
        """What :meth:`down` does, under the lock already held."""
        if self._dockerd_pid() is not None:
            with contextlib.suppress(Exception):
                if self.ping():
                    self._purge()
        self.stop_engine()
        _kill_cgroup_processes()
        still = unmount_under(self.dir) + unmount_under(self.data_root)
        if _link_exists(GWBRIDGE) and all(
            a.network.subnet_of(SWARM_POOL) for a in _link_addresses(GWBRIDGE)
        ):  # ours (its subnet came from our pool); another engine's keeps its own
            _ip("link", "del", GWBRIDGE, check=False)
        if _link_exists(BRIDGE):
            _ip("link", "del", BRIDGE, check=False)
        with contextlib.suppress(OSError, ValueError):
            write_sysctls(json.loads((self.dir / "sysctls.json").read_text()))
        problems = [f"still mounted: {p}" for p in still]
        problems += [f"cgroup not removed: {g}" for g in _remove_cgroups()]
        if still:  # never rmtree through a mount
            raise RuntimeError("; ".join(problems))
        shutil.rmtree(self.dir, ignore_errors=True)
        if problems:
            raise RuntimeError("; ".join(problems))

    def _purge(self) -> None:
        """Remove services, the swarm, containers and user-defined networks (not images)."""
        for service in self.api("GET", "/services") if self.swarm_state() == "active" else []:
            with contextlib.suppress(DockerApiError):
                self.api("DELETE", f"/services/{service['ID']}")
        if self.swarm_state() not in ("inactive", None):
            self.api("POST", "/swarm/leave?force=1")
        for container in self.api("GET", "/containers/json?all=1"):
            with contextlib.suppress(DockerApiError):  # 404/409: swarm removes its own too
                self.api("DELETE", f"/containers/{container['Id']}?force=1&v=1")
        self.api("POST", "/networks/prune")

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    # -- the daemon -----------------------------------------------------------------------------
    def start_engine(self, timeout: float = 30) -> None:
        """Start dockerd (its own session and process group) on the existing bridge and wait
        for ``/_ping``; with :meth:`stop_engine`, lets a test take the engine away and back."""
        t0 = time.monotonic()
        self.exec_root.mkdir(parents=True, exist_ok=True)
        (self.dir / "client").mkdir(exist_ok=True)
        (self.dir / "daemon.json").write_text("{}\n")  # not /etc/docker/daemon.json
        argv = [
            DOCKERD,
            "--config-file", f"{self.dir}/daemon.json",
            "--data-root", str(self.data_root),
            "--exec-root", str(self.exec_root),
            "--pidfile", str(self.pidfile),
            "-H", self.host,
            "--bridge", BRIDGE,
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--cgroup-parent", f"/{CGROUP_PARENT}",
            "--shutdown-timeout", "2",
        ]  # fmt: skip
        with open(self.log_path, "ab") as out:
            proc = subprocess.Popen(
                argv,
                env=ENV,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._proc = proc

        def answered() -> str | bool:
            return "exited" if proc.poll() is not None else self.ping()

        if wait_for(answered, timeout, "dockerd did not answer /_ping", self.log_tails) == "exited":
            raise RuntimeError(f"dockerd exited at start ({proc.returncode})\n{self.log_tails()}")
        self.timings["engine_start_s"] = time.monotonic() - t0

    def stop_engine(self, grace: float = 15) -> None:
        """SIGTERM dockerd (it stops its containers and its containerd) and wait; SIGKILL
        after *grace* s; then kill what it left of ours. The bridge and state dir stay."""
        pid = self._dockerd_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while alive(pid) and time.monotonic() < deadline:
                if self._proc is not None and self._proc.poll() is not None:
                    break
                time.sleep(0.05)
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
            self._proc = None
        kill_processes(self.dir, OUR_EXECUTABLES)

    def _dockerd_pid(self) -> int | None:
        """The running dockerd of this state dir: from the pidfile, else found by its argv
        (a dockerd killed before it wrote the pidfile, or one whose pidfile is gone)."""
        candidates = []
        with contextlib.suppress(OSError, ValueError):
            candidates.append(int(self.pidfile.read_text()))
        if self._proc is not None:
            candidates.append(self._proc.pid)
        marker = f"{self.dir}/".encode()
        for pid in candidates:
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if argv[0].endswith(b"dockerd") and any(marker in a for a in argv) and alive(pid):
                    return pid
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                ours = argv[0].endswith(b"dockerd") and any(marker in a for a in argv)
                if ours and alive(int(proc.name)):
                    return int(proc.name)
        return None

    def ping(self) -> bool:
        try:
            conn = UnixHTTPConnection(self.socket_path, timeout=2)
            try:
                conn.request("GET", "/_ping")
                return conn.getresponse().read() == b"OK"
            finally:
                conn.close()
        except OSError:
            return False

    def log_tails(self, chars: int = 4000) -> str:
        """The end of dockerd's log (containerd's output is in it too)."""
        try:
            text = self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            text = "(no log)"
        return f"--- dockerd ({self.log_path}):\n{text}"

    def status(self) -> dict[str, Any]:
        """Whether dockerd runs (pid) and answers, the bridge, the swarm, images, containers."""
        state: dict[str, Any] = {
            "dockerd": self._dockerd_pid(),
            "ping": self.ping(),
            "host": self.host,
            "bridge": _link_exists(BRIDGE),
            "data_root": str(self.data_root),
        }
        if state["ping"]:
            state["swarm"] = self.swarm_state()
            state["images"] = self.images()
            state["containers"] = len(self.containers())
        return state

    # -- API and CLI ----------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        """One Docker API request (``/v1.41`` + *path*); the JSON answer (text if not JSON,
        None if empty). Raises :class:`DockerApiError` on an HTTP error."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn = UnixHTTPConnection(self.socket_path, timeout)
        try:
            conn.request(method, f"/{API_VERSION}{path}", body=data, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
        finally:
            conn.close()
        if resp.status >= 400:
            raise DockerApiError(resp.status, method, path, text)
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``docker -H <host> ARGS`` (Debian's client); raises with its stderr if *check*."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = str(self.dir / "client")  # not root's ~/.docker
        done = subprocess.run(
            [docker_cli(), "-H", self.host, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done

    # -- images ---------------------------------------------------------------------------------
    def images(self) -> list[str]:
        """Every repo tag the engine has, sorted."""
        return sorted(
            tag for image in self.api("GET", "/images/json") for tag in image.get("RepoTags") or []
        )

    def load_image(self, archive: Path) -> None:
        """``docker load`` of an archive of :func:`kernelfleet.images.build.build_image`."""
        t0 = time.monotonic()
        load_into_docker(archive, self.host)
        self.timings["image_load_s"] = time.monotonic() - t0

    def import_busybox(self, tag: str = BUSYBOX_IMAGE) -> str:
        """A tiny image *tag* (returned): Debian's static busybox with a link in ``/bin`` per
        applet (``sh``, ``nc``, ``sleep``…), made with ``docker import`` unless present."""
        if tag in self.images():
            return tag
        busybox = Path("/bin/busybox")
        if not busybox.exists():
            raise RuntimeError(
                "/bin/busybox is missing (install the Debian package busybox-static)"
            )
        applets = subprocess.run(
            [str(busybox), "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        entries = [TarEntry.dir(p) for p in ("bin", "etc", "proc", "sys", "dev", "root")]
        entries.append(TarEntry.dir("tmp", mode=0o1777))
        entries.append(TarEntry.file("bin/busybox", busybox.read_bytes(), mode=0o755))
        entries += [TarEntry.symlink(f"bin/{a}", "busybox") for a in applets if a != "busybox"]
        entries.append(TarEntry.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"))
        entries.append(TarEntry.file("etc/group", b"root:x:0:\n"))
        rootfs = self.dir / "busybox-rootfs.tar"
        write_rootfs_tar(rootfs, entries)
        try:
            self.docker("import", "-c", 'CMD ["/bin/sh"]', "-c", "ENV PATH=/bin", str(rootfs), tag)
        finally:
            rootfs.unlink(missing_ok=True)
        return tag

    # -- containers and services ----------------------------------------------------------------
    def containers(self, label_filter: str | None = None) -> list[dict[str, Any]]:
        """All containers (running or not), or those with label *label_filter* (``key`` or
        ``key=value``), as ``GET /containers/json`` lists them."""
        query = "?all=1"
        if label_filter:
            filters = json.dumps({"label": [label_filter]})
            query += f"&filters={urllib.parse.quote(filters)}"
        found: list[dict[str, Any]] = self.api("GET", f"/containers/json{query}")
        return found

    def container_ip(self, container: str, network: str = "bridge") -> str | None:
        """The address of a running *container* on *network* (a stopped one has none)."""
        info = self.api("GET", f"/containers/{container}/json")
        address = info["NetworkSettings"]["Networks"].get(network, {}).get("IPAddress")
        return address or None

    def swarm_state(self) -> str | None:
        """This node's swarm state (``inactive``, ``active``, …), None if dockerd is down."""
        try:
            info = self.api("GET", "/info", timeout=10)
        except OSError:
            return None
        state: str = info["Swarm"]["LocalNodeState"]
        return state

    def swarm_init(self) -> None:
        """Make this engine a one-node swarm manager (nothing to do if it is one already)."""
        if self.swarm_state() == "active":
            return
        t0 = time.monotonic()
        self.docker(
            "swarm", "init",
            "--advertise-addr", "127.0.0.1",
            "--default-addr-pool", str(SWARM_POOL),
        )  # fmt: skip
        self.timings["swarm_init_s"] = time.monotonic() - t0

    def service_tasks(self, service: str) -> list[dict[str, Any]]:
        """The tasks of *service* (name or id), as ``GET /tasks`` lists them."""
        filters = urllib.parse.quote(json.dumps({"service": [service]}))
        found: list[dict[str, Any]] = self.api("GET", f"/tasks?filters={filters}")
        return found

    def task_container_ip(self, task: dict[str, Any], network: str = "bridge") -> str | None:
        """A running task's address on *network*, read from its container: on the predefined
        ``bridge`` network the task's ``NetworksAttachments`` has none."""
        container = (task.get("Status", {}).get("ContainerStatus") or {}).get("ContainerID")
        return self.container_ip(container, network) if container else None


# -- make docker-up / docker-down / docker-status -----------------------------------------------
def main(argv: list[str]) -> int:
    usage = "usage: python -m tests.docker.engine up|down|status"
    if len(argv) != 1 or argv[0] not in ("up", "down", "status"):
        print(usage, file=sys.stderr)
        return 2
    engine = DockerEngine()
    if argv[0] == "down":
        engine.down()
        print(f"stopped; {STATE_DIR} removed (images stay in {engine.data_root})")
        return 0
    if argv[0] == "status":
        state = engine.status()
        print(json.dumps(state, indent=1))
        return 0 if state["ping"] else 1
    reason = missing_requirements()
    if reason:
        print(reason, file=sys.stderr)
        return 3
    engine.up()
    engine._release()  # dockerd outlives this process; `down` takes the lock again
    print(
        f"Docker is up in {engine.timings['up_s']:.1f} s.\n"
        f"  export DOCKER_HOST={engine.host}\n"
        f"  containers get {SUBNET} on {BRIDGE}, the host side is {GATEWAY_IP}\n"
        f"  images ({engine.data_root}): {', '.join(engine.images()) or 'none'}\n"
        f"  log: {engine.log_path}; stop with: make docker-down"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
