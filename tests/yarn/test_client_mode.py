"""YARN client mode: a kernelspec from ``kernelfleet spec install ssh --spark --spark-master yarn
--hadoop-conf-dir …`` runs the kernel (the Spark driver) on an SSH host of the YARN testbed and
its executors in YARN containers, through a real in-process gateway and the real cluster.

The testbed's hosts (kfy-host1/2) run both sshd and the NodeManagers, and share the filesystem
but ``/tmp`` with this side: the venv, pyspark's Spark and the cluster's client conf dir are at
the same paths there, and the kernelspec is installed under the testbed's state dir (not /tmp).
A spec installed without ``--hadoop-conf-dir`` (the hosts here set no HADOOP_CONF_DIR) is
installed with a warning, and its kernel says why its Spark session cannot start.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.client import result_of, stdout_of
from tests.conftest import client_for, temp_gateway
from tests.contract_backends.helpers import eventually, execute_ok, within
from tests.specs.fleet import cli_env, gateway_env_for, kf
from tests.yarn.cluster import YarnCluster, spark_home
from tests.yarn.kernels import dump, gateway_config, kernel_processes

pytestmark = [pytest.mark.yarn, pytest.mark.timeout(300)]

SPEC = "yc_python"
NO_CONF = "yc_no_conf"  # the same without --hadoop-conf-dir
EXECUTOR_MAIN = "org.apache.spark.executor.YarnCoarseGrainedExecutorBackend"
CLIENT_AM_MAIN = "org.apache.spark.deploy.yarn.ExecutorLauncher"  # the AM of client mode
LIVE = ("NEW", "NEW_SAVING", "SUBMITTED", "ACCEPTED", "RUNNING")


def extra_spark_opts(cluster: YarnCluster) -> str:
    """Spark's jars from every node's disk (``local:``: nothing uploaded per kernel), one
    small executor, a small AM, the staging dir of the cluster (shared filesystem)."""
    conf = {
        "spark.yarn.jars": f"local:{spark_home()}/jars/*",
        "spark.yarn.stagingDir": f"file://{cluster.state_dir}/staging",
        "spark.yarn.maxAppAttempts": "1",
        "spark.executor.instances": "1",
        "spark.executor.memory": "512m",
        "spark.yarn.am.memory": "512m",
        "spark.ui.showConsoleProgress": "false",
    }
    words = []
    for key, value in conf.items():
        words += ["--conf", f"{key}={value}"]
    return shlex.join(words)


def install_spec(cluster: YarnCluster, prefix: Path, name: str, *more: str) -> str:
    """A kernelspec as an admin installs it (the CLI, in a subprocess); its stderr."""
    assert cluster.bed is not None
    hosts = ",".join(h.ip for h in cluster.hosts)
    proc = kf(
        cli_env(cluster.bed),
        "spec",
        "install",
        "ssh",
        f"--prefix={prefix}",
        f"--kernel-name={name}",
        "--spark",
        "--spark-master=yarn",
        f"--spark-home={spark_home()}",
        f"--python={sys.executable}",
        f"--remote-hosts={hosts}",
        "--launch-timeout=150",
        f"--extra-spark-opts={extra_spark_opts(cluster)}",
        *more,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def kernel_apps(cluster: YarnCluster, kernel_id: str, states: tuple[str, ...] = LIVE) -> list[Any]:
    """The kernel's applications: client mode names them after the kernel id (run.sh's
    ``--name $KERNEL_ID``; no kernelfleet tags, spark-submit runs on the host)."""
    return [a for a in cluster.apps(states=states) if a["name"] == kernel_id]


def container_mains(cluster: YarnCluster, app_id: str) -> dict[str, set[str]]:
    """Per host name, the Spark main classes of the application's container processes."""
    found: dict[str, set[str]] = {}
    for host, pids in cluster.app_processes(app_id).items():
        for pid in pids:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            mains = {a.decode() for a in argv if a.startswith(b"org.apache.spark.")}
            found.setdefault(host, set()).update(mains)
    return found


async def test_a_spark_kernel_on_an_ssh_host_runs_its_executors_in_yarn(
    yarn_cluster: YarnCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    bed = yarn_cluster.bed
    assert bed is not None
    prefix = bed.dir / "client-mode" / tmp_path.name  # the same path on the hosts
    conf_dir = f"--hadoop-conf-dir={yarn_cluster.hadoop_conf_dir}"
    err = await asyncio.to_thread(install_spec, yarn_cluster, prefix, SPEC, conf_dir)
    assert "Warning" not in err, err
    # without it the install warns (the hosts might set HADOOP_CONF_DIR themselves; these don't)
    err = await asyncio.to_thread(install_spec, yarn_cluster, prefix, NO_CONF)
    assert "Warning:" in err and "--hadoop-conf-dir" in err, err
    jupyter_path = prefix / "share" / "jupyter"
    host_ips = {h.ip for h in yarn_cluster.hosts}

    async with (
        gateway_env_for(bed, jupyter_path, tmp_path, monkeypatch),
        temp_gateway(**gateway_config(tmp_path)) as gw,
    ):
        c = client_for(gw)
        posted = time.monotonic()
        model = await c.start_kernel(SPEC)
        created_s = time.monotonic() - posted
        kid = model["id"]
        record = gw.registry.records[kid]
        assert record.host in host_ips, record.host  # the driver: on an SSH host
        ws = await c.connect(kid)
        try:
            async with within("the first Spark job", 150):
                _, iopub = await execute_ok(
                    ws, "spark.range(10**6).groupBy().sum().collect()[0][0]"
                )
            assert result_of(iopub) == "499999500000", iopub
            first_job_s = time.monotonic() - posted

            # one YARN application, named after the kernel, running in client mode
            apps = await asyncio.to_thread(kernel_apps, yarn_cluster, kid)
            assert len(apps) == 1 and apps[0]["state"] == "RUNNING", dump(apps)
            app_id = apps[0]["id"]
            _, iopub = await execute_ok(
                ws,
                "import socket\nprint(sc.applicationId, sc.master, "
                "spark.conf.get('spark.submit.deployMode'), "
                "spark.conf.get('spark.driver.host'), socket.gethostname())",
            )
            host = bed.by_ip(record.host)
            assert stdout_of(iopub).split() == [app_id, "yarn", "client", host.ip, host.name]
            # the driver is the kernel process on that host, not a container
            procs = await asyncio.to_thread(kernel_processes, yarn_cluster, kid, True)
            assert list(procs) == [host.name], procs
            # its AM is an ExecutorLauncher (client mode), and an executor ran on an NM
            mains = await asyncio.to_thread(container_mains, yarn_cluster, app_id)
            every = set().union(*mains.values()) if mains else set()
            assert CLIENT_AM_MAIN in every and EXECUTOR_MAIN in every, mains
            assert "org.apache.spark.deploy.yarn.ApplicationMaster" not in every, mains

            # an interrupt cancels a running Spark job (not only the Python side)
            cell = asyncio.ensure_future(
                ws.execute(
                    "import time\nprint('job', flush=True)\n"
                    "sc.parallelize(range(2), 2).map(lambda x: time.sleep(120) or x).sum()"
                )
            )
            await asyncio.sleep(5)
            interrupted = time.monotonic()
            await c.call("POST", f"/api/kernels/{kid}/interrupt", {}, expect=204)
            async with within("the interrupted Spark job", 60):
                reply, _ = await cell
            interrupt_s = time.monotonic() - interrupted
            assert reply["status"] == "error", reply
            _, iopub = await execute_ok(
                ws,
                "import time\n"
                "for _ in range(300):\n"
                "    if not sc.statusTracker().getActiveJobsIds(): break\n"
                "    time.sleep(0.1)\n"
                "print(sc.statusTracker().getActiveJobsIds())",
            )
            assert stdout_of(iopub).strip() == "[]", iopub
            _, iopub = await execute_ok(ws, "spark.range(10).count()")
            assert result_of(iopub) == "10"
        finally:
            ws.close()

        await c.shutdown_kernel(kid)
        # no application left running, nor any container of it, nor the kernel on any host
        await eventually(
            lambda: asyncio.to_thread(kernel_apps, yarn_cluster, kid),
            lambda apps: not apps,
            "the kernel's application ended",
            30,
        )
        final = yarn_cluster.app(app_id)
        assert final["state"] == "FINISHED", dump(final)
        await eventually(
            lambda: asyncio.to_thread(yarn_cluster.app_processes, app_id),
            lambda procs: not procs,
            "no container of the application left",
            30,
        )
        await eventually(
            lambda: asyncio.to_thread(kernel_processes, yarn_cluster, kid),
            lambda procs: not procs,
            "no kernel process left on any host",
            30,
        )

        # the spec without it: the kernel starts (lazy), its Spark session cannot, and the
        # user is told why in the cell and in the kernel's log
        kid = (await c.start_kernel(NO_CONF))["id"]
        ws = await c.connect(kid)
        try:
            async with within("the failing Spark session", 60):
                reply, _ = await ws.execute("spark.range(3).count()")
        finally:
            ws.close()
        assert reply["status"] == "error", reply
        assert "JAVA_GATEWAY_EXITED" in reply["evalue"], reply
        assert "kernel's log" in reply["evalue"], reply
        status, logs = await c.request("GET", f"/api/kernels/{kid}/logs")
        assert status == 200 and "HADOOP_CONF_DIR or YARN_CONF_DIR" in str(logs), logs
        await c.shutdown_kernel(kid)
    print(
        f"\n[yarn client mode] test {time.monotonic() - started:.1f} s; POST->201 "
        f"{created_s:.2f} s (lazy), POST->first job result {first_job_s:.2f} s, "
        f"interrupt -> cell ended {interrupt_s:.2f} s"
    )
