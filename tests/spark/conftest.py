"""A real Spark standalone cluster for the session: master and one worker from the pyspark
wheel (Java 17), on the testbed's gateway-side address so kernels on the testbed hosts (the
Spark drivers, client mode) reach the master and the worker's executors reach them back.

Gated: without Java or pyspark the Spark tests are skipped with the reason (``make test``
installs both: openjdk-17-jre-headless and the ``test`` extra's pyspark).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.specs.fleet import shared_testbed


@pytest.fixture(scope="session")
def fleet_bed() -> Iterator[Any]:
    with shared_testbed() as bed:
        yield bed


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


@dataclass
class SparkCluster:
    home: Path
    ip: str
    port: int
    webui: int
    log_dir: Path

    @property
    def master_url(self) -> str:
        return f"spark://{self.ip}:{self.port}"

    def status(self) -> dict[str, Any]:
        url = f"http://{self.ip}:{self.webui}/json/"
        with urllib.request.urlopen(url, timeout=5) as resp:
            value: dict[str, Any] = json.load(resp)
        return value

    def apps(self, which: str, name: str) -> list[dict[str, Any]]:
        return [a for a in self.status().get(which, []) if a.get("name") == name]


def spark_missing() -> str | None:
    if shutil.which("java") is None:
        return "Java is missing (apt-get install openjdk-17-jre-headless; make test does)"
    try:
        import pyspark
    except ImportError:
        return "pyspark is missing (pip install '.[test]'; make test does)"
    if not (Path(pyspark.__file__).parent / "bin" / "spark-class").exists():
        return "this pyspark has no bin/spark-class"
    return None


def _wait(predicate: Any, limit: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
    raise RuntimeError(f"{what} within {limit:g} s\n{tails}")


@pytest.fixture(scope="session")
def spark_cluster(
    fleet_bed: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SparkCluster]:
    reason = spark_missing()
    if reason:
        pytest.skip(reason)
    import pyspark

    home = Path(pyspark.__file__).parent
    ip = fleet_bed.gateway_ip  # the testbed's gateway side: every host reaches it
    logs = tmp_path_factory.mktemp("sparklogs")
    cluster = SparkCluster(home, ip, _free_port(ip), _free_port(ip), logs)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYSPARK")},
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": ip,
        "SPARK_LOG_DIR": str(logs),
        "SPARK_WORKER_DIR": str(logs / "work"),
    }
    spark_class = str(home / "bin" / "spark-class")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with open(logs / "master.log", "wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        spark_class,
                        "org.apache.spark.deploy.master.Master",
                        "--host",
                        ip,
                        "--port",
                        str(cluster.port),
                        "--webui-port",
                        str(cluster.webui),
                    ],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        _wait(
            lambda: cluster.status().get("status") == "ALIVE",
            60,
            "the Spark master did not start",
            [logs / "master.log"],
        )
        with open(logs / "worker.log", "wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        spark_class,
                        "org.apache.spark.deploy.worker.Worker",
                        "--host",
                        ip,
                        "--webui-port",
                        str(_free_port(ip)),
                        "--cores",
                        "2",
                        "--memory",
                        "2g",
                        cluster.master_url,
                    ],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        _wait(
            lambda: any(w.get("state") == "ALIVE" for w in cluster.status().get("workers", [])),
            60,
            "the Spark worker did not register",
            [logs / "master.log", logs / "worker.log"],
        )
        yield cluster
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
