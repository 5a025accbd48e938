"""Fixtures for tests against real SSH hosts: one netns testbed per session, kernelspecs,
kernel helpers. Skips the whole directory with the reason when the testbed cannot run."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kernelfleet.placement.fleet import reset_fleets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ssh_helpers import IMPERSONATED_USER, SERVICE_USER, Specs
from testbed import Testbed, running_testbed


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.ssh)


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    with running_testbed(3, wait=30, user=IMPERSONATED_USER, service_user=SERVICE_USER) as bed:
        yield bed


@pytest.fixture(scope="session")
def ssh_env(testbed: Testbed) -> Iterator[dict[str, str]]:
    """The KF_* environment a library-mode user would set (the provisioner reads it)."""
    values = {
        "KF_SSH_USER": "root",
        "KF_SSH_KEY": str(testbed.key),
        "KF_SSH_KNOWN_HOSTS": str(testbed.known_hosts),
        "KF_REMOTE_HOSTS": ",".join(h.ip for h in testbed.hosts),
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in values.items():
            mp.setenv(name, value)
        yield values


@pytest.fixture
async def fleet_reset(ssh_env: dict[str, str]) -> AsyncIterator[None]:
    """A fresh fleet for each test, closed (connections and all) at its end."""
    await reset_fleets()
    yield
    await reset_fleets()


@pytest.fixture
def specs(tmp_path: Path, fleet_reset: None) -> Specs:
    return Specs(tmp_path / "kernels")


@pytest.fixture
def jupyter_path(specs: Specs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A Jupyter path holding *specs*, for a gateway that serves them (private dirs)."""
    monkeypatch.setenv("JUPYTER_PATH", str(specs.root.parent))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    return specs.root
