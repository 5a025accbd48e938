"""Fixtures of the YARN tests (the cluster itself, ``yarn_cluster``, is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kernelfleet.provisioners.base import close_backends
from tests.yarn.cluster import YarnCluster


@pytest.fixture
async def yarn_env(
    yarn_cluster: YarnCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Path]:
    """A private Jupyter path (kernelspecs go under it) and a response listener on the
    cluster's network; backends and the listener closed at the end."""
    root = tmp_path / "jupyter"
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KF_RESPONSE_IP", yarn_cluster.ip)
    monkeypatch.setenv("KF_RESPONSE_PORT", "0")
    yield root
    await close_backends()
