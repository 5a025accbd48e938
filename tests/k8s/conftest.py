"""Fixtures of the Kubernetes tests (the cluster, the kernel image and the gateway's identity
are session fixtures registered in tests/conftest.py): a private Jupyter path with a response
listener on the pod network."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kernelfleet.provisioners.base import close_backends
from tests.k8s.cluster import K8sCluster


@pytest.fixture
async def k8s_env(
    k8s_cluster: K8sCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Path]:
    """A private Jupyter path (kernelspecs go under it) and a response listener on the pod
    network's gateway address; backends and the listener closed at the end."""
    root = tmp_path / "jupyter"
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KF_RESPONSE_IP", k8s_cluster.node_ip)
    monkeypatch.setenv("KF_RESPONSE_PORT", "0")
    yield root
    await close_backends()
