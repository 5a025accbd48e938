"""Shared fixtures: boot the real gateway in-process on 127.0.0.1:0 with real kernels."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from kernelfleet.client import GatewayClient
from kernelfleet.gateway.app import Gateway
from tests.docker.fixture import docker_engine, docker_kernel_image, docker_swarm  # noqa: F401 - the session's Docker engine
from tests.k8s.fixture import k8s_cluster  # noqa: F401 - the session's Kubernetes cluster
from tests.k8s.session import identity, kernel_image  # noqa: F401 - over that cluster
from tests.yarn.fixture import yarn_cluster  # noqa: F401 - the session's YARN cluster

TOKEN = "test-token"


def make_config(**sections: dict[str, Any]) -> Config:
    cfg = Config()
    cfg.Gateway.ip = "127.0.0.1"
    cfg.Gateway.port = 0
    cfg.Authenticator.token = TOKEN
    for section, values in sections.items():
        for key, value in values.items():
            cfg[section][key] = value
    return cfg


@contextlib.asynccontextmanager
async def temp_gateway(**sections: dict[str, Any]) -> AsyncIterator[Gateway]:
    """``async with temp_gateway(KernelRegistry={"max_kernels": 2}) as gw:`` — a whole gateway."""
    gw = Gateway(config=make_config(**sections))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop(mode="shutdown")


def client_for(gw: Gateway, token: str = TOKEN, **kwargs: Any) -> GatewayClient:
    return GatewayClient(gw.url, token=token, **kwargs)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """A failed test that ran on the Kubernetes cluster reports the cluster's state."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call" and item.get_closest_marker("k8s") is not None:
        from tests.k8s.diagnose import CURRENT
        from tests.k8s.diagnose import report as cluster_report

        if CURRENT:
            state = cluster_report(CURRENT[0])
            report.sections.append(("Kubernetes cluster at the failure", state))


@pytest.fixture(autouse=True)
def _no_leftover_gateway_processes() -> Iterator[None]:
    """A test that failed half-way must not leave a `kernelfleet serve` process behind."""
    from tests.gatewayproc import RUNNING

    yield
    while RUNNING:
        RUNNING.pop().kill()


@pytest.fixture
def kernelspec_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private Jupyter path with a 'python3' spec for this interpreter (plus extras tests add)."""
    root = tmp_path / "jupyter"
    kdir = root / "kernels" / "python3"
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(
        f'{{"argv": ["{sys.executable}", "-m", "ipykernel_launcher", "-f", "{{connection_file}}"],'
        ' "display_name": "Python 3", "language": "python", "metadata": {}}'
    )
    logo = Path(sys.prefix) / "share/jupyter/kernels/python3/logo-64x64.png"
    if logo.exists():
        (kdir / "logo-64x64.png").write_bytes(logo.read_bytes())
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    return root


@pytest.fixture
async def gateway(kernelspec_dir: Path) -> AsyncIterator[Gateway]:
    async with temp_gateway() as gw:
        yield gw


@pytest.fixture
def client(gateway: Gateway) -> GatewayClient:
    return client_for(gateway)


def add_kernelspec(root: Path, name: str, spec: dict[str, Any]) -> Path:
    import json

    kdir = root / "kernels" / name
    kdir.mkdir(parents=True, exist_ok=True)
    base = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": name,
        "language": "python",
        "metadata": {},
    }
    base.update(spec)
    (kdir / "kernel.json").write_text(json.dumps(base))
    return kdir


os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")


def message_header(msg_type: str, session: str = "s") -> dict[str, str]:
    """A Jupyter message header, as a client sends it."""
    import uuid

    return {
        "msg_id": uuid.uuid4().hex,
        "msg_type": msg_type,
        "session": session,
        "username": "u",
        "date": "2026-11-22T00:00:00.000000Z",
        "version": "5.3",
    }
