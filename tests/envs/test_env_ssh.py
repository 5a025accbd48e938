"""An environment built from PyPI on the gateway, shipped to real SSH hosts (network
namespaces with their own sshd; /tmp private to each), and run there as a kernel through the
gateway; a wrong package leaves nothing on any host."""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.client import stdout_of
from kernelfleet.placement.fleet import reset_fleets
from tests.conftest import client_for
from tests.envs.conftest import PACKAGES, EnvDirs, env_gateway, finished
from tests.specs.fleet import shared_testbed, ssh_env

pytestmark = [pytest.mark.timeout(300), pytest.mark.ssh]

#: Under /tmp: private to each host, so what a host has there was shipped to it.
HOST_ROOT = "/tmp/kf-envs-e2e"


@pytest.fixture(scope="module")
def bed() -> Iterator[Any]:
    with shared_testbed() as testbed:
        yield testbed


async def on_host(bed: Any, host: Any, command: str) -> str:
    """*command*'s output, run on *host* (its own /tmp)."""
    done = await asyncio.to_thread(bed.run_in, host, "sh", "-c", command)
    return str(done.stdout) + str(done.stderr)


@pytest.fixture
async def ssh_gateway_env(bed: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in ssh_env(bed).items():
        monkeypatch.setenv(name, value)
    await reset_fleets()
    yield bed
    await reset_fleets()


async def test_an_environment_shipped_to_three_hosts_runs_a_kernel_there(
    ssh_gateway_env: Any, env_dirs: EnvDirs
) -> None:
    bed = ssh_gateway_env
    hosts = [h.ip for h in bed.hosts]
    async with env_gateway(env_dirs, env={"host_root": HOST_ROOT, "compile_bytecode": True}) as gw:
        c = client_for(gw)
        status, body = await c.request(
            "POST",
            "/api/envs",
            {
                "name": "shipped",
                "packages": PACKAGES,
                "python": "3.11",
                "kind": "ssh",
                "spec": {"remote_hosts": hosts},
            },
        )
        assert status == 202, body
        job = await finished(c, body["job"])
        assert job["ok"], (job["error"], job["lines"][-6:])
        per_host = {line["host"] for line in job["lines"] if line["host"]}
        assert per_host == set(hosts), job["lines"]
        record = await c.call("GET", "/api/envs/shipped")
        dest = f"{HOST_ROOT}/shipped/{record['sha256'][:12]}"
        for host in bed.hosts:
            marker = await on_host(bed, host, f"cat {shlex.quote(dest)}/.kf-env.json")
            assert json.loads(marker)["sha256"] == record["sha256"], marker
        assert not Path(dest).exists()  # not on the gateway's side: shipped, not shared
        target = bed.hosts[2]
        model = await c.start_kernel("shipped", env={"KERNEL_REMOTE_HOST": target.ip})
        ws = await c.connect(model["id"])
        _, iopub = await ws.execute(
            "import six, toolz, socket, sys, json\n"
            "print(json.dumps([socket.gethostname(), sys.prefix, toolz.__version__]))"
        )
        hostname, prefix, version = json.loads(stdout_of(iopub))
        assert hostname == target.name and prefix == dest and version.startswith("1.0")
        ws.close()
        # in use: not removable; once shut down, removed from every host too
        status, body = await c.request("DELETE", "/api/envs/shipped")
        assert status == 409, body
        await c.shutdown_kernel(model["id"])
        # a rebuild ships the new build and takes the previous one off the hosts
        status, body = await c.request("POST", "/api/envs/shipped/rebuild")
        assert status == 202, body
        rebuilt = await finished(c, body["job"])
        assert rebuilt["ok"], (rebuilt["error"], rebuilt["lines"][-6:])
        again = await c.call("GET", "/api/envs/shipped")
        new_dest = f"{HOST_ROOT}/shipped/{again['sha256'][:12]}"
        for host in bed.hosts:
            assert "gone" in await on_host(bed, host, f"test -e {dest} || echo gone")
            assert "there" in await on_host(bed, host, f"test -e {new_dest} && echo there")
        status, _ = await c.request("DELETE", "/api/envs/shipped")
        assert status == 204
        for host in bed.hosts:
            assert "gone" in await on_host(bed, host, f"test -e {new_dest} || echo gone")
    assert env_dirs.leftovers() == []


async def test_a_wrong_package_reaches_no_host(ssh_gateway_env: Any, env_dirs: EnvDirs) -> None:
    bed = ssh_gateway_env
    async with env_gateway(env_dirs, env={"host_root": HOST_ROOT}) as gw:
        c = client_for(gw)
        status, body = await c.request(
            "POST",
            "/api/envs",
            {
                "name": "nothere",
                "packages": ["six", "toolz==0.0.1"],
                "kind": "ssh",
                "spec": {"remote_hosts": [h.ip for h in bed.hosts]},
            },
        )
        assert status == 202, body
        job = await finished(c, body["job"])
        assert job["error"].startswith("Package 'toolz==0.0.1' does not resolve"), job["error"]
    for host in bed.hosts:
        assert "gone" in await on_host(bed, host, f"test -e {HOST_ROOT}/nothere || echo gone")
    assert env_dirs.leftovers() == []
