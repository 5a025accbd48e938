"""A real Hadoop YARN cluster for the tests: separate JVM daemons, no mocks (root only).

Layout (docs/resource-managers.md §1.2): a :class:`~tests.testbed.Testbed` of two hosts under
the names of :data:`YARN_TESTBED` (bridge ``kfybr0``, hosts ``kfy-host1..2`` on 10.91.0.11-12,
each with its own sshd, UTS and mount namespace and a private ``/tmp``); one NodeManager inside
each host, entered with ``nsenter`` through the host's sshd, so the NM and its containers (the
Spark drivers = kernels) share the host's network, name and ``/tmp``, and ``Testbed.kill_host``
is a real "host died". The ResourceManager(s) and, in HA mode, ZooKeeper run in the root network
namespace on 10.91.0.1 and 127.0.0.1, where the gateway and ``spark-submit`` run too.

The daemons are Hadoop 3.5.0's unshaded server jars (``scripts/yarn-deps.sh`` resolves them into
a cache outside the repository; it says why not the shaded minicluster jar); there are no
``bin/`` scripts: each daemon is ``java -cp <own conf dir>:<jars>/* <main class>`` and reads its
``*-site.xml`` from that conf dir. ZooKeeper is the ``zookeeper-3.9`` jar that pyspark ships.
All state (confs, logs, NM dirs, Spark staging, ZooKeeper data) is under :data:`STATE_DIR`,
outside ``/tmp`` because the hosts do not see the gateway's ``/tmp``; :meth:`YarnCluster.stop`
removes it and keeps the jars. Node ids are ``<host IP>:45454``.

Each host gets a bind-mounted ``/etc/hosts`` (in its own mount namespace) with its name on
127.0.1.1, as Debian writes it: the NM's login and Spark's ``getLocalHost()`` fail when the
host's own name does not resolve, and the testbed names nothing (a real cluster has DNS).

**HA from the start.** :meth:`YarnCluster.start` brings up one RM (``rm1``); :meth:`start_ha`
two (``rm1`` on 8032/8030/8031/8033/8088, ``rm2`` on 180xx) and ZooKeeper, with automatic
failover and the ZooKeeper state store (work-preserving recovery: a running app survives a
failover). The session cluster (``conftest.py``) is HA. Measured on the 2-core VM: ready in
~9 s alone, 10-19 s in HA (mostly ~12 s; ZooKeeper and both RMs start in parallel); HA adds
~430 MB RSS (ZooKeeper ~125 MB, an RM 260-330 MB). A separate HA cluster for the failover
tests would cost another start and stop (~15 s) and a second fixture; clients cannot tell the
difference (their conf names both RMs and they fail over by themselves). Either RM may win
the first election, and after a failover test the other one is active: nothing may assume
``rm1`` is (:attr:`YarnCluster.rest_url` asks).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.testbed import Network, Testbed, TestHost, wait_for
from tests.yarn.confs import (
    LOG4J,
    LOG4J2,
    RM_PORTS,
    ZK_ADDRESS,
    capacity_scheduler,
    client_site,
    core_site,
    hosts_file,
    nm_site,
    rm_site,
    xml_conf,
    zoo_cfg,
)

YARN_TESTBED = Network("kfybr0", "10.91.0", "kfy-host", "kfyv", Path("/run/kfy-testbed"))
STATE_DIR = Path("/run/kfy-yarn")
JAVA_HOME = Path("/usr/lib/jvm/java-17-openjdk-amd64")
REPO = Path(__file__).resolve().parents[2]
FINAL_STATES = frozenset({"FINISHED", "FAILED", "KILLED"})
LIVE_STATES = ("NEW", "NEW_SAVING", "SUBMITTED", "ACCEPTED", "RUNNING")

RM_MAIN = "org.apache.hadoop.yarn.server.resourcemanager.ResourceManager"
NM_MAIN = "org.apache.hadoop.yarn.server.nodemanager.NodeManager"
ZK_MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"


# -- helpers ------------------------------------------------------------------------------------
def jars_dir() -> Path | str:
    """The resolved jars (``scripts/yarn-deps.sh --check``), or why there are none."""
    script = REPO / "scripts" / "yarn-deps.sh"
    proc = subprocess.run(["sh", str(script), "--check"], capture_output=True, text=True)
    if proc.returncode != 0:
        return proc.stderr.strip() or f"{script} --check failed"
    return Path(proc.stdout.strip()) / "jars"


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def http_json(url: str, method: str = "GET", body: Any = None, timeout: float = 5) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.load(resp)


@dataclass
class Daemon:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, env: Mapping[str, str]) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def tail(self, chars: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return f"--- {self.name} ({self.log}):\n{text[-chars:]}"


@dataclass
class YarnCluster:
    """See the module docstring. ``start()`` or ``start_ha()``, then ``stop()``."""

    jars: Path
    n_hosts: int = 2
    nm_memory_mb: int = 4096
    state_dir: Path = STATE_DIR
    network: Network = YARN_TESTBED
    java_home: Path = JAVA_HOME
    rm_ids: tuple[str, ...] = ("rm1",)
    bed: Testbed | None = None
    daemons: dict[str, Daemon] = field(default_factory=dict)

    # -- addresses ------------------------------------------------------------------------------
    @property
    def ip(self) -> str:
        return self.network.gateway_ip

    @property
    def ha(self) -> bool:
        return len(self.rm_ids) > 1

    @property
    def hosts(self) -> list[TestHost]:
        assert self.bed is not None, "the cluster is not started"
        return self.bed.hosts

    @property
    def hadoop_conf_dir(self) -> Path:
        """The client conf dir (core-site, yarn-site naming every RM): ``HADOOP_CONF_DIR`` of
        ``spark-submit`` on the gateway side."""
        return self.state_dir / "conf" / "client"

    def rm_url(self, rm_id: str) -> str:
        return f"http://{self.ip}:{RM_PORTS[rm_id].web}"

    @property
    def rest_url(self) -> str:
        """The active RM's web address (in HA, asked each time; waits up to 30 s for one)."""
        if not self.ha:
            return self.rm_url(self.rm_ids[0])
        active = wait_for(self.active_rm, 30, "no RM became active", self.log_tails)
        return self.rm_url(active)

    def nm_url(self, index: int) -> str:
        return f"http://{self.hosts[index - 1].ip}:8042"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 120) -> YarnCluster:
        """One RM; ready when it is ACTIVE and every NM RUNNING (else raise with log tails)."""
        return self._start(("rm1",), timeout)

    def start_ha(self, timeout: float = 120) -> YarnCluster:
        """ZooKeeper and two RMs (automatic failover, ZooKeeper state store); ready when one RM
        is ACTIVE, the other STANDBY, and every NM RUNNING."""
        return self._start(("rm1", "rm2"), timeout)

    def _start(self, rm_ids: tuple[str, ...], timeout: float) -> YarnCluster:
        self.rm_ids = rm_ids
        bed = Testbed(self.n_hosts, network=self.network)
        bed.up()  # holds the testbed's lock until stop(): no concurrent session gets past here
        self.bed = bed
        try:
            self._kill_leftovers()
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self._write_confs()
            if self.ha:
                self._start_daemon(self._zk_daemon())
            for rm_id in rm_ids:  # either may win the first election: nothing assumes which
                self._start_daemon(self._rm_daemon(rm_id))
            for i in range(1, self.n_hosts + 1):
                self._start_nm(i)
            wait_for(self._ready, timeout, "the YARN cluster was not ready", self.log_tails)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        states = {rm_id: self.rm_state(rm_id) for rm_id in self.rm_ids}
        active = [r for r, state in states.items() if state == "ACTIVE"]
        if len(active) != 1 or any(v not in ("ACTIVE", "STANDBY") for v in states.values()):
            return False
        return self._nodes_running(range(1, self.n_hosts + 1), self.rm_url(active[0]))

    def _nodes_running(self, indexes: Iterable[int], url: str | None = None) -> bool:
        nodes = self.nodes(url)
        running = {n["nodeHostName"] for n in nodes if n["state"] == "RUNNING"}
        return all(self.hosts[i - 1].ip in running for i in indexes)

    def stop(self) -> None:
        """Kill every app not yet final, stop the daemons (SIGTERM, SIGKILL after a grace),
        take the testbed down, remove the state dir. Safe to call twice."""
        if self.bed is None:
            return
        with contextlib.suppress(Exception):
            self._kill_live_apps()
        nms = [d for d in self.daemons.values() if d.name.startswith("nm")]
        rest = [d for d in self.daemons.values() if not d.name.startswith("nm")]
        # An NM still holding apps waits ~7 s for them at stop, and after the failover test one
        # hung in its service stop past 15 s (seen; not understood). Its containers are gone
        # (the apps were killed above) and Testbed.down() kills whatever is left in the hosts.
        for group, grace in ((nms, 5), (rest, 15)):
            for daemon in group:
                daemon.signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for daemon in group:
                if not daemon.wait(max(0.0, deadline - time.monotonic())):
                    daemon.signal(signal.SIGKILL)
                    daemon.wait(5)
        self.daemons.clear()
        self.bed.down()
        self.bed = None
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        """Daemons of a crashed earlier run in the root namespace (those in the hosts died with
        ``Testbed.up``): found by our state dir on their command line, as we hold the lock."""
        marker = f"{self.state_dir}/conf/".encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if marker in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)

    def _kill_live_apps(self) -> None:
        if self.active_rm() is None:
            return  # nothing answers (a test killed every RM); the NMs' SIGTERM stops the rest
        live = self.apps(states=LIVE_STATES)
        for app in live:
            self.kill_app(app["id"])
        ids = {a["id"] for a in live}
        wait_for(
            lambda: not any(a["id"] in ids for a in self.apps(states=LIVE_STATES)),
            20,
            "apps still live after the kill",
        )

    # -- daemons --------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.java_home}/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "JAVA_HOME": str(self.java_home),
            "LANG": "C.UTF-8",
        }

    def _java(self, name: str, xmx: str, classpath: str, main: str, *args: str) -> list[str]:
        return [
            f"{self.java_home}/bin/java",
            f"-Xmx{xmx}",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            f"-Dhadoop.log.dir={self.state_dir}/logs/{name}",
            f"-Dkfy.daemon={name}",
            "-cp",
            classpath,
            main,
            *args,
        ]

    def _daemon(self, name: str, argv: list[str]) -> Daemon:
        (self.state_dir / "logs" / name).mkdir(parents=True, exist_ok=True)
        return Daemon(name, argv, self.state_dir / "logs" / f"{name}.log")

    def _start_daemon(self, daemon: Daemon) -> None:
        self.daemons[daemon.name] = daemon
        daemon.start(self._env())

    def _zk_daemon(self) -> Daemon:
        cfg = self.state_dir / "conf" / "zk" / "zoo.cfg"
        cp = f"{self.state_dir}/conf/zk:{spark_home()}/jars/*"
        return self._daemon("zk", self._java("zk", "128m", cp, ZK_MAIN, str(cfg)))

    def _rm_daemon(self, rm_id: str) -> Daemon:
        cp = f"{self.state_dir}/conf/{rm_id}:{self.jars}/*"
        return self._daemon(rm_id, self._java(rm_id, "512m", cp, RM_MAIN))

    def _start_nm(self, index: int) -> None:
        assert self.bed is not None
        host = self.hosts[index - 1]
        pid = self.bed.sshd_pid(host)
        if pid is None:
            raise RuntimeError(f"{host.name} has no sshd to enter (revive the host first)")
        hosts = self.state_dir / "conf" / f"hosts{index}"
        mount = self.bed.run_in(
            host, "sh", "-c", f"grep -q kfy-yarn /etc/hosts || mount --bind {hosts} /etc/hosts"
        )
        if mount.returncode != 0:
            raise RuntimeError(f"cannot mount /etc/hosts in {host.name}: {mount.stderr}")
        name = f"nm{index}"
        cp = f"{self.state_dir}/conf/{name}:{self.jars}/*"
        java = self._java(name, "256m", cp, NM_MAIN)
        argv = ["nsenter", "-t", str(pid), "-n", "-u", "-m", "--", *java]
        self._start_daemon(self._daemon(name, argv))

    def _write_confs(self) -> None:
        conf = self.state_dir / "conf"

        def write(name: str, files: Mapping[str, str]) -> None:
            (conf / name).mkdir(parents=True, exist_ok=True)
            for file, text in files.items():
                (conf / name / file).write_text(text)

        rm_ids = self.rm_ids
        write("client", {"core-site.xml": xml_conf(core_site(self.state_dir / "tmp" / "client"))})
        write("client", {"yarn-site.xml": xml_conf(client_site(self.ip, rm_ids))})
        for i, host in enumerate(self.hosts, 1):
            (conf / f"hosts{i}").write_text(hosts_file(host.name))
        for rm_id in rm_ids:
            write(
                rm_id,
                {
                    "core-site.xml": xml_conf(core_site(self.state_dir / "tmp" / rm_id)),
                    "yarn-site.xml": xml_conf(
                        rm_site(self.ip, rm_ids, rm_id, self.state_dir, ZK_ADDRESS)
                    ),
                    "capacity-scheduler.xml": xml_conf(capacity_scheduler()),
                    "log4j.properties": LOG4J,
                },
            )
        for i in range(1, self.n_hosts + 1):
            host_dir = self.state_dir / f"host{i}"
            site = nm_site(self.ip, rm_ids, self.hosts[i - 1].ip, host_dir, self.nm_memory_mb)
            write(
                f"nm{i}",
                {
                    "core-site.xml": xml_conf(core_site(host_dir / "tmp")),
                    "yarn-site.xml": xml_conf(site),
                    "log4j.properties": LOG4J,
                },
            )
        write("zk", {"zoo.cfg": zoo_cfg(self.state_dir / "zk"), "log4j2.properties": LOG4J2})
        (self.state_dir / "staging").mkdir(parents=True, exist_ok=True)

    def log_tails(self) -> str:
        return "\n".join(d.tail() for d in self.daemons.values())

    # -- REST -----------------------------------------------------------------------------------
    def rm_state(self, rm_id: str) -> str | None:
        """ACTIVE, STANDBY, INITIALIZING… of one RM (its own answer), or None if it is down."""
        try:
            info = http_json(f"{self.rm_url(rm_id)}/ws/v1/cluster/info", timeout=2)
        except (OSError, ValueError):
            return None
        cluster = info["clusterInfo"]
        return str(cluster["haState"]) if cluster.get("state") == "STARTED" else None

    def active_rm(self) -> str | None:
        """The id of the active RM, or None during a failover."""
        for rm_id in self.rm_ids:
            if self.rm_state(rm_id) == "ACTIVE":
                return rm_id
        return None

    def nodes(self, url: str | None = None) -> list[dict[str, Any]]:
        body = http_json(f"{url or self.rest_url}/ws/v1/cluster/nodes")
        return list((body.get("nodes") or {}).get("node") or [])

    def apps(self, tags: Iterable[str] = (), states: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The RM's apps, optionally those with any of *tags* (YARN lower-cases tags) and in
        any of *states*."""
        query = []
        if tags:
            query.append("applicationTags=" + ",".join(t.lower() for t in tags))
        if states:
            query.append("states=" + ",".join(states))
        url = f"{self.rest_url}/ws/v1/cluster/apps" + ("?" + "&".join(query) if query else "")
        body = http_json(url)
        return list((body.get("apps") or {}).get("app") or [])

    def app(self, app_id: str) -> dict[str, Any]:
        app: dict[str, Any] = http_json(f"{self.rest_url}/ws/v1/cluster/apps/{app_id}")["app"]
        return app

    def wait_app(self, app_id: str, states: Iterable[str], timeout: float = 90) -> dict[str, Any]:
        """Wait until the app is in one of *states*; a final state not asked for fails early."""
        wanted = set(states)

        def reached() -> dict[str, Any] | None:
            app = self.app(app_id)
            if app["state"] in wanted:
                return app
            if app["state"] in FINAL_STATES:
                raise AssertionError(f"{app_id} ended {app['state']}: {app.get('diagnostics')}")
            return None

        try:
            return dict(wait_for(reached, timeout, f"{app_id} did not reach {sorted(wanted)}"))
        except RuntimeError as exc:
            if isinstance(exc.__context__, AssertionError):
                raise exc.__context__ from None
            raise

    def kill_app(self, app_id: str) -> None:
        http_json(
            f"{self.rest_url}/ws/v1/cluster/apps/{app_id}/state",
            method="PUT",
            body={"state": "KILLED"},
        )

    def am_container(self, app_id: str) -> dict[str, Any]:
        """The app's (one) attempt: ``containerId``, ``nodeHttpAddress``, ``nodeId``…"""
        body = http_json(f"{self.rest_url}/ws/v1/cluster/apps/{app_id}/appattempts")
        attempts = body["appAttempts"]["appAttempt"]
        return dict(attempts[-1])

    def container_log(self, app_id: str, container_id: str, name: str = "stdout") -> str:
        """A container's log file, read from the NM's log dir (shared filesystem; the NM's
        REST ``/ws/v1/node/containerlogs`` forgets a container once its app is over)."""
        for i in range(1, self.n_hosts + 1):
            path = self.state_dir / f"host{i}" / "logs" / app_id / container_id / name
            if path.exists():
                return path.read_text(errors="replace")
        raise FileNotFoundError(f"no {name} of {container_id} under {self.state_dir}")

    # -- faults ---------------------------------------------------------------------------------
    def kill_nm(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Kill host *index*'s NodeManager (SIGKILL by default: a crash; SIGTERM: a clean
        stop, which stops its containers) and wait for it to exit. The RM notices a crash only
        after ``yarn.nm.liveness-monitor.expiry-interval-ms`` (15 s): the node is LOST then."""
        daemon = self.daemons[f"nm{index}"]
        daemon.signal(sig)
        if not daemon.wait(20):
            daemon.signal(signal.SIGKILL)
            daemon.wait(5)

    def start_nm(self, index: int, timeout: float = 60) -> None:
        """(Re)start host *index*'s NodeManager (after ``kill_nm``, or ``Testbed.revive``
        after ``kill_host``) and wait until the RM has its registration: RUNNING with a health
        report newer than this start (the RM lists a SIGKILLed NM as RUNNING until it expires)."""
        old = self.daemons.get(f"nm{index}")
        if old is not None and old.running:
            raise RuntimeError(f"nm{index} is still running")
        started_ms = time.time() * 1000
        self._start_nm(index)
        node_id = f"{self.hosts[index - 1].ip}:45454"

        def registered() -> bool:
            return any(
                n["id"] == node_id
                and n["state"] == "RUNNING"
                and n["lastHealthUpdate"] >= started_ms
                for n in self.nodes()
            )

        wait_for(registered, timeout, f"nm{index} did not register", self.log_tails)

    def kill_rm(self, rm_id: str) -> None:
        """SIGKILL one RM (in HA, the other takes over within ~10-20 s)."""
        daemon = self.daemons[rm_id]
        daemon.signal(signal.SIGKILL)
        daemon.wait(10)

    def start_rm(self, rm_id: str, timeout: float = 60) -> None:
        """(Re)start a killed RM; in HA it joins as STANDBY (or ACTIVE if no other is)."""
        old = self.daemons.get(rm_id)
        if old is not None and old.running:
            raise RuntimeError(f"{rm_id} is still running")
        self._start_daemon(self._rm_daemon(rm_id))
        wait_for(
            lambda: self.rm_state(rm_id) in ("ACTIVE", "STANDBY"),
            timeout,
            f"{rm_id} did not start",
            self.log_tails,
        )

    def app_processes(self, app_id: str) -> dict[str, list[int]]:
        """Per host name, the pids of the app's container processes (and their children):
        those whose environment names one of its containers."""
        key = "_" + app_id.removeprefix("application_") + "_"  # container_[eNN_]<ts>_<n>_…
        assert self.bed is not None
        found: dict[str, list[int]] = {}
        for host in self.hosts:
            for pid in self.bed.pids(host):
                try:
                    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if any(v.startswith(b"CONTAINER_ID=") and key.encode() in v for v in env):
                    found.setdefault(host.name, []).append(pid)
        return found

    def host_processes(self, index: int) -> dict[int, str]:
        """pid -> command line of every process in host *index* but its sshd and NM."""
        assert self.bed is not None
        host = self.hosts[index - 1]
        nm = self.daemons.get(f"nm{index}")
        skip = {self.bed.sshd_pid(host), nm.proc.pid if nm and nm.proc else None}
        return {p: c for p, c in self.bed.processes(host).items() if p not in skip}

    def jvm_rss_mb(self) -> dict[str, float]:
        """Resident memory of each running daemon JVM, in MiB."""
        rss = {}
        for name, daemon in self.daemons.items():
            if daemon.running and daemon.proc is not None:
                with contextlib.suppress(OSError):
                    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            rss[name] = int(line.split()[1]) / 1024
        return rss


# -- spark-submit -------------------------------------------------------------------------------
APP_ID = re.compile(r"application_\d+_\d+")


def python_zips() -> list[Path]:
    """pyspark.zip and the py4j zip of pip's pyspark (served to containers as ``local:``)."""
    lib = spark_home() / "python" / "lib"
    zips = sorted(lib.glob("py4j-*-src.zip"))
    return [lib / "pyspark.zip", *zips[-1:]]


def submit_argv(
    cluster: YarnCluster,
    script: Path,
    *args: str,
    name: str = "kfy-bare",
    queue: str = "default",
    tags: Sequence[str] = (),
    proxy_user: str | None = None,
    conf: Mapping[str, str] | None = None,
) -> list[str]:
    """The ``spark-submit`` argv of a cluster-mode PySpark app (docs/resource-managers.md §1.5)."""
    home = spark_home()
    confs = {
        "spark.yarn.jars": f"local:{home}/jars/*",
        "spark.yarn.maxAppAttempts": "1",
        "spark.yarn.submit.waitAppCompletion": "false",
        "spark.yarn.stagingDir": str(cluster.state_dir / "staging"),
        "spark.driver.memory": "512m",
        "spark.executor.memory": "512m",
        "spark.executor.instances": "1",
        "spark.pyspark.python": sys.executable,  # the venv's (shared path), with pyspark's deps
        # as tests/yarn/kernels.py gives kernels: the benchmark's bare limit uses the same JVMs
        "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        "spark.executor.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    }
    if tags:
        confs["spark.yarn.tags"] = ",".join(tags)
    confs |= dict(conf or {})
    argv = [str(home / "bin" / "spark-submit"), "--master", "yarn", "--deploy-mode", "cluster"]
    argv += ["--name", name, "--queue", queue]
    if proxy_user:
        argv += ["--proxy-user", proxy_user]
    for key, value in confs.items():
        argv += ["--conf", f"{key}={value}"]
    return [*argv, str(script), *args]


def submit_env(cluster: YarnCluster) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "SPARK"))}
    return env | {
        "SPARK_HOME": str(spark_home()),
        "HADOOP_CONF_DIR": str(cluster.hadoop_conf_dir),
        "JAVA_HOME": str(cluster.java_home),
        "PYSPARK_ARCHIVES_PATH": ",".join(f"local:{z}" for z in python_zips()),
    }


def bare_submit(
    cluster: YarnCluster,
    script: Path,
    *args: str,
    name: str = "kfy-bare",
    queue: str = "default",
    tags: Sequence[str] = (),
    proxy_user: str | None = None,
    conf: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> str:
    """Submit *script* in cluster mode and return its YARN application id (spark-submit returns
    once the RM has accepted it, without waiting for the app)."""
    argv = submit_argv(
        cluster,
        script,
        *args,
        name=name,
        queue=queue,
        tags=tags,
        proxy_user=proxy_user,
        conf=conf,
    )
    proc = subprocess.run(
        argv, env=submit_env(cluster), capture_output=True, text=True, timeout=timeout
    )
    found = APP_ID.search(proc.stderr + proc.stdout)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"spark-submit failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return found.group(0)
