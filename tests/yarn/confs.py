"""The configuration of tests/yarn's cluster, as pure functions (unit-tested without one).

Each daemon gets its own conf dir (first on its classpath): core-site, yarn-site and, for an RM,
capacity-scheduler; the keys and their reasons are in docs/resource-managers.md §1.3 and §1.6,
and where this differs from them, beside the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

ZK_ADDRESS = "127.0.0.1:2181"
HA_CLUSTER_ID = "kfyarn"


@dataclass(frozen=True)
class RMPorts:
    client: int
    scheduler: int
    tracker: int
    admin: int
    web: int


#: Each RM id's ports on the shared address (docs/resource-managers.md §1.2).
RM_PORTS = {
    "rm1": RMPorts(8032, 8030, 8031, 8033, 8088),
    "rm2": RMPorts(18032, 18030, 18031, 18033, 18088),
}


def xml_conf(props: Mapping[str, str]) -> str:
    """A Hadoop ``*-site.xml`` holding *props*, in the order given."""
    body = "".join(
        f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n"
        for k, v in props.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


def core_site(tmp_dir: Path) -> dict[str, str]:
    """No HDFS (every path is shared), no Kerberos; root may submit as anyone (--proxy-user)."""
    return {
        "fs.defaultFS": "file:///",
        "hadoop.tmp.dir": str(tmp_dir),
        "hadoop.proxyuser.root.hosts": "*",
        "hadoop.proxyuser.root.groups": "*",
    }


def rm_addresses(ip: str, rm_ids: Sequence[str]) -> dict[str, str]:
    """Where clients, AMs and NMs find the RM(s): plain keys for one RM, per-id keys and the
    HA switches for several."""

    def addresses(rm_id: str, suffix: str) -> dict[str, str]:
        p = RM_PORTS[rm_id]
        ports = {
            "address": p.client,
            "scheduler.address": p.scheduler,
            "resource-tracker.address": p.tracker,
            "admin.address": p.admin,
            "webapp.address": p.web,
        }
        return {f"yarn.resourcemanager.{k}{suffix}": f"{ip}:{n}" for k, n in ports.items()}

    if len(rm_ids) == 1:
        return {"yarn.resourcemanager.hostname": ip} | addresses(rm_ids[0], "")
    props = {
        "yarn.resourcemanager.ha.enabled": "true",
        "yarn.resourcemanager.cluster-id": HA_CLUSTER_ID,
        "yarn.resourcemanager.ha.rm-ids": ",".join(rm_ids),
    }
    for rm_id in rm_ids:
        props[f"yarn.resourcemanager.hostname.{rm_id}"] = ip
        props |= addresses(rm_id, f".{rm_id}")
    return props


def client_site(ip: str, rm_ids: Sequence[str]) -> dict[str, str]:
    """The gateway side's yarn-site (spark-submit; Spark ships it to its AM too)."""
    return rm_addresses(ip, rm_ids) | {
        "yarn.timeline-service.enabled": "false",
        "yarn.client.failover-max-attempts": "20",  # a failover takes ~10 s; not 15 min of retries
        "yarn.client.failover-sleep-base-ms": "200",
        "yarn.client.failover-sleep-max-ms": "1000",
    }


def _common_site(ip: str, rm_ids: Sequence[str]) -> dict[str, str]:
    return client_site(ip, rm_ids) | {
        "yarn.scheduler.minimum-allocation-mb": "128",
        "yarn.scheduler.maximum-allocation-mb": "2048",
        "yarn.resourcemanager.am.max-attempts": "1",  # YARN never re-runs a launcher we killed
        "yarn.log-aggregation-enable": "false",
    }


def rm_site(
    ip: str, rm_ids: Sequence[str], rm_id: str, state_dir: Path, zk_address: str
) -> dict[str, str]:
    """One RM's yarn-site; in HA (several *rm_ids*) it names its own id: on a shared IP an RM
    cannot infer it."""
    props = _common_site(ip, rm_ids) | {
        # the RMs' own files, shared by an HA pair (the defaults are under /tmp)
        "yarn.node-attribute.fs-store.root-dir": f"file://{state_dir}/rm/node-attribute",
        "yarn.node-labels.fs-store.root-dir": f"file://{state_dir}/rm/node-labels",
        "yarn.nm.liveness-monitor.expiry-interval-ms": "15000",  # "host died" tests
        "yarn.resourcemanager.scheduler.class": (
            "org.apache.hadoop.yarn.server.resourcemanager.scheduler.capacity.CapacityScheduler"
        ),
    }
    if len(rm_ids) > 1:
        props |= {
            "yarn.resourcemanager.ha.id": rm_id,
            "hadoop.zk.address": zk_address,
            # the elector still reads the deprecated key (3.5.0: "Embedded automatic failover
            # is enabled, but yarn.resourcemanager.zk-address is not set")
            "yarn.resourcemanager.zk-address": zk_address,
            "yarn.resourcemanager.ha.automatic-failover.enabled": "true",
            "yarn.resourcemanager.ha.automatic-failover.embedded": "true",
            "yarn.resourcemanager.recovery.enabled": "true",
            "yarn.resourcemanager.store.class": (
                "org.apache.hadoop.yarn.server.resourcemanager.recovery.ZKRMStateStore"
            ),
            "yarn.resourcemanager.zk-timeout-ms": "10000",
        }
    return props


def nm_site(
    ip: str, rm_ids: Sequence[str], host_ip: str, host_dir: Path, memory_mb: int
) -> dict[str, str]:
    """One NodeManager's yarn-site: addresses on its host's IP (which becomes the apps'
    ``amHostHttpAddress``), dirs under *host_dir*, checks that a test VM would trip off."""
    return _common_site(ip, rm_ids) | {
        "yarn.nodemanager.hostname": host_ip,
        "yarn.nodemanager.address": f"{host_ip}:45454",
        "yarn.nodemanager.webapp.address": f"{host_ip}:8042",
        "yarn.nodemanager.localizer.address": f"{host_ip}:8040",
        "yarn.nodemanager.local-dirs": str(host_dir / "local"),
        "yarn.nodemanager.log-dirs": str(host_dir / "logs"),
        "yarn.nodemanager.container-executor.class": (
            "org.apache.hadoop.yarn.server.nodemanager.DefaultContainerExecutor"
        ),
        "yarn.nodemanager.resource.memory-mb": str(memory_mb),
        "yarn.nodemanager.resource.cpu-vcores": "4",
        "yarn.nodemanager.vmem-check-enabled": "false",
        "yarn.nodemanager.pmem-check-enabled": "false",
        "yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage": "100.0",
        "yarn.nodemanager.disk-health-checker.min-free-space-per-disk-mb": "0",
        "yarn.nodemanager.delete.debug-delay-sec": "60",
        "yarn.timeline-service.enabled": "false",
    }


def capacity_scheduler() -> dict[str, str]:
    """Two queues, so routing and "queue full" are testable; AMs may take 80 % (default 10 %:
    a 2nd kernel's AM would wait in ACCEPTED)."""
    props = {
        "yarn.scheduler.capacity.root.queues": "default,alt",
        "yarn.scheduler.capacity.root.default.capacity": "70",
        "yarn.scheduler.capacity.root.alt.capacity": "30",
        "yarn.scheduler.capacity.root.default.maximum-capacity": "100",
        "yarn.scheduler.capacity.root.alt.maximum-capacity": "30",  # capped: a queue that fills
        "yarn.scheduler.capacity.maximum-am-resource-percent": "0.8",
        "yarn.scheduler.capacity.node-locality-delay": "-1",
    }
    for queue in ("default", "alt"):
        props[f"yarn.scheduler.capacity.root.{queue}.state"] = "RUNNING"
        props[f"yarn.scheduler.capacity.root.{queue}.acl_submit_applications"] = "*"
    return props


LOG4J = """\
log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{1}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
log4j.logger.http.requests=WARN
"""


#: ZooKeeper runs on pyspark's jars, whose slf4j binding is log4j 2.
LOG4J2 = """\
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{ISO8601} %p %c{1}: %m%n
"""


def zoo_cfg(data_dir: Path, address: str = ZK_ADDRESS) -> str:
    """A standalone ZooKeeper on *address*, its AdminServer off (else it takes 8080 on every
    address)."""
    host, port = address.rsplit(":", 1)
    return (
        f"dataDir={data_dir}\nclientPort={port}\nclientPortAddress={host}\n"
        "tickTime=2000\nadmin.enableServer=false\nmaxClientCnxns=100\n"
    )


def hosts_file(host_name: str) -> str:
    """A host's ``/etc/hosts`` (bind-mounted in its mount namespace): its own name on
    127.0.1.1, as Debian writes it. The JVMs need their name to resolve (the NM's login, Spark's
    ``getLocalHost``), and its IP must *not* resolve back to it, else the NM takes the name as
    its node id and the RM, in the root namespace, cannot resolve that."""
    return f"127.0.0.1 localhost\n127.0.1.1 {host_name}  # kfy-yarn\n"
