"""Fixtures of the Docker tests (the engine and the kernel image are session fixtures
registered in tests/conftest.py): a private Jupyter path with a response listener on the
engine's bridge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kernelfleet.provisioners.base import close_backends
from tests.docker.engine import DockerEngine
from tests.docker.kernels import GATEWAY_IP


@pytest.fixture
async def docker_env(
    docker_engine: DockerEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Path]:
    """A private Jupyter path (kernelspecs go under it) and a response listener on the
    bridge's gateway address; backends and the listener closed at the end."""
    root = tmp_path / "jupyter"
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KF_RESPONSE_IP", GATEWAY_IP)
    monkeypatch.setenv("KF_RESPONSE_PORT", "0")
    yield root
    await close_backends()
