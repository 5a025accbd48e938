"""The session's Kubernetes cluster (``tests/k8s/cluster.py``): started by the first test that
asks for ``k8s_cluster``, stopped at the end of the session. Registered in ``tests/conftest.py``,
so tests/k8s and the contract and conformance suites share one cluster.

Without root, the built binaries (``make k8s-deps``) or the Debian parts (containerd, runc, the
CNI plugins, busybox-static, docker-registry, gcc with a static libc, openssl) the tests that need
it are skipped with the reason; under ``CI=true`` such a requirement fails them instead, so a CI
machine that lost a part cannot go green by skipping the Kubernetes tier.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s.cluster import K8sCluster, bin_dir
from tests.k8s.diagnose import CURRENT
from tests.testbed import TestbedBusy, skip_or_fail

#: tool -> the Debian package that has it
TOOLS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "docker-registry": "docker-registry",
    "gcc": "gcc",
    "openssl": "openssl",
    "ip": "iproute2",
    "umount": "mount",
}
FILES = {
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/usr/lib/cni/host-local": "containernetworking-plugins",
    "/usr/lib/cni/loopback": "containernetworking-plugins",
    "/bin/busybox": "busybox-static",
}


def k8s_requirements() -> Path | str:
    """The binary directory, or why the cluster cannot run here."""
    if os.geteuid() != 0:
        return "the Kubernetes testbed needs root (a bridge, cgroups, mounts, containerd)"
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            return f"{tool} is missing (install the Debian package {package})"
    for path, package in FILES.items():
        if not Path(path).exists():
            return f"{path} is missing (install the Debian package {package})"
    libc = subprocess.run(["gcc", "-print-file-name=libc.a"], capture_output=True, text=True)
    if not Path(libc.stdout.strip()).is_absolute():
        return "gcc has no static libc for the pause binary (install libc6-dev)"
    return bin_dir()


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[K8sCluster]:
    """etcd, the control plane, containerd, the kubelet and the local registry, up and
    Ready (see the docstring of tests/k8s/cluster.py); torn down after the session."""
    bins = k8s_requirements()
    if isinstance(bins, str):
        skip_or_fail("Kubernetes", bins)
    cluster = K8sCluster(bins)
    try:
        cluster.up()
    except TestbedBusy as exc:
        skip_or_fail("Kubernetes", str(exc))
    CURRENT.append(cluster)
    try:
        yield cluster
    finally:
        CURRENT.clear()
        cluster.down()
