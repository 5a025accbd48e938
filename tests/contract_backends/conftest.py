"""Fixtures of the contract suite: every test runs once per backend of :data:`BACKENDS`.

Each test boots its own gateway(s) in its own event loop, so backends (one per provisioner kind
and loop) and SSH connections never leak from one test into the next; the SSH testbed is
shared by the whole package.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.placement.fleet import reset_fleets
from kernelfleet.provisioners.base import KernelfleetProvisioner, close_backends
from kernelfleet.provisioners.factory import provisioner_class
from tests.contract_backends.backends import BACKENDS, CONTRACT_TESTBED, ContractBackend
from tests.contract_backends.helpers import MESSAGE_SPEC, SPEC, Contract
from tests.testbed import Testbed, running_testbed


@pytest.fixture(scope="package")
def contract_testbed() -> Iterator[Testbed]:
    with running_testbed(2, network=CONTRACT_TESTBED) as bed:
        yield bed


@pytest.fixture(params=[pytest.param(name, marks=marks) for name, (_, marks) in BACKENDS.items()])
def backend(request: pytest.FixtureRequest) -> Iterator[ContractBackend]:
    factory, _ = BACKENDS[request.param]
    made = factory(request)
    yield made
    if made.restore_place is not None:
        made.restore_place()


@pytest.fixture
def contract(backend: ContractBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Contract:
    """This test's kernelspecs (``contract``: interrupt mode signal, ``contract_message``) on a
    private Jupyter path, and a private data dir."""
    made = Contract(backend, tmp_path)
    made.write_spec(SPEC)
    made.write_spec(MESSAGE_SPEC, interrupt_mode="message")
    monkeypatch.setenv("JUPYTER_PATH", str(made.jupyter_path))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    return made


@pytest.fixture
async def sweep() -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
    """(kernel id, kernel.json) of kernels a test may leave outside any gateway (a killed
    gateway process, leave mode): whatever happened, they are stopped by id at its end."""
    found: list[tuple[str, dict[str, Any]]] = []
    yield found
    for kernel_id, spec in found:
        klass = provisioner_class(spec)
        if klass is not None and issubclass(klass, KernelfleetProvisioner):
            with contextlib.suppress(Exception):
                await klass.stop_orphans(kernel_id, spec)


@pytest.fixture(autouse=True)
async def _backends_closed() -> AsyncIterator[None]:
    """Backends a test made outside a gateway (orphan stops) are closed with its loop, and
    what the test left unclosed is collected now: its ResourceWarning fails this test, not the
    one that happens to run when the garbage collector does."""
    yield
    await close_backends()
    await reset_fleets()
    gc.collect()
