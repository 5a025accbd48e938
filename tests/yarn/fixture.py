"""The session's YARN cluster (``tests/yarn/cluster.py``): started by the first test that asks
for ``yarn_cluster``, stopped at the end of the session. Registered in ``tests/conftest.py``, so
the suites of every backend (tests/yarn, the contract and conformance suites) share one cluster.

Without root, Java, pyspark or the resolved jars (``make yarn-deps``) the tests that need it are
skipped with the reason; under ``CI=true`` such a requirement fails them instead, so a CI
machine that lost its Java cannot go green by skipping the YARN tier.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testbed import TestbedBusy, missing_requirements, skip_or_fail
from tests.yarn.cluster import JAVA_HOME, YarnCluster, jars_dir


def yarn_requirements() -> Path | str:
    """The jar directory, or why the cluster cannot run here."""
    reason = missing_requirements()
    if reason:
        return reason
    if not (JAVA_HOME / "bin" / "java").exists():
        return f"Java 17 is missing at {JAVA_HOME} (apt-get install openjdk-17-jre-headless)"
    try:
        import pyspark
    except ImportError:
        return "pyspark is missing (pip install '.[test]'; make test does)"
    home = Path(pyspark.__file__).parent
    if not (home / "bin" / "spark-submit").exists() or not list(home.glob("jars/zookeeper-*")):
        return f"this pyspark ({home}) has no bin/spark-submit or ZooKeeper jar"
    if shutil.which("nsenter") is None:
        return "nsenter is missing (util-linux)"
    return jars_dir()


@pytest.fixture(scope="session")
def yarn_cluster() -> Iterator[YarnCluster]:
    """Two NodeManagers in testbed hosts, two ResourceManagers (HA) and ZooKeeper; see the
    docstring of tests/yarn/cluster.py for why it is HA from the start."""
    jars = yarn_requirements()
    if isinstance(jars, str):
        skip_or_fail("YARN", jars)
    cluster = YarnCluster(jars)
    try:
        cluster.start_ha()
    except TestbedBusy as exc:
        skip_or_fail("YARN", str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()
