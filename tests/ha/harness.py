"""Several gateway replicas on one PostgreSQL store, behind a real HAProxy.

The setup, all on 127.0.0.1 and all children of the test process:

- one PostgreSQL 15 server per test module (:func:`postgres_server`: ``initdb`` as the
  ``postgres`` user, a private unix socket directory, no TCP), and one fresh database per
  :class:`ReplicaSet`, dropped at its end;
- N ``kernelfleet serve`` processes (:class:`tests.gatewayproc.GatewayProcess`), numbered from
  1: replica *i* has its own data directory and Jupyter dirs, ``KF_GATEWAY_ID=ha-<i>``, and
  shares with the others the store URL, the key file that encrypts kernel secrets in the store
  (``KF_SECRET_KEY_FILE``), the token and a private kernelspec directory;
- Debian's HAProxy 2.6 (``/usr/sbin/haproxy -f cfg -db``: foreground, no systemd), its config
  from :func:`tests.ha.haproxy_config.build_haproxy_config`: a frontend on a free port, server
  ``gw<i>`` per replica, health checks on ``GET /readyz`` every 500 ms (fall 2, rise 1: a dead
  replica is out in about a second), redispatch on connection failure, and an ``X-Served-By``
  response header naming the replica that answered. Its runtime API (a private unix socket,
  ``level admin``) is how tests see server states (:meth:`ReplicaSet.states`,
  :meth:`ReplicaSet.wait_for_state`) instead of sleeping.

``kill(i)`` SIGKILLs replica *i*; ``start(i)`` starts it again. GatewayProcess picks its own
free port, so a restarted replica listens on a new one and HAProxy's server is repointed at it
through the runtime API (``set server … addr … port …``), as a proxy in front of pods is.

Versions: a replica runs this checkout's gateway unless told to run another source tree
(``sources`` at construction, ``source`` of :meth:`ReplicaSet.start`; e.g. the previous release
from :mod:`tests.ha.previous`): it then runs with ``PYTHONPATH`` and its working directory set
to that tree, whose ``kernelfleet`` package shadows this checkout's. A set may start with only
some replicas (``started``): the others' HAProxy servers wait in maintenance until
:meth:`ReplicaSet.start` brings them in, as a replica added to a running set would be.
:meth:`ReplicaSet.stop` SIGTERMs a replica (its stop mode, ``KF_STOP_MODE``, which
``replica_env`` may set per replica, says what happens to its kernels); a replaced process's
log stays in :meth:`ReplicaSet.diagnostics`.

Kernels are local ipykernels (a first version; remote hosts are left for later). The
kernelspec gives each kernel a marker variable naming the replica set, so that the end of the
set kills every kernel it caused, whichever replica started or adopted it, even one whose
gateway was SIGKILLed. :meth:`ReplicaSet.close` runs even when a test fails: kernels shut down
through a live replica, replicas stopped (SIGTERM, then SIGKILL), leftover kernels killed,
HAProxy stopped, the database dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from kernelfleet.client import GatewayClient
from tests.gatewayproc import GatewayProcess, free_port
from tests.ha.haproxy_config import Replica, ServerState, build_haproxy_config, parse_servers_state
from tests.ha.previous import replica_env as source_env

log = logging.getLogger(__name__)

HAPROXY = "/usr/sbin/haproxy"
BACKEND = "gateways"
SERVED_BY = "X-Served-By"
TOKEN = "ha-token"
#: Environment variable the kernelspec gives every kernel, valued with its replica set's id.
MARKER = "KF_HA_TEST_SET"


def missing_parts() -> str | None:
    """Why the harness cannot run here, or None."""
    if not os.path.exists(HAPROXY):
        return f"{HAPROXY} not installed (make test installs Debian's haproxy)"
    if not _pg_bin("initdb") or not _pg_bin("pg_ctl") or shutil.which("runuser") is None:
        return "PostgreSQL server binaries not installed (make test installs them)"
    if os.geteuid() != 0:
        return "starting PostgreSQL as the postgres user needs root"
    return None


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server on a private unix socket; yields the URL of its ``postgres`` db."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    assert initdb and pg_ctl, missing_parts()
    root = tempfile.mkdtemp(prefix="kf-ha-pg-")  # short: a socket path has 107 bytes at most
    os.chmod(root, 0o755)
    shutil.chown(root, "postgres")
    data = os.path.join(root, "data")
    as_pg = ["runuser", "-u", "postgres", "--"]
    try:
        subprocess.run(
            [*as_pg, initdb, "-D", data, "-A", "trust", "--no-sync"],
            check=True,
            capture_output=True,
        )
        options = f"-c listen_addresses='' -k {root} -c fsync=off"
        subprocess.run(
            [*as_pg, pg_ctl, "-D", data, "-w", "-l", f"{root}/log", "-o", options, "start"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://postgres@/postgres?host={root}"
    finally:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run(
                [*as_pg, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True
            )
        shutil.rmtree(root, ignore_errors=True)


def _admin_sql(server_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql)  # names the harness made, no input


def marked_pids(marker_value: str) -> list[int]:
    """Live processes whose environment has ``MARKER=marker_value``."""
    needle = f"{MARKER}={marker_value}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0") and b") Z " not in stat:
            pids.append(int(entry))
    return pids


def _poll(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Call *check* every 50 ms until it is true; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


class HAProxyProcess:
    """``haproxy -f cfg -db`` in the foreground: its config and log (stdout: one line per
    request and per server state change) in *files*, its pid file and runtime API socket in
    *run_dir* (a short path: a unix socket's has at most 107 bytes)."""

    def __init__(self, files: Path, run_dir: Path, replicas: list[Replica]) -> None:
        files.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.socket_path = str(run_dir / "admin.sock")
        self.config_path = files / "haproxy.cfg"
        self.config_path.write_text(
            build_haproxy_config(
                replicas,
                bind_host="127.0.0.1",
                bind_port=self.port,
                stats_socket=self.socket_path,
                pidfile=str(run_dir / "haproxy.pid"),
                backend=BACKEND,
                served_by_header=SERVED_BY,
            )
        )
        self.log_path = files / "haproxy.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [HAPROXY, "-f", str(self.config_path), "-db"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            _poll(self._answers, 15, "HAProxy's runtime API")
        except AssertionError:
            self.stop()
            raise AssertionError(f"HAProxy did not start:\n{self.output()}") from None

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"HAProxy exited ({self.proc.returncode}):\n{self.output()}")
        try:
            return self.command("show info").startswith("Name: HAProxy")
        except OSError:
            return False

    def command(self, line: str) -> str:
        """One runtime API command (non-interactive: HAProxy answers and closes)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.socket_path)
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def states(self) -> dict[str, ServerState]:
        return {
            s.name: s for s in parse_servers_state(self.command(f"show servers state {BACKEND}"))
        }

    def set_state(self, server: str, state: str) -> None:
        """Set *server*'s administrative state: ``ready``, ``drain`` or ``maint``."""
        answer = self.command(f"set server {BACKEND}/{server} state {state}").strip()
        if answer:
            raise AssertionError(f"HAProxy refused to set {server} to {state}: {answer}")

    def repoint(self, server: str, host: str, port: int) -> None:
        answer = self.command(f"set server {BACKEND}/{server} addr {host} port {port}")
        if "changed" not in answer and "no need to change" not in answer:
            raise AssertionError(f"HAProxy refused to repoint {server}: {answer.strip()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class ReplicaSet:
    """*n* gateway replicas on the store at *server_url* (a fresh database), behind HAProxy.

    Replicas are numbered 1..n; HAProxy calls replica *i* ``gw<i>``. Use as a context manager,
    or call :meth:`close`: everything started is stopped even if starting failed half-way.

    *env*: settings for every replica. *started*: the replicas started now (default: all);
    the others are started by :meth:`start`. *sources*: replica → the source tree it runs
    (default: this checkout's gateway). *replica_env*: replica → settings for that replica's
    first process only (over *env*).
    """

    def __init__(
        self,
        root: Path,
        server_url: str,
        n: int = 3,
        token: str = TOKEN,
        env: dict[str, str] | None = None,
        *,
        started: Iterable[int] | None = None,
        sources: Mapping[int, Path] | None = None,
        replica_env: Mapping[int, Mapping[str, str]] | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex[:10]
        self.extra_env = dict(env or {})  # more settings for every replica
        self.root = root
        self.n = n
        self.token = token
        self.store_url = ""
        self.replicas: dict[int, GatewayProcess] = {}
        #: The source tree each replica's current process runs (None: this checkout).
        self.sources: dict[int, Path | None] = {}
        #: Each replica's current process's gateway id (``KF_GATEWAY_ID``).
        self.gateway_ids: dict[int, str] = {}
        #: Processes that a later :meth:`start` of their replica replaced (for diagnostics).
        self.retired: list[tuple[int, GatewayProcess]] = []
        self.haproxy: HAProxyProcess | None = None
        first = set(range(1, n + 1)) if started is None else set(started)
        if not first or not first <= set(range(1, n + 1)):
            raise ValueError(f"started must name some of the replicas 1..{n}, got {sorted(first)}")
        #: Replicas never started yet: their HAProxy servers are in maintenance.
        self._parked = set(range(1, n + 1)) - first
        self._cleanup = contextlib.ExitStack()
        try:
            self._start(server_url, dict(sources or {}), dict(replica_env or {}))
        except BaseException:
            self.close()
            raise

    def _start(
        self,
        server_url: str,
        sources: dict[int, Path],
        replica_env: dict[int, Mapping[str, str]],
    ) -> None:
        database = f"ha_{self.id}"
        _admin_sql(server_url, f"CREATE DATABASE {database}")
        self._cleanup.callback(_admin_sql, server_url, f"DROP DATABASE {database} WITH (FORCE)")
        self.store_url = server_url.replace("/postgres?", f"/{database}?", 1)
        self._cleanup.callback(self._kill_marked_kernels)
        self._cleanup.callback(self._stop_replicas)
        self._cleanup.callback(self._shut_down_kernels)
        self._write_kernelspec()
        first = [i for i in range(1, self.n + 1) if i not in self._parked]
        with concurrent.futures.ThreadPoolExecutor(len(first)) as pool:
            starting = {
                i: pool.submit(self._new_replica, i, sources.get(i), replica_env.get(i))
                for i in first
            }
        failed = [e for f in starting.values() if (e := f.exception()) is not None]
        # the ones that did start are stopped by close() even when another failed
        self.replicas = {i: f.result() for i, f in starting.items() if f.exception() is None}
        if failed:
            raise failed[0]
        _poll(self._all_ready, 30, "every replica ready (GET /readyz)")
        run_dir = Path(tempfile.mkdtemp(prefix="kf-ha-"))
        self._cleanup.callback(shutil.rmtree, run_dir, True)
        ports = {i: p.port for i, p in self.replicas.items()}
        ports.update({i: free_port() for i in self._parked})  # nothing listens there
        self.haproxy = HAProxyProcess(
            self.root / "haproxy",
            run_dir,
            [Replica(self.name(i), "127.0.0.1", ports[i]) for i in sorted(ports)],
        )
        self._cleanup.callback(self._stop_haproxy)
        for i in sorted(self._parked):
            self.haproxy.set_state(self.name(i), "maint")
        _poll(lambda: self._all_checked("UP"), 15, "HAProxy checking every replica UP")

    # -- what tests use --------------------------------------------------------------------
    @property
    def proxy_url(self) -> str:
        assert self.haproxy is not None
        return f"http://127.0.0.1:{self.haproxy.port}"

    @property
    def client(self) -> GatewayClient:
        """A client of the whole set, through the proxy."""
        return GatewayClient(self.proxy_url, token=self.token)

    @staticmethod
    def name(i: int) -> str:
        """HAProxy's name of replica *i*."""
        return f"gw{i}"

    def url(self, i: int) -> str:
        """Replica *i*'s own address, bypassing the proxy."""
        return f"http://127.0.0.1:{self.replicas[i].port}"

    def replica_client(self, i: int) -> GatewayClient:
        return GatewayClient(self.url(i), token=self.token)

    def running(self, i: int) -> bool:
        return i in self.replicas and self.replicas[i].proc.poll() is None

    def kill(self, i: int) -> None:
        """SIGKILL replica *i* (its kernels keep running, as after a crash)."""
        self.replicas[i].kill()
        log.info("killed replica %d (gateway id %s)", i, self.gateway_ids[i])

    def stop(self, i: int) -> int:
        """SIGTERM replica *i* and wait for it; returns its exit code. Its stop mode
        (``KF_STOP_MODE``) decides whether its kernels are shut down or left running."""
        code = self.replicas[i].stop()
        log.info("stopped replica %d (gateway id %s): exit code %s", i, self.gateway_ids[i], code)
        return code

    def start(
        self, i: int, *, source: Path | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        """Start replica *i* (again, after :meth:`kill` or :meth:`stop`, or for the first time
        when the set started without it), on a new port HAProxy is told of.

        It runs the gateway of *source* (a tree holding a ``kernelfleet`` package; default:
        this checkout's), with *env* over the set's settings (e.g. another
        ``KF_GATEWAY_ID``). The process it replaces stays in :meth:`diagnostics`.
        """
        assert not self.running(i), f"replica {i} is running"
        if i in self.replicas:
            self.retired.append((i, self.replicas.pop(i)))
        self.replicas[i] = self._new_replica(i, source, env)
        _poll(lambda: self._ready(i), 30, f"replica {i} ready")
        assert self.haproxy is not None
        self.haproxy.repoint(self.name(i), "127.0.0.1", self.replicas[i].port)
        if i in self._parked:
            self.haproxy.set_state(self.name(i), "ready")
            self._parked.discard(i)
        log.info(
            "started replica %d (gateway id %s, %s) on port %d",
            i,
            self.gateway_ids[i],
            f"source {source}" if source is not None else "this checkout",
            self.replicas[i].port,
        )

    def states(self) -> dict[str, str]:
        """HAProxy's view: server name → ``UP``/``DOWN``/``STARTING``/``STOPPING``."""
        assert self.haproxy is not None
        return {name: s.state for name, s in self.haproxy.states().items()}

    async def wait_for_state(self, i: int, state: str, within: float = 15) -> float:
        """Wait until HAProxy reports replica *i* in *state*; returns the seconds waited."""
        start = time.monotonic()
        while (seen := self.states()[self.name(i)]) != state:
            if time.monotonic() - start > within:
                raise AssertionError(f"{self.name(i)} still {seen}, not {state}, after {within} s")
            await asyncio.sleep(0.05)
        return time.monotonic() - start

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any, str]:
        """A request through the proxy: (status, decoded JSON body, replica that answered).

        The replica is HAProxy's ``X-Served-By`` header ("" when no replica answered).
        """
        req = HTTPRequest(
            self.proxy_url + path,
            method=method,
            headers={"Authorization": f"token {self.token}"},
            body=None if body is None else json.dumps(body),
            request_timeout=60,
        )
        resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        text = resp.body.decode() if resp.body else ""
        try:
            value = json.loads(text) if text else None
        except ValueError:
            value = text
        return resp.code, value, resp.headers.get(SERVED_BY, "")

    def diagnostics(self, tail: int = 4000) -> str:
        """The end of every log, for a failed test's report."""
        parts = []
        if self.haproxy is not None:
            with contextlib.suppress(OSError):
                parts.append(f"--- HAProxy states: {self.states()}")
            parts.append(f"--- HAProxy log\n{self.haproxy.output()[-tail:]}")
        for i, gw in self.retired:
            parts.append(f"--- replica {i}, replaced ({gw.log_path})\n{gw.output()[-tail:]}")
        for i, gw in self.replicas.items():
            parts.append(f"--- replica {i} ({gw.log_path})\n{gw.output()[-tail:]}")
        return "\n".join(parts)

    # -- setup and teardown ----------------------------------------------------------------
    def _write_kernelspec(self) -> None:
        kdir = self.root / "jupyter" / "kernels" / "python3"
        kdir.mkdir(parents=True, exist_ok=True)
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3",
            "language": "python",
            "env": {MARKER: self.id},
            "metadata": {},
        }
        (kdir / "kernel.json").write_text(json.dumps(spec))

    def _new_replica(
        self, i: int, source: Path | None = None, extra: Mapping[str, str] | None = None
    ) -> GatewayProcess:
        own = self.root / f"replica-{i}"
        env = {
            "JUPYTER_PATH": str(self.root / "jupyter"),
            "JUPYTER_DATA_DIR": str(own / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(own / "runtime"),
            "KF_DATA_DIR": str(own / "data"),
            "KF_CONFIG_DIR": str(self.root / "config"),
            "KF_KERNEL_STORE": self.store_url,
            "KF_SECRET_KEY_FILE": str(self.root / "shared-store.key"),
            "KF_GATEWAY_ID": f"ha-{i}",
            "KF_ALLOWED_KERNELSPECS": "python3",
            "KF_STOP_MODE": "shutdown",
            **self.extra_env,
        }
        if source is not None:
            env.update(source_env(source))
        env.update(extra or {})
        gateway = GatewayProcess(env, token=self.token, cwd=None if source is None else str(source))
        self.sources[i] = source
        self.gateway_ids[i] = env["KF_GATEWAY_ID"]
        return gateway

    def _ready(self, i: int) -> bool:
        if not self.running(i):
            raise AssertionError(f"replica {i} exited:\n{self.replicas[i].output()}")
        try:
            with urllib.request.urlopen(f"{self.url(i)}/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def _all_ready(self) -> bool:
        return all(self._ready(i) for i in self.replicas)

    def _all_checked(self, state: str) -> bool:
        """Every server in *state*, and its last health check passed (not assumed at start)."""
        assert self.haproxy is not None
        if self.haproxy.proc.poll() is not None:
            raise AssertionError(f"HAProxy exited:\n{self.haproxy.output()}")
        states = self.haproxy.states()
        parked = {self.name(i) for i in self._parked}
        return len(states) == self.n and all(
            s.state == state and s.check_passed for s in states.values() if s.name not in parked
        )

    def _shut_down_kernels(self) -> None:
        """Every kernel of the store, shut down through the first live replica."""
        live = [i for i in self.replicas if self.running(i)]
        if not live:
            return
        base, auth = self.url(live[0]), {"Authorization": f"token {self.token}"}
        try:
            req = urllib.request.Request(f"{base}/api/kernels", headers=auth)
            with urllib.request.urlopen(req, timeout=30) as resp:
                kernels = json.loads(resp.read())
            for kernel in kernels:
                req = urllib.request.Request(
                    f"{base}/api/kernels/{kernel['id']}", headers=auth, method="DELETE"
                )
                with urllib.request.urlopen(req, timeout=60):
                    pass
        except OSError as exc:  # what is left is killed by _kill_marked_kernels
            log.warning("could not shut the kernels down through replica %d: %s", live[0], exc)

    def _stop_replicas(self) -> None:
        for i, gw in self.replicas.items():
            try:
                code = gw.stop()
                if code not in (0, -signal.SIGKILL):
                    log.warning("replica %d exited with %s", i, code)
            except subprocess.TimeoutExpired:
                gw.kill()

    def _kill_marked_kernels(self) -> None:
        leftover = marked_pids(self.id)
        for pid in leftover:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if leftover:
            log.warning("killed %d kernel process(es) left running: %s", len(leftover), leftover)
        with contextlib.suppress(AssertionError):
            _poll(lambda: not marked_pids(self.id), 10, "leftover kernels gone")

    def _stop_haproxy(self) -> None:
        if self.haproxy is not None:
            self.haproxy.stop()

    def close(self) -> None:
        self._cleanup.close()

    def __enter__(self) -> ReplicaSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
