"""The backends the conformance suite runs against.

A backend is an async context manager factory: given the pytest request, it yields a
:class:`Backend`, an in-process gateway plus the names of two kernelspecs it serves (the same
kernel, once with ``interrupt_mode`` "signal" and once "message") and a way to kill a kernel's
process behind the gateway's back. To add one (YARN, Kubernetes, Docker), write such a factory
and list it in :data:`BACKENDS`; skip inside it (``pytest.skip``) when its infrastructure is
missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.client import GatewayClient
from kernelfleet.gateway.app import Gateway
from kernelfleet.kernels.record import KernelRecord
from kernelfleet.placement.fleet import reset_fleets
from tests.conftest import add_kernelspec, client_for, temp_gateway
from tests.testbed import Network, Testbed, running_testbed

#: Its own names, so this testbed runs beside those of tests/ssh and tests/specs.
CONFORMANCE_TESTBED = Network("kfcbr0", "10.93.0", "kfc-host", "kfcv", Path("/run/kfc-testbed"))

#: The gateway of every backend: liveness checks every 0.5 s instead of 2 s, so the tests of a
#: dying kernel take less time (what they see is the same).
GATEWAY_CONFIG: dict[str, dict[str, Any]] = {"KernelMonitor": {"monitor_interval": 0.5}}

#: debugpy (the debugger tests) otherwise warns on stderr about frozen modules.
KERNEL_ENV = {"PYDEVD_DISABLE_FILE_VALIDATION": "1"}


@dataclass
class Backend:
    """A gateway whose kernels run on one backend (see the module docstring)."""

    name: str
    gateway: Gateway
    kernelspec: str  # interrupt_mode "signal"
    message_kernelspec: str  # interrupt_mode "message"
    #: Kill the kernel's process with SIGKILL, as a crash would (not through the gateway).
    kill: Callable[[KernelRecord], Awaitable[None]]
    #: The host names a kernel of this backend may report (``socket.gethostname()``).
    hostnames: frozenset[str]

    def client(self) -> GatewayClient:
        return client_for(self.gateway)


BackendFactory = Callable[[pytest.FixtureRequest], contextlib.AbstractAsyncContextManager[Backend]]


def _python_specs(
    root: Path, prefix: str, metadata: dict[str, Any], python: str = ""
) -> tuple[str, str]:
    """Kernelspecs of both interrupt modes; ipykernel of *python* (default: this venv's)."""
    extra = {"argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]}
    for mode in ("signal", "message"):
        add_kernelspec(
            root,
            f"{prefix}_{mode}",
            {
                "interrupt_mode": mode,
                "env": KERNEL_ENV,
                "metadata": metadata,
                **(extra if python else {}),
            },
        )
    return f"{prefix}_signal", f"{prefix}_message"


@contextlib.contextmanager
def _jupyter_dirs(base: Path) -> Any:
    """Private Jupyter path, data and runtime dirs for one backend's gateway."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(base / "jupyter"))
        mp.setenv("JUPYTER_DATA_DIR", str(base / "data"))
        mp.setenv("JUPYTER_RUNTIME_DIR", str(base / "runtime"))
        yield


@contextlib.asynccontextmanager
async def local_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """Real ipykernels on this machine (the gateway's local provisioner)."""
    base = request.getfixturevalue("tmp_path_factory").mktemp("conformance-local")
    spec, message_spec = _python_specs(base / "jupyter", "local", {})

    async def kill(record: KernelRecord) -> None:
        assert record.manager is not None and record.manager.provisioner is not None
        os.kill(record.manager.provisioner.pid, signal.SIGKILL)

    with _jupyter_dirs(base):
        async with temp_gateway(**GATEWAY_CONFIG) as gw:
            yield Backend("local", gw, spec, message_spec, kill, frozenset({socket.gethostname()}))


@contextlib.asynccontextmanager
async def ssh_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """ipykernels on the hosts of a netns SSH testbed, started by the SSH provisioner."""
    bed: Testbed = request.getfixturevalue("conformance_testbed")
    base = request.getfixturevalue("tmp_path_factory").mktemp("conformance-ssh")
    config = {
        "remote_hosts": [h.ip for h in bed.hosts],
        "ssh_user": "root",
        "ssh_key": str(bed.key),
        "ssh_known_hosts": str(bed.known_hosts),
    }
    metadata = {"kernel_provisioner": {"provisioner_name": "kernelfleet-ssh", "config": config}}
    spec, message_spec = _python_specs(base / "jupyter", "ssh", metadata)

    async def kill(record: KernelRecord) -> None:
        assert record.manager is not None
        prov: Any = record.manager.provisioner
        host = bed.by_ip(prov.host)
        done = await asyncio.to_thread(bed.run_in, host, "kill", "-KILL", str(prov.pid))
        assert done.returncode == 0, f"kill on {host.name} failed: {done.stderr}"

    with _jupyter_dirs(base):
        await reset_fleets()
        try:
            async with temp_gateway(**GATEWAY_CONFIG) as gw:
                hostnames = frozenset(h.name for h in bed.hosts)
                yield Backend("ssh", gw, spec, message_spec, kill, hostnames)
        finally:
            await reset_fleets()


@contextlib.asynccontextmanager
async def yarn_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """ipykernels as Spark drivers in YARN cluster mode (the launcher holds the SparkContext),
    on the NodeManager hosts of the session's YARN cluster."""
    from kernelfleet.provisioners.base import close_backends
    from tests.yarn.kernels import kill_kernel, provisioner_config

    cluster = request.getfixturevalue("yarn_cluster")
    base = request.getfixturevalue("tmp_path_factory").mktemp("conformance-yarn")
    config = provisioner_config(cluster, spark_context_in_launcher=True)
    metadata = {"kernel_provisioner": {"provisioner_name": "kernelfleet-yarn", "config": config}}
    spec, message_spec = _python_specs(base / "jupyter", "yarn", metadata)

    async def kill(record: KernelRecord) -> None:
        await kill_kernel(cluster, record.id)

    gateway_config = {k: dict(v) for k, v in GATEWAY_CONFIG.items()}
    gateway_config["ResponseListener"] = {"ip": cluster.ip, "port": 0}
    with _jupyter_dirs(base):
        try:
            async with temp_gateway(**gateway_config) as gw:
                hostnames = frozenset(h.name for h in cluster.hosts)
                yield Backend("yarn", gw, spec, message_spec, kill, hostnames)
        finally:
            await close_backends()


@contextlib.asynccontextmanager
async def k8s_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """The kernel image's own ipykernel (Debian's) in pods of the session's Kubernetes
    cluster, run as the image's non-root user."""
    from kernelfleet.provisioners.base import close_backends
    from tests.contract_backends.backends import kill_container_kernel
    from tests.k8s.kernels import KERNELS_NAMESPACE
    from tests.k8s.session import PodNames

    cluster = request.getfixturevalue("k8s_cluster")
    identity = request.getfixturevalue("identity")
    image = request.getfixturevalue("kernel_image")
    base = request.getfixturevalue("tmp_path_factory").mktemp("conformance-k8s")
    config = {
        **identity.settings(),
        "image": image,
        "namespace": KERNELS_NAMESPACE,
    }
    metadata = {"kernel_provisioner": {"provisioner_name": "kernelfleet-k8s", "config": config}}
    spec, message_spec = _python_specs(base / "jupyter", "k8s", metadata, "python3")

    async def kill(record: KernelRecord) -> None:
        await kill_container_kernel(record.id)

    gateway_config = {k: dict(v) for k, v in GATEWAY_CONFIG.items()}
    gateway_config["ResponseListener"] = {"ip": cluster.node_ip, "port": 0}
    with _jupyter_dirs(base):
        try:
            async with temp_gateway(**gateway_config) as gw:
                yield Backend("k8s", gw, spec, message_spec, kill, PodNames())
        finally:
            await close_backends()


@contextlib.asynccontextmanager
async def docker_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """The kernel image's ipykernel in containers of the session's Docker engine, run as
    the image's non-root user."""
    from kernelfleet.provisioners.base import close_backends
    from tests.contract_backends.backends import kill_container_kernel
    from tests.docker.kernels import GATEWAY_IP, settings
    from tests.k8s.session import PodNames

    engine = request.getfixturevalue("docker_engine")
    image = request.getfixturevalue("docker_kernel_image")
    base = request.getfixturevalue("tmp_path_factory").mktemp("conformance-docker")
    config = settings(engine, image)
    metadata = {"kernel_provisioner": {"provisioner_name": "kernelfleet-docker", "config": config}}
    spec, message_spec = _python_specs(base / "jupyter", "docker", metadata, "python3")

    async def kill(record: KernelRecord) -> None:
        await kill_container_kernel(record.id)

    gateway_config = {k: dict(v) for k, v in GATEWAY_CONFIG.items()}
    gateway_config["ResponseListener"] = {"ip": GATEWAY_IP, "port": 0}
    with _jupyter_dirs(base):
        try:
            async with temp_gateway(**gateway_config) as gw:
                yield Backend("docker", gw, spec, message_spec, kill, PodNames())
        finally:
            await close_backends()


def conformance_testbed() -> Any:
    """A 2-host testbed (a generator for the package-scoped fixture)."""
    with running_testbed(2, network=CONFORMANCE_TESTBED) as bed:
        yield bed


#: Every backend, by name; the SSH one carries the ``ssh`` marker as tests/ssh does.
BACKENDS: dict[str, tuple[BackendFactory, tuple[pytest.MarkDecorator, ...]]] = {
    "local": (local_backend, ()),
    "ssh": (ssh_backend, (pytest.mark.ssh,)),
    "yarn": (yarn_backend, (pytest.mark.yarn, pytest.mark.timeout(300))),
    "k8s": (k8s_backend, (pytest.mark.k8s, pytest.mark.timeout(180))),
    "docker": (docker_backend, (pytest.mark.docker, pytest.mark.timeout(120))),
}
