"""``kernelfleet spec install yarn`` then ``kernelfleet hosts check --spec`` against the real
cluster: the RMs' HA states, the NodeManagers, the queue, and this machine's spark-submit and
Hadoop configuration; a queue the cluster does not have is named with its fix."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.specs.test_yarn_kind import kf
from tests.yarn.cluster import YarnCluster

pytestmark = [pytest.mark.yarn, pytest.mark.timeout(180)]


@pytest.fixture
def prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jp"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KF_CONFIG_DIR", str(tmp_path / "cfg"))
    for name in list(os.environ):
        if name.startswith(("KF_SPEC_", "KF_YARN_", "KF_CHECK_")):
            monkeypatch.delenv(name)
    return tmp_path / "pfx"


def install(prefix: Path, name: str, *argv: str) -> None:
    from kernelfleet.cli.spec import SpecApp

    code, _, err = kf(
        SpecApp, "install", "yarn", f"--prefix={prefix}", f"--kernel-name={name}", *argv
    )
    assert code == 0, err


async def check(prefix: Path, name: str) -> tuple[int, dict[str, Any]]:
    from kernelfleet.cli.hosts import CheckApp

    code, out, err = await asyncio.to_thread(
        kf, CheckApp, f"--spec={name}", f"--prefix={prefix}", "--json"
    )
    assert out, err
    (cluster,) = json.loads(out)["hosts"]
    return code, {c["name"]: c for c in cluster["checks"]}


async def test_hosts_check_sees_the_cluster_ready_for_a_yarn_spec(
    yarn_cluster: YarnCluster, prefix: Path
) -> None:
    endpoints = ",".join(yarn_cluster.rm_url(r) for r in yarn_cluster.rm_ids)
    install(
        prefix,
        "yk",
        f"--yarn-endpoints={endpoints}",
        f"--hadoop-conf-dir={yarn_cluster.hadoop_conf_dir}",
    )
    code, checks = await check(prefix, "yk")
    assert code == 0, checks
    assert all(c["status"] == "ok" for c in checks.values()), checks
    rm = checks["resourcemanager"]["detail"]
    active = yarn_cluster.active_rm()
    assert active is not None and rm.startswith(f"{yarn_cluster.rm_url(active)} is ACTIVE; ")
    assert "STANDBY" in rm
    assert checks["nodemanagers"]["detail"].startswith(f"{yarn_cluster.n_hosts} RUNNING (")
    assert checks["queue"]["detail"].startswith("queue 'default' is RUNNING, ")
    assert checks["hadoop conf"]["detail"] == f"{yarn_cluster.hadoop_conf_dir}/yarn-site.xml"
    assert checks["spec"]["detail"] == "scripts/spark_kernel.py shipped with each kernel"


async def test_the_endpoints_come_from_yarn_site_and_a_missing_queue_is_named(
    yarn_cluster: YarnCluster, prefix: Path
) -> None:
    # no --yarn-endpoints: the RMs are read from the yarn-site.xml spark-submit reads too
    install(prefix, "ynoq", f"--hadoop-conf-dir={yarn_cluster.hadoop_conf_dir}", "--queue=nope")
    code, checks = await check(prefix, "ynoq")
    assert code == 1
    assert checks["resourcemanager"]["status"] == "ok"
    queue = checks["queue"]
    assert queue["status"] == "fail", checks
    assert queue["detail"].startswith("the ResourceManager has no queue 'nope' (queues: ")
    assert "default" in queue["detail"] and "--queue" in queue["fix"]
    assert checks["nodemanagers"]["status"] == "ok"
