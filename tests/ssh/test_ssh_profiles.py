"""A kernel profile's memory limit holds on an SSH host: the agent gives each kernel a cgroup
(cgroup v1 on our machines), and a cell that allocates past it kills the kernel, reported as
such; the same for an impersonated user's kernel."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ssh_helpers import IMPERSONATED_USER, SYSTEM_PYTHON, Specs
from testbed import Testbed

from kernelfleet.client import GatewayClient, KernelSocket, stdout_of
from kernelfleet.launchers import cgroups
from tests.conftest import client_for, temp_gateway

pytestmark = pytest.mark.timeout(180)

MIB = 1024**2
SMALL = {
    "KernelProfiles": {
        "profiles": {"small": {"memory": "200M", "cpus": 1}},
        "default_profile": "small",
    },
    # the test reads the death from the kernel's record: no automatic restart
    "KernelMonitor": {"restart_dead_kernels": False},
}
GREEDY = "b = bytearray(600 * 1024 * 1024)\nb[::4096] = b'x' * len(b[::4096])\nprint('survived')"


def memory_limit(kernel_id: str) -> int:
    """The memory limit of the kernel's cgroup (v1 or v2), in bytes."""
    ((directory, values),) = cgroups.plan(kernel_id, 1, None)
    return int((Path(directory) / next(iter(values))).read_text())


def memory_cgroup(kernel_id: str) -> Path:
    return Path(cgroups.plan(kernel_id, 1, None)[0][0])


async def died_of_memory(c: GatewayClient, ws: KernelSocket, kid: str) -> list[dict[str, Any]]:
    """Run the greedy cell; returns the iopub messages seen until the kernel is dead."""
    await ws.send(ws.execute_request(GREEDY))
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(60):
        while True:
            msg = await ws.recv()
            seen.append(msg)
            if "ran out of memory" in str(msg.get("content", {}).get("text", "")):
                break
    async with asyncio.timeout(30):
        while (await c.call("GET", f"/api/kernels/{kid}"))["execution_state"] != "dead":
            await asyncio.sleep(0.1)
    return seen


async def test_a_cell_past_the_profiles_memory_kills_the_kernel_and_says_so(
    testbed: Testbed, specs: Specs, jupyter_path: Path
) -> None:
    host = testbed.hosts[0]
    specs.write("remote", {"remote_hosts": [host.ip]})
    async with temp_gateway(**SMALL) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel("remote--small"))["id"]
        cg = memory_cgroup(kid)
        assert memory_limit(kid) == 200 * MIB
        pid = gw.registry.records[kid].manager.provisioner.pid  # type: ignore[union-attr]
        assert str(pid) in (cg / "cgroup.procs").read_text().split()
        ws = await c.connect(kid)
        _, iopub = await ws.execute("x = bytearray(50 * 1024 * 1024); print('fits')")
        assert stdout_of(iopub).strip() == "fits"  # under the limit: fine
        seen = await died_of_memory(c, ws, kid)
        notice = next(m for m in seen if "ran out of memory" in str(m["content"].get("text")))
        assert notice["content"]["text"].startswith(
            "[kernelfleet] The kernel died: it ran out of memory: "
            "its profile 'small' allows 200 MiB"
        )
        model = await c.call("GET", f"/api/kernels/{kid}")
        assert "ran out of memory" in model["reason"]
        assert "survived" not in stdout_of(seen)
        ws.close()
        await c.shutdown_kernel(kid)
        assert not cg.exists()  # the agent removed the kernel's cgroups with it
        assert not any(Path(d).exists() for d, _ in cgroups.plan(kid, 1, 1))


async def test_the_limit_holds_for_an_impersonated_users_kernel(
    testbed: Testbed, specs: Specs, jupyter_path: Path
) -> None:
    probe = await asyncio.to_thread(
        subprocess.run, [SYSTEM_PYTHON, "-c", "import ipykernel"], check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} has no ipykernel (Debian package python3-ipykernel)")
    specs.write(
        "imp",
        {
            "remote_hosts": [testbed.host(2).ip],
            "impersonation_enabled": True,
            "transport_encryption": False,  # Debian's ipykernel 6 has no CurveZMQ support
        },
        argv=[SYSTEM_PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    )
    async with temp_gateway(**SMALL) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel("imp", env={"KERNEL_USERNAME": IMPERSONATED_USER}))["id"]
        ws = await c.connect(kid)
        _, iopub = await ws.execute("import getpass; print(getpass.getuser())")
        assert stdout_of(iopub).strip() == IMPERSONATED_USER
        assert memory_limit(kid) == 200 * MIB
        await died_of_memory(c, ws, kid)
        ws.close()
        await c.shutdown_kernel(kid)
