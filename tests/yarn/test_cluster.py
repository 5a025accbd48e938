"""The YARN cluster the provisioner tests run against is real: NodeManagers on their own hosts,
cluster-mode PySpark drivers on them, a REST kill that leaves nothing behind, an RM failover that
a running app survives. And the pure configuration builders, without a cluster."""

from __future__ import annotations

import time
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.testbed import wait_for
from tests.yarn.cluster import YarnCluster, bare_submit, submit_argv
from tests.yarn.confs import (
    RM_PORTS,
    capacity_scheduler,
    client_site,
    core_site,
    hosts_file,
    nm_site,
    rm_site,
    xml_conf,
    zoo_cfg,
)

IP = "10.91.0.1"

#: The app of these tests: prints on its driver, runs one job on an executor, then sleeps
#: argv[1] seconds (so that a test finds it RUNNING).
APP = """\
import socket, sys, time
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
print("kfy-hello from", socket.gethostname(), flush=True)
print("kfy-sum", spark.sparkContext.parallelize(range(10), 2).sum(), flush=True)
time.sleep(float(sys.argv[1]))
spark.stop()
"""


@pytest.fixture
def app_script(tmp_path: Path) -> Path:
    path = tmp_path / "kfy_app.py"
    path.write_text(APP)
    return path


def tag() -> str:
    return f"kfy-test-{uuid.uuid4().hex[:8]}"


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def props(xml: str) -> dict[str, str]:
    root = ET.fromstring(xml)
    return {p.findtext("name", ""): p.findtext("value", "") for p in root.iter("property")}


# -- pure configuration ---------------------------------------------------------------------------
def test_xml_conf_round_trips_in_order_and_escapes() -> None:
    text = xml_conf({"b": "1", "a": "x<&>y"})
    assert props(text) == {"b": "1", "a": "x<&>y"}
    assert text.index("<name>b</name>") < text.index("<name>a</name>")


def test_single_rm_addresses_are_plain_keys() -> None:
    site = client_site(IP, ["rm1"])
    assert site["yarn.resourcemanager.address"] == f"{IP}:8032"
    assert site["yarn.resourcemanager.webapp.address"] == f"{IP}:8088"
    assert not any("ha." in k or k.endswith(".rm1") for k in site)


def test_ha_addresses_name_every_rm_by_id() -> None:
    site = client_site(IP, ["rm1", "rm2"])
    assert site["yarn.resourcemanager.ha.enabled"] == "true"
    assert site["yarn.resourcemanager.ha.rm-ids"] == "rm1,rm2"
    for rm_id, ports in RM_PORTS.items():
        assert site[f"yarn.resourcemanager.address.{rm_id}"] == f"{IP}:{ports.client}"
        assert site[f"yarn.resourcemanager.scheduler.address.{rm_id}"] == f"{IP}:{ports.scheduler}"
        assert site[f"yarn.resourcemanager.webapp.address.{rm_id}"] == f"{IP}:{ports.web}"
    assert site["yarn.resourcemanager.resource-tracker.address.rm2"] == f"{IP}:18031"
    assert "yarn.resourcemanager.address" not in site  # a plain key would shadow the ids


def test_ha_rm_site_names_its_own_id_and_the_zookeeper_store() -> None:
    state = Path("/run/kfy-yarn")
    site = rm_site(IP, ["rm1", "rm2"], "rm2", state, "127.0.0.1:2181")
    assert site["yarn.resourcemanager.ha.id"] == "rm2"
    assert site["hadoop.zk.address"] == site["yarn.resourcemanager.zk-address"] == "127.0.0.1:2181"
    assert site["yarn.resourcemanager.ha.automatic-failover.enabled"] == "true"
    assert site["yarn.resourcemanager.recovery.enabled"] == "true"
    assert site["yarn.resourcemanager.store.class"].endswith(".ZKRMStateStore")
    assert site["yarn.resourcemanager.am.max-attempts"] == "1"
    single = rm_site(IP, ["rm1"], "rm1", state, "127.0.0.1:2181")
    assert not any("zk" in k or ".ha." in k for k in single)
    assert all("/tmp/" not in v for v in single.values())


def test_nm_site_lives_on_its_host_ip_outside_tmp() -> None:
    host_dir = Path("/run/kfy-yarn/host2")
    site = nm_site(IP, ["rm1", "rm2"], "10.91.0.12", host_dir, 4096)
    assert site["yarn.nodemanager.hostname"] == "10.91.0.12"
    for key, port in (("address", 45454), ("webapp.address", 8042), ("localizer.address", 8040)):
        assert site[f"yarn.nodemanager.{key}"] == f"10.91.0.12:{port}"
    assert site["yarn.nodemanager.local-dirs"] == "/run/kfy-yarn/host2/local"
    assert site["yarn.nodemanager.log-dirs"] == "/run/kfy-yarn/host2/logs"
    assert site["yarn.nodemanager.resource.memory-mb"] == "4096"
    assert site["yarn.nodemanager.vmem-check-enabled"] == "false"
    assert site["yarn.resourcemanager.address.rm2"] == f"{IP}:18032"  # NMs follow failovers
    assert core_site(host_dir / "tmp")["hadoop.proxyuser.root.groups"] == "*"


def test_capacity_scheduler_has_two_open_queues() -> None:
    cs = capacity_scheduler()
    queues = cs["yarn.scheduler.capacity.root.queues"].split(",")
    assert queues == ["default", "alt"]
    total = sum(int(cs[f"yarn.scheduler.capacity.root.{q}.capacity"]) for q in queues)
    assert total == 100
    assert cs["yarn.scheduler.capacity.maximum-am-resource-percent"] == "0.8"
    assert all(
        cs[f"yarn.scheduler.capacity.root.{q}.acl_submit_applications"] == "*" for q in queues
    )


def test_zookeeper_and_hosts_files() -> None:
    cfg = dict(line.split("=", 1) for line in zoo_cfg(Path("/d/zk")).splitlines())
    assert cfg["clientPortAddress"] == "127.0.0.1"
    assert cfg["clientPort"] == "2181"
    assert cfg["admin.enableServer"] == "false"
    # its own name resolves, its IP does not resolve back to it (the node id stays the IP)
    assert hosts_file("kfy-host1").splitlines()[1].split()[:2] == ["127.0.1.1", "kfy-host1"]
    assert "10.91" not in hosts_file("kfy-host1")


def test_submit_argv_keeps_jars_local_and_one_attempt() -> None:
    pytest.importorskip("pyspark")
    cluster = YarnCluster(jars=Path("/nonexistent"))
    argv = submit_argv(
        cluster, Path("/x/app.py"), "7", tags=["a", "b"], proxy_user="alice", queue="alt"
    )
    assert argv[-2:] == ["/x/app.py", "7"]
    confs = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--conf")
    assert confs["spark.yarn.jars"].startswith("local:") and confs["spark.yarn.jars"].endswith(
        "/jars/*"
    )
    assert confs["spark.yarn.maxAppAttempts"] == "1"
    assert confs["spark.yarn.submit.waitAppCompletion"] == "false"
    assert confs["spark.yarn.stagingDir"] == "/run/kfy-yarn/staging"
    assert confs["spark.yarn.tags"] == "a,b"
    assert argv[argv.index("--proxy-user") + 1] == "alice"
    assert argv[argv.index("--deploy-mode") + 1] == "cluster"


# -- the real cluster -----------------------------------------------------------------------------
@pytest.mark.yarn
@pytest.mark.slow
@pytest.mark.timeout(300)  # the first cluster test starts the cluster
def test_every_node_manager_runs_on_its_own_host_ip(yarn_cluster: YarnCluster) -> None:
    nodes = {n["id"]: n for n in yarn_cluster.nodes()}
    assert set(nodes) == {f"{h.ip}:45454" for h in yarn_cluster.hosts}
    for host in yarn_cluster.hosts:
        node = nodes[f"{host.ip}:45454"]
        assert node["state"] == "RUNNING"
        assert node["nodeHTTPAddress"] == f"{host.ip}:8042"
        assert node["totalResource"]["memory"] == yarn_cluster.nm_memory_mb
    # the NMs are in the hosts (their network namespaces), not on the gateway side
    for i, host in enumerate(yarn_cluster.hosts, 1):
        assert yarn_cluster.bed is not None
        nm = yarn_cluster.daemons[f"nm{i}"].proc
        assert nm is not None and nm.pid in yarn_cluster.bed.pids(host)


@pytest.mark.yarn
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cluster_mode_pyspark_app_runs_its_driver_on_a_node_manager_host(
    yarn_cluster: YarnCluster, app_script: Path
) -> None:
    t0 = time.monotonic()
    app_id = bare_submit(
        yarn_cluster, app_script, "5", tags=[tag(), "KFY-Mixed"], proxy_user="alice"
    )
    app = yarn_cluster.wait_app(app_id, ["RUNNING"], 120)
    print(f"submit -> RUNNING: {time.monotonic() - t0:.1f} s")
    host_ip = app["amHostHttpAddress"].split(":")[0]
    assert host_ip in {h.ip for h in yarn_cluster.hosts}
    assert app["user"] == "alice"  # root impersonates (hadoop.proxyuser.root.*)
    assert "kfy-mixed" in app["applicationTags"].split(",")  # YARN lower-cases tags
    assert [a["id"] for a in yarn_cluster.apps(tags=["KFY-Mixed"])].count(app_id) == 1

    # the user code's output, served by the NM of the driver's host while the app runs
    attempt = yarn_cluster.am_container(app_id)
    url = (
        f"http://{attempt['nodeHttpAddress']}/ws/v1/node/containerlogs/"
        f"{attempt['containerId']}/stdout"
    )

    def driver_output() -> str | None:
        text = http_text(url)
        return text if "kfy-sum" in text else None

    log = wait_for(driver_output, 90, "no output on the NM")
    host = yarn_cluster.hosts[[h.ip for h in yarn_cluster.hosts].index(host_ip)]
    assert f"kfy-hello from {host.name}" in log
    assert "kfy-sum 45" in log  # a job ran on an executor too

    final = yarn_cluster.wait_app(app_id, ["FINISHED"], 120)
    assert final["finalStatus"] == "SUCCEEDED"
    assert "kfy-sum 45" in yarn_cluster.container_log(app_id, attempt["containerId"])
