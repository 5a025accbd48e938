"""``kernelfleet hosts check`` for a YARN kernelspec: can the cluster run it? One row of checks.

No SSH: the cluster is asked through its ResourceManagers' REST API, with the provisioner's
client (:class:`~kernelfleet.transport.yarn_rest.YarnRest`) and settings (endpoints, REST user,
CA bundle, queue: app config < ``KF_YARN_*`` < the kernelspec's config, as a kernel gets them),
and this machine (the gateway, which runs ``spark-submit``) is looked at directly:

- ``resourcemanager``: each endpoint's HA state; exactly one must be ACTIVE;
- ``nodemanagers``: how many are RUNNING (with their free memory and vcores); unhealthy and
  lost ones named with their health report; none RUNNING fails;
- ``queue``: the spec's queue, and each of its allowed queues, exists, is a leaf and RUNNING;
  its capacity and use;
- ``spark-submit``: ``<spark home>/bin/spark-submit`` on this machine, and Java for it;
- ``hadoop conf``: ``yarn-site.xml`` in the Hadoop configuration directory (spark-submit finds
  the ResourceManager there);
- ``spec``: the launcher the spec ships with each kernel (``scripts/spark_kernel.py``) is there
  and is this kernelfleet's.

The interpreter and packages on the nodes are not checked (nothing reaches a node but YARN).
The RM is asked for its state first, then the active one for nodes and queues at once; files
are looked at in a thread. What the answers mean is decided by the pure ``record_*``
functions: each failure has a one-line fix, cause first.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from kernelfleet.specs.installer import SpecRow
from kernelfleet.specs.verdicts import FAIL, OK, SKIP, HostReport
from kernelfleet.transport.yarn_rest import QueueInfo, RMError, YarnRest, describe_queue

YARN_CHECK_NAMES = (
    "resourcemanager",
    "nodemanagers",
    "queue",
    "spark-submit",
    "hadoop conf",
    "spec",
)
#: Seconds for all the questions to the cluster together.
CHECK_TIMEOUT = 60.0
_BAD_NODE_STATES = ("UNHEALTHY", "LOST")


@dataclass(frozen=True)
class YarnTarget:
    """What to check for one YARN kernelspec: its provisioner's settings, resolved."""

    spec: str
    resource_dir: str
    argv: tuple[str, ...]
    endpoints: tuple[str, ...]
    conf_dir: str
    spark_home: str
    queue: str
    allowed_queues: tuple[str, ...] = ()
    rest_user: str = ""
    ca_bundle: str = ""

    @property
    def label(self) -> str:
        """The cluster as the report's first column names it: its RMs' host:port."""
        names = [urlsplit(e).netloc or e for e in self.endpoints]
        return ",".join(names) or "(no ResourceManager)"

    def shipped(self) -> list[str]:
        """The spec's files its argv runs from the container's working directory (shipped
        from ``scripts/``): relative ``.py`` / ``.R`` arguments after the interpreter."""
        return [
            a
            for a in self.argv[1:]
            if a.endswith((".py", ".R")) and "/" not in a and not a.startswith(("-", "{"))
        ]


def target_for(row: SpecRow, settings: Any) -> YarnTarget:
    """The target of *row* from the YARN provisioner's *settings* (reads yarn-site.xml when
    no endpoints are set: call it before the event loop, or in a thread)."""
    home = settings.spark_home_dir()
    argv = row.spec.get("argv")
    return YarnTarget(
        spec=row.name,
        resource_dir=row.resource_dir,
        argv=tuple(str(a) for a in argv) if isinstance(argv, list) else (),
        endpoints=tuple(settings.endpoints()),
        conf_dir=str(settings.conf_dir()),
        spark_home=str(home),
        queue=str(settings.queue),
        allowed_queues=tuple(str(q) for q in settings.allowed_queues),
        rest_user=str(settings.rest_user),
        ca_bundle=str(settings.ca_bundle),
    )


# -- what this machine has (blocking: run in a thread) -------------------------------------------


@dataclass(frozen=True)
class LocalFacts:
    spark_submit: str
    spark_submit_ok: bool
    java: str | None
    yarn_site: str
    yarn_site_ok: bool
    #: shipped file → "ok", "missing" or "differs" (from this kernelfleet's launcher)
    shipped: dict[str, str] = field(default_factory=dict)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def local_facts(target: YarnTarget) -> LocalFacts:
    submit = os.path.join(target.spark_home, "bin", "spark-submit")
    java_home = os.environ.get("JAVA_HOME", "")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if java and not os.access(java, os.X_OK):
        java = None
    site = os.path.join(target.conf_dir, "yarn-site.xml")
    shipped = {}
    for name in target.shipped():
        path = os.path.join(target.resource_dir, "scripts", name)
        try:
            with open(path, "rb") as f:
                have = _sha256(f.read())
        except OSError:
            shipped[name] = "missing"
            continue
        ours = resources.files("kernelfleet.launchers").joinpath(name)
        same = not ours.is_file() or _sha256(ours.read_bytes()) == have
        shipped[name] = "ok" if same else "differs"
    return LocalFacts(
        spark_submit=submit,
        spark_submit_ok=os.path.isfile(submit) and os.access(submit, os.X_OK),
        java=java,
        yarn_site=site,
        yarn_site_ok=os.path.isfile(site),
        shipped=shipped,
    )


# -- verdicts (pure) -----------------------------------------------------------------------------


def _failure(res: BaseException) -> str:
    return res.message if isinstance(res, RMError) else f"{type(res).__name__}: {res}"


def record_rm(report: HostReport, target: YarnTarget, states: Any) -> str | None:
    """The ResourceManagers' row; the active one's endpoint, if exactly one is active."""
    if not target.endpoints:
        report.add(
            "resourcemanager",
            FAIL,
            f"no ResourceManager configured (no yarn_endpoints, and no RM in "
            f"{target.conf_dir}/yarn-site.xml)",
            "reinstall the spec with --yarn-endpoints=http://rm:8088, set KF_YARN_ENDPOINTS, "
            "or --hadoop-conf-dir pointing at the cluster's yarn-site.xml",
        )
        return None
    if isinstance(states, BaseException):
        report.add(
            "resourcemanager",
            FAIL,
            f"the ResourceManagers could not be asked: {_failure(states)}",
            "check the endpoints and this machine's network",
        )
        return None
    said = "; ".join(f"{e}: {s}" for e, s in states.items())
    active: list[str] = [e for e, s in states.items() if s == "ACTIVE"]
    if len(active) == 1:
        others = [f"{e}: {s}" for e, s in states.items() if e != active[0]]
        report.add(
            "resourcemanager",
            OK,
            f"{active[0]} is ACTIVE" + (f"; {'; '.join(others)}" if others else ""),
        )
        return active[0]
    if active:
        report.add(
            "resourcemanager",
            FAIL,
            f"{len(active)} ResourceManagers say ACTIVE ({said})",
            "list each RM once in --yarn-endpoints (two names of one RM look like two); "
            "otherwise check ZooKeeper and 'yarn rmadmin -getAllServiceState' (split brain)",
        )
        return None
    if any(s == "STANDBY" for s in states.values()):
        fix = (
            "no RM took over: check the RMs' ZooKeeper (yarn.resourcemanager.zk-address) and "
            "their logs; 'yarn rmadmin -getAllServiceState' shows the states"
        )
    else:
        fix = (
            "start the ResourceManager (yarn --daemon start resourcemanager), or fix "
            "--yarn-endpoints / yarn-site.xml if it listens elsewhere"
        )
    report.add("resourcemanager", FAIL, f"no ACTIVE ResourceManager ({said})", fix)
    return None


def _node_name(node: Mapping[str, Any]) -> str:
    return str(node.get("nodeHostName") or node.get("id") or "?")[:200]


def _node_health(node: Mapping[str, Any]) -> str:
    report = str(node.get("healthReport") or "no health report")
    return f"{_node_name(node)} {node.get('state')}: {report}"[:300]


def _mb(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def record_nodes(report: HostReport, nodes: Any) -> None:
    if nodes is None:
        report.add("nodemanagers", SKIP, "not checked (no active ResourceManager)")
        return
    if isinstance(nodes, BaseException):
        report.add(
            "nodemanagers",
            FAIL,
            f"the active ResourceManager did not list its nodes: {_failure(nodes)}",
            "check the ResourceManager's log",
        )
        return
    running = [n for n in nodes if n.get("state") == "RUNNING"]
    bad = [n for n in nodes if n.get("state") in _BAD_NODE_STATES]
    others = [n for n in nodes if n not in running and n not in bad]
    parts = [_node_health(n) for n in bad[:5]]
    states = sorted({str(n.get("state"))[:40] for n in others})
    parts += [
        f"{len(group)} {state}: {', '.join(_node_name(n) for n in group[:5])}"
        for state in states
        for group in [[n for n in others if str(n.get("state"))[:40] == state]]
    ]
    not_running = "; ".join(parts)
    if not running:
        if bad:
            fix = (
                f"fix what the health reports say on {', '.join(_node_name(n) for n in bad[:5])} "
                "(often a full disk: yarn.nodemanager.disk-health-checker.*); a healthy "
                "NodeManager turns RUNNING by itself"
            )
        else:
            fix = (
                "start a NodeManager on the cluster's nodes (yarn --daemon start nodemanager); "
                "it must reach the RM's resource-tracker address"
            )
        detail = "no NodeManager is RUNNING" + (f" ({not_running})" if not_running else "")
        report.add("nodemanagers", FAIL, detail, fix)
        return
    free_mb = sum(_mb(n.get("availMemoryMB")) for n in running)
    largest = max(_mb(n.get("availMemoryMB")) for n in running)
    vcores = sum(_mb(n.get("availableVirtualCores")) for n in running)
    detail = (
        f"{len(running)} RUNNING ({free_mb} MB and {vcores} vcores free, at most {largest} MB "
        "on one node)"
    )
    if not_running:
        detail += f"; {len(bad) + len(others)} not: {not_running}"
    report.add("nodemanagers", OK, detail)


def _queue_fault(info: QueueInfo | None, name: str, known: Sequence[str]) -> tuple[str, str] | None:
    """(detail, fix) when the queue *name* cannot take a kernel, else None."""
    if info is None:
        shown = ", ".join(sorted(set(known))[:10])
        return (
            f"the ResourceManager has no queue {name!r} (queues: {shown})",
            f"reinstall the spec with --queue set to a leaf queue, or add {name!r} to "
            "capacity-scheduler.xml and run 'yarn rmadmin -refreshQueues'",
        )
    if info.children:
        return (
            f"{name!r} is a parent queue (children: {', '.join(info.children[:10])}): "
            "applications go to leaf queues",
            f"reinstall the spec with --queue set to one of: {', '.join(info.children[:10])}",
        )
    if info.state != "RUNNING":
        return (
            describe_queue(info, name),
            f"set yarn.scheduler.capacity.<queue path>.state=RUNNING for {name!r} and run "
            "'yarn rmadmin -refreshQueues' (a stopped queue accepts no application)",
        )
    return None


def record_queue(report: HostReport, target: YarnTarget, queues: Any) -> None:
    if queues is None:
        report.add("queue", SKIP, "not checked (no active ResourceManager)")
        return
    if isinstance(queues, BaseException):
        report.add(
            "queue",
            FAIL,
            f"the active ResourceManager did not list its queues: {_failure(queues)}",
            "check the ResourceManager's log",
        )
        return
    if not queues:
        report.add(
            "queue",
            SKIP,
            f"queue {target.queue!r} not checked: the scheduler lists no queues (not the "
            "capacity scheduler?)",
        )
        return
    names = [q.name for q in queues.values()]
    for name in dict.fromkeys((target.queue, *target.allowed_queues)):
        fault = _queue_fault(queues.get(name), name, names)
        if fault is not None:
            report.add("queue", FAIL, *fault)
            return
    text = describe_queue(queues[target.queue], target.queue)
    others = [q for q in dict.fromkeys(target.allowed_queues) if q != target.queue]
    if others:
        text += f"; allowed queues {', '.join(others)} RUNNING"
    report.add("queue", OK, text)


def record_local(report: HostReport, target: YarnTarget, facts: LocalFacts | BaseException) -> None:
    """The rows of this machine: spark-submit, the Hadoop configuration, the spec's files."""
    if isinstance(facts, BaseException):
        for name in YARN_CHECK_NAMES[3:]:
            report.add(name, SKIP, f"not checked: {_failure(facts)}")
        return
    if not facts.spark_submit_ok:
        report.add(
            "spark-submit",
            FAIL,
            f"{facts.spark_submit} not found or not executable (on this machine)",
            "install Spark here (or pip install pyspark), then reinstall the spec with "
            "--spark-home set to it, or set KF_YARN_SPARK_HOME / SPARK_HOME for the gateway",
        )
    elif facts.java is None:
        report.add(
            "spark-submit",
            FAIL,
            f"{facts.spark_submit} found, but no Java for it (no JAVA_HOME, no java on PATH)",
            "install a Java runtime (apt-get install openjdk-17-jre-headless) or set JAVA_HOME "
            "for the gateway",
        )
    else:
        report.add("spark-submit", OK, f"{facts.spark_submit} (Java: {facts.java})")
    if facts.yarn_site_ok:
        report.add("hadoop conf", OK, facts.yarn_site)
    else:
        report.add(
            "hadoop conf",
            FAIL,
            f"{facts.yarn_site} not found: spark-submit would not know the ResourceManager",
            f"copy the cluster's client configuration (yarn-site.xml, core-site.xml) to "
            f"{target.conf_dir}, or reinstall the spec with --hadoop-conf-dir set to where it is",
        )
    missing = [n for n, s in facts.shipped.items() if s == "missing"]
    stale = [n for n, s in facts.shipped.items() if s == "differs"]
    reinstall = (
        f"reinstall the spec: kernelfleet spec install yarn --replace … (kernel {target.spec})"
    )
    if missing:
        report.add(
            "spec",
            FAIL,
            f"scripts/{missing[0]} is missing from {target.resource_dir} (each kernel runs it)",
            reinstall,
        )
    elif stale:
        report.add(
            "spec",
            FAIL,
            f"scripts/{stale[0]} differs from this kernelfleet's launcher (an older install?)",
            reinstall,
        )
    elif facts.shipped:
        shipped = ", ".join(f"scripts/{n}" for n in facts.shipped)
        report.add("spec", OK, f"{shipped} shipped with each kernel")
    else:
        report.add("spec", OK, "nothing shipped (the kernel's program must be on the nodes)")


# -- the check ------------------------------------------------------------------------------------


async def ask_cluster(target: YarnTarget) -> tuple[Any, Any, Any]:
    """(states, nodes, queues) of the cluster; each an answer, an exception, or None when
    not asked (no endpoint, or no single active RM)."""
    if not target.endpoints:
        return None, None, None
    rest = YarnRest(target.endpoints, user=target.rest_user, ca_certs=target.ca_bundle)
    try:
        try:
            states: Any = await rest.states()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return exc, None, None
        active = [e for e, s in states.items() if s == "ACTIVE"]
        if len(active) != 1:
            return states, None, None
        rest.active = active[0]
        nodes, queues = await asyncio.gather(rest.nodes(), rest.queues(), return_exceptions=True)
        for answer in (nodes, queues):
            if isinstance(answer, asyncio.CancelledError):
                raise answer
        return states, nodes, queues
    finally:
        rest.close()


async def check_cluster(target: YarnTarget) -> HostReport:
    """Every check of *target*, as one report (its host is :attr:`YarnTarget.label`)."""
    report = HostReport(target.label)

    async def bounded() -> tuple[Any, Any, Any]:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                return await ask_cluster(target)
        except TimeoutError:
            raise RMError(f"no answer within {CHECK_TIMEOUT:g} s") from None

    cluster, files = await asyncio.gather(
        bounded(), asyncio.to_thread(local_facts, target), return_exceptions=True
    )
    for answer in (cluster, files):
        if isinstance(answer, asyncio.CancelledError):
            raise answer
    states, nodes, queues = (cluster, None, None) if isinstance(cluster, BaseException) else cluster
    record_rm(report, target, states)
    record_nodes(report, nodes)
    record_queue(report, target, queues)
    record_local(report, target, files)
    return report


__all__ = [
    "YARN_CHECK_NAMES",
    "LocalFacts",
    "YarnTarget",
    "check_cluster",
    "local_facts",
    "record_local",
    "record_nodes",
    "record_queue",
    "record_rm",
    "target_for",
]
