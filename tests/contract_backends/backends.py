"""The backends the provisioner contract suite runs against.

Every backend (local, SSH; later YARN, Kubernetes, Docker) must pass every test of this
directory. To join, write one factory ``(request) -> ContractBackend`` saying how to make the
backend's kernelspec metadata, how to kill a kernel behind the gateway's back, and how to tell
whether a kernel's resource still exists (plus, if its kernels' place can be cut off, how to cut
and restore it), then add one entry to :data:`BACKENDS` with the markers that gate its
infrastructure. A factory skips (``pytest.skip``) when that infrastructure is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.kernels.record import KernelRecord
from kernelfleet.provisioners.local import process_start_time
from tests.gatewayproc import kernel_pids
from tests.testbed import Network, Testbed, TestHost

#: Its own names, so this testbed runs beside those of tests/ssh, tests/specs and conformance.
CONTRACT_TESTBED = Network("kfkbr0", "10.96.0", "kfk-host", "kfkv", Path("/run/kfk-testbed"))

#: Liveness checks every 0.5 s instead of 2 s: tests of a dying kernel take less time.
GATEWAY_CONFIG: dict[str, dict[str, Any]] = {"KernelMonitor": {"monitor_interval": 0.5}}

Checkpoint = dict[str, Any]


@dataclass
class ContractBackend:
    """What the contract tests need to know about one backend (see the module docstring)."""

    name: str
    #: Kernels run elsewhere: the record's ``host`` names where (one of :attr:`hosts`).
    remote: bool
    #: ``metadata`` of a kernelspec of this backend, given a directory of the test and extra
    #: provisioner config (``launch_timeout``, …).
    metadata: Callable[[Path, dict[str, Any]], dict[str, Any]]
    #: Kill the kernel's process with SIGKILL, as a crash would (not through the gateway).
    kill: Callable[[KernelRecord], Awaitable[None]]
    #: Whether anything of kernel *id* still runs where *checkpoint* (its provisioner info, or
    #: ``{}`` when unknown: then everywhere) says. Blocking; call it in a thread.
    resource_alive: Callable[[str, Checkpoint], bool]
    #: An address on the gateway's machine that a kernel's command can connect to.
    notify_address: str = "127.0.0.1"
    #: What ``record.host`` may be for a remote backend.
    hosts: frozenset[str] = frozenset()
    #: Gateway config sections for this backend's tests.
    gateway_config: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(GATEWAY_CONFIG))
    #: Extra environment of a gateway run as a process (tests/gatewayproc.py).
    process_env: dict[str, str] = field(default_factory=dict)
    #: Make the place of a kernel unreachable (None: this backend has no such place).
    cut_place: Callable[[KernelRecord], None] | None = None
    #: Undo every :attr:`cut_place` (called at the end of each test, also after a failure).
    restore_place: Callable[[], None] | None = None
    #: Whether the first launch checkpoint already names the host (SSH places the kernel
    #: first; YARN learns the host when the application runs).
    host_in_first_checkpoint: bool = True
    #: Whether a restart runs the kernel where it ran (SSH: the same host; YARN: the
    #: scheduler picks a node again, as for any new application).
    restart_keeps_place: bool = True
    #: Seconds this backend needs to start a kernel at all, added to the tests' launch
    #: timeouts that must be enough (a YARN application takes 15-40 s).
    startup_seconds: float = 0.0
    #: The Python (with ipykernel) where kernels run: this venv's, or an image's.
    python: str = sys.executable


BackendFactory = Callable[[pytest.FixtureRequest], ContractBackend]


# -- local ------------------------------------------------------------------------------------


def _local_metadata(tmp: Path, config: dict[str, Any]) -> dict[str, Any]:
    if not config:
        return {}
    return {"kernel_provisioner": {"provisioner_name": "kernelfleet-local", "config": config}}


async def _local_kill(record: KernelRecord) -> None:
    assert record.manager is not None
    prov: Any = record.manager.provisioner
    os.kill(prov.pid, signal.SIGKILL)


def _local_alive(kernel_id: str, checkpoint: Checkpoint) -> bool:
    if kernel_pids(kernel_id):  # every process of the kernel carries KERNEL_ID
        return True
    pid, started = checkpoint.get("pid"), checkpoint.get("start_time")
    if isinstance(pid, int) and pid > 0:
        now = process_start_time(pid)  # None: gone, or a zombie
        return now is not None and (started is None or now == started)
    return False


def local_backend(request: pytest.FixtureRequest) -> ContractBackend:
    """Real ipykernels on this machine (the gateway's local provisioner)."""
    return ContractBackend(
        name="local",
        remote=False,
        metadata=_local_metadata,
        kill=_local_kill,
        resource_alive=_local_alive,
    )


# -- SSH --------------------------------------------------------------------------------------


def _kernel_pids_in(bed: Testbed, host: TestHost, kernel_id: str) -> list[int]:
    """Live processes of *host* whose environment says KERNEL_ID=<kernel_id>."""
    needle = f"KERNEL_ID={kernel_id}".encode()
    found = []
    for pid in bed.pids(host):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0") and b") Z " not in stat:
            found.append(pid)
    return found


def ssh_backend(request: pytest.FixtureRequest) -> ContractBackend:
    """ipykernels on the hosts of a netns SSH testbed, started by the SSH provisioner."""
    bed: Testbed = request.getfixturevalue("contract_testbed")

    def metadata(tmp: Path, config: dict[str, Any]) -> dict[str, Any]:
        settings = {
            "remote_hosts": [h.ip for h in bed.hosts],
            "ssh_user": "root",
            "ssh_key": str(bed.key),
            "ssh_known_hosts": str(bed.known_hosts),
            **config,
        }
        return {"kernel_provisioner": {"provisioner_name": "kernelfleet-ssh", "config": settings}}

    async def kill(record: KernelRecord) -> None:
        assert record.manager is not None
        prov: Any = record.manager.provisioner
        host = bed.by_ip(prov.host)
        done = await asyncio.to_thread(bed.run_in, host, "kill", "-KILL", str(prov.pid))
        assert done.returncode == 0, f"kill on {host.name} failed: {done.stderr}"

    def alive(kernel_id: str, checkpoint: Checkpoint) -> bool:
        named = checkpoint.get("host")
        hosts = [bed.by_ip(named)] if isinstance(named, str) else bed.hosts
        return any(_kernel_pids_in(bed, host, kernel_id) for host in hosts)

    def cut(record: KernelRecord) -> None:
        assert record.host is not None
        bed.set_link(bed.by_ip(record.host), False)

    def restore() -> None:
        for host in bed.hosts:
            bed.revive(host)

    return ContractBackend(
        name="ssh",
        remote=True,
        metadata=metadata,
        kill=kill,
        resource_alive=alive,
        notify_address=bed.gateway_ip,
        hosts=frozenset(h.ip for h in bed.hosts),
        cut_place=cut,
        restore_place=restore,
    )


# -- YARN -------------------------------------------------------------------------------------


def yarn_backend(request: pytest.FixtureRequest) -> ContractBackend:
    """ipykernels as Spark drivers in YARN cluster mode (their launcher holds the
    SparkContext), on the NodeManager hosts of the session's YARN cluster."""
    from tests.yarn.cluster import YarnCluster
    from tests.yarn.kernels import kernel_processes, kill_kernel, live_apps, provisioner_config

    cluster: YarnCluster = request.getfixturevalue("yarn_cluster")

    def metadata(tmp: Path, config: dict[str, Any]) -> dict[str, Any]:
        # python: the driver's interpreter, also for kernel commands that are not Python
        settings = provisioner_config(
            cluster, spark_context_in_launcher=True, python=sys.executable, **config
        )
        return {"kernel_provisioner": {"provisioner_name": "kernelfleet-yarn", "config": settings}}

    async def kill(record: KernelRecord) -> None:
        await kill_kernel(cluster, record.id)

    def alive(kernel_id: str, checkpoint: Checkpoint) -> bool:
        return bool(kernel_processes(cluster, kernel_id) or live_apps(cluster, kernel_id))

    config = {k: dict(v) for k, v in GATEWAY_CONFIG.items()}
    config["ResponseListener"] = {"ip": cluster.ip, "port": 0}
    return ContractBackend(
        name="yarn",
        remote=True,
        metadata=metadata,
        kill=kill,
        resource_alive=alive,
        notify_address=cluster.ip,
        hosts=frozenset(h.ip for h in cluster.hosts),
        gateway_config=config,
        process_env={"KF_RESPONSE_IP": cluster.ip, "KF_RESPONSE_PORT": "0"},
        host_in_first_checkpoint=False,
        restart_keeps_place=False,
        startup_seconds=60.0,
    )


# -- Kubernetes -------------------------------------------------------------------------------


def container_pids(kernel_id: str) -> list[int]:
    """Live processes of a kernel in a pod or container, seen from this machine (the node):
    the kernel and its launcher carry KERNEL_ID."""
    needle = f"KERNEL_ID={kernel_id}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes()
            stat = (proc / "stat").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0") and b") Z " not in stat:
            found.append(int(proc.name))
    return found


async def kill_container_kernel(kernel_id: str) -> None:
    """SIGKILL every process of the kernel's pod or container (the launcher first dying may
    take the others with it: those are gone, not missed)."""
    pids = await asyncio.to_thread(container_pids, kernel_id)
    assert pids, f"no process of kernel {kernel_id} on this machine"
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def k8s_backend(request: pytest.FixtureRequest) -> ContractBackend:
    """The kernel image's own ipykernel (Debian's) in pods of the session's Kubernetes
    cluster, run as the image's non-root user."""
    from tests.k8s.cluster import K8sCluster
    from tests.k8s.kernels import KERNELS_NAMESPACE, Identity, kernel_pods

    cluster: K8sCluster = request.getfixturevalue("k8s_cluster")
    identity: Identity = request.getfixturevalue("identity")
    image: str = request.getfixturevalue("kernel_image")

    def metadata(tmp: Path, config: dict[str, Any]) -> dict[str, Any]:
        settings = {
            **identity.settings(),
            "image": image,
            "namespace": KERNELS_NAMESPACE,
            "delete_grace": 2,
            **config,
        }
        return {"kernel_provisioner": {"provisioner_name": "kernelfleet-k8s", "config": settings}}

    async def kill(record: KernelRecord) -> None:
        await kill_container_kernel(record.id)

    def alive(kernel_id: str, checkpoint: Checkpoint) -> bool:
        return bool(container_pids(kernel_id) or kernel_pods(cluster, kernel_id))

    config = {k: dict(v) for k, v in GATEWAY_CONFIG.items()}
    config["ResponseListener"] = {"ip": cluster.node_ip, "port": 0}
    return ContractBackend(
        name="k8s",
        remote=True,
        metadata=metadata,
        kill=kill,
        resource_alive=alive,
        notify_address=cluster.node_ip,
        hosts=frozenset({cluster.node_name}),
        gateway_config=config,
        process_env={"KF_RESPONSE_IP": cluster.node_ip, "KF_RESPONSE_PORT": "0"},
        host_in_first_checkpoint=False,
        restart_keeps_place=True,
        startup_seconds=5.0,
        python="python3",
    )


# -- Docker ----------------------------------------------------------------------------------


def docker_backend(request: pytest.FixtureRequest) -> ContractBackend:
    """The kernel image's ipykernel in containers of the session's Docker engine, run as
    the image's non-root user."""
    from tests.docker.kernels import GATEWAY_IP, kernel_containers, settings

    engine = request.getfixturevalue("docker_engine")
    image: str = request.getfixturevalue("docker_kernel_image")

    def metadata(tmp: Path, config: dict[str, Any]) -> dict[str, Any]:
        values = {**settings(engine, image, stop_grace=2), **config}
        return {"kernel_provisioner": {"provisioner_name": "kernelfleet-docker", "config": values}}

    async def kill(record: KernelRecord) -> None:
        await kill_container_kernel(record.id)

    def alive(kernel_id: str, checkpoint: Checkpoint) -> bool:
        running = [c for c in kernel_containers(engine, kernel_id) if c.get("State") == "running"]
        return bool(container_pids(kernel_id) or running)

    config = {k: dict(v) for k, v in GATEWAY_CONFIG.items()}
    config["ResponseListener"] = {"ip": GATEWAY_IP, "port": 0}
    return ContractBackend(
        name="docker",
        remote=True,
        metadata=metadata,
        kill=kill,
        resource_alive=alive,
        notify_address=GATEWAY_IP,
        hosts=frozenset({str(engine.api("GET", "/info")["Name"])}),
        gateway_config=config,
        process_env={"KF_RESPONSE_IP": GATEWAY_IP, "KF_RESPONSE_PORT": "0"},
        host_in_first_checkpoint=False,
        restart_keeps_place=True,
        startup_seconds=3.0,
        python="python3",
    )


#: Every backend, by name, with the markers that gate its infrastructure.
BACKENDS: dict[str, tuple[BackendFactory, tuple[pytest.MarkDecorator, ...]]] = {
    "local": (local_backend, ()),
    "ssh": (ssh_backend, (pytest.mark.ssh,)),
    "yarn": (yarn_backend, (pytest.mark.yarn, pytest.mark.timeout(300))),
    "k8s": (k8s_backend, (pytest.mark.k8s, pytest.mark.timeout(180))),
    "docker": (docker_backend, (pytest.mark.docker, pytest.mark.timeout(120))),
}
