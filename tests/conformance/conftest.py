"""Fixtures of the conformance suite: a matrix of backends and protocols over shared kernels.

Scopes: one gateway per backend and one shared kernel per (backend, protocol) for the whole
package (pytest orders the tests so that each is set up once); a test that kills or shuts down
its kernel asks for ``fresh_kernel``; every test opens websockets of its own. Every async
fixture and test runs in the package's event loop (``loop_scope="package"``), since the gateway
and its kernels live in it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from kernelfleet.client import V1_PROTOCOL, GatewayClient, KernelSocket
from kernelfleet.kernels.record import KernelRecord
from tests.conformance.backends import BACKENDS, Backend, conformance_testbed
from tests.conformance.helpers import within
from tests.testbed import Testbed

#: The websocket protocols: the subprotocol a client asks for (None: legacy JSON).
PROTOCOLS: dict[str, str | None] = {"legacy": None, "v1": V1_PROTOCOL}

#: Backends whose kernels start slowly, or whose tier is near its time budget, run the suite
#: over one websocket protocol: the protocols are the gateway's own code (the same for every
#: backend), and both run on local and SSH.
ONE_PROTOCOL = {"yarn": "v1", "k8s": "v1", "docker": "v1"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        backend = params.params.get("backend") if params is not None else None
        protocol = params.params.get("protocol") if params is not None else None
        only = ONE_PROTOCOL.get(str(backend))
        (drop if only is not None and protocol is not None and protocol != only else keep).append(
            item
        )
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@dataclass
class Kernel:
    """A running kernel of one backend, reached over one websocket protocol."""

    backend: Backend
    id: str
    protocol: str | None

    @property
    def client(self) -> GatewayClient:
        return self.backend.client()

    @property
    def record(self) -> KernelRecord:
        return self.backend.gateway.registry.records[self.id]

    async def connect(self, session_id: str | None = None, handshake: bool = True) -> KernelSocket:
        """A websocket to the kernel; with *handshake*, after a ``kernel_info`` round trip, as
        JupyterLab does before it lets a notebook execute (see test_stdin for why it matters)."""
        ws = await self.client.connect(self.id, session_id, self.protocol)
        assert ws.protocol == self.protocol, f"gateway selected {ws.protocol!r}"
        if handshake:
            async with within("kernel_info_reply of the connection handshake"):
                await ws.request("kernel_info_request", {})
        return ws


@contextlib.asynccontextmanager
async def started(backend: Backend, protocol: str | None, spec: str) -> AsyncIterator[Kernel]:
    client = backend.client()
    model = await client.start_kernel(spec)
    try:
        yield Kernel(backend, model["id"], protocol)
    finally:
        status, body = await client.request("DELETE", f"/api/kernels/{model['id']}")
        assert status in (204, 404), body  # 404: the test saw it go away


@pytest.fixture(scope="package", name="conformance_testbed")
def _conformance_testbed() -> Iterator[Testbed]:
    yield from conformance_testbed()


@pytest_asyncio.fixture(
    scope="package",
    loop_scope="package",
    params=[pytest.param(name, marks=marks) for name, (_, marks) in BACKENDS.items()],
)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    factory, _ = BACKENDS[request.param]
    async with factory(request) as b:
        yield b


@pytest.fixture(scope="package", params=list(PROTOCOLS))
def protocol(request: pytest.FixtureRequest) -> str | None:
    return PROTOCOLS[request.param]


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def kernel(backend: Backend, protocol: str | None) -> AsyncIterator[Kernel]:
    """The kernel (interrupt_mode "signal") shared by the tests that leave it running."""
    async with started(backend, protocol, backend.kernelspec) as k:
        yield k


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def message_kernel(backend: Backend, protocol: str | None) -> AsyncIterator[Kernel]:
    """A shared kernel of the backend's interrupt_mode "message" kernelspec."""
    async with started(backend, protocol, backend.message_kernelspec) as k:
        yield k


@pytest_asyncio.fixture(loop_scope="package")
async def fresh_kernel(backend: Backend, protocol: str | None) -> AsyncIterator[Kernel]:
    """A kernel of this test alone (it may kill it or shut it down)."""
    async with started(backend, protocol, backend.kernelspec) as k:
        yield k


@pytest_asyncio.fixture(loop_scope="package")
async def ws(kernel: Kernel) -> AsyncIterator[KernelSocket]:
    """A websocket of this test to the shared kernel (its own session id)."""
    sock = await kernel.connect()
    yield sock
    sock.close()


@pytest_asyncio.fixture(loop_scope="package")
async def sockets() -> AsyncIterator[list[KernelSocket]]:
    """Append the websockets a test opens: they are closed at its end, whatever happens."""
    opened: list[KernelSocket] = []
    yield opened
    for sock in opened:
        sock.close()
