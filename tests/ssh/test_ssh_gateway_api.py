"""Remote kernels through the gateway's HTTP and websocket API (in-process gateway)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ssh_helpers import Specs
from testbed import Testbed

from kernelfleet.client import stdout_of
from tests.conftest import client_for, temp_gateway

pytestmark = pytest.mark.timeout(180)


async def test_a_remote_kernel_through_the_api_with_logs_and_pinning(
    testbed: Testbed, specs: Specs, jupyter_path: Path
) -> None:
    specs.write("remote")
    host = testbed.hosts[1]
    async with temp_gateway() as gw:
        c = client_for(gw)
        model = await c.start_kernel("remote", env={"KERNEL_REMOTE_HOST": host.ip})
        ws = await c.connect(model["id"])
        _, iopub = await ws.execute(
            "import socket, sys; print(socket.gethostname()); "
            "print('to-the-remote-log', file=sys.__stderr__, flush=True)"
        )
        assert stdout_of(iopub).strip() == host.name
        assert gw.registry.records[model["id"]].host == host.ip
        log = await c.call("GET", f"/api/kernels/{model['id']}/logs")
        assert "to-the-remote-log" in log
        restarted = await c.call("POST", f"/api/kernels/{model['id']}/restart", {})
        assert restarted["id"] == model["id"]
        _, iopub = await ws.execute("import socket; print(socket.gethostname())")
        assert stdout_of(iopub).strip() == host.name  # restarted in place
        ws.close()
        status, body = await c.request(
            "POST", "/api/kernels", {"name": "remote", "env": {"KERNEL_REMOTE_HOST": "10.89.0.99"}}
        )
        assert status == 403 and "10.89.0.99" in body["message"]
        await c.shutdown_kernel(model["id"])
        assert not testbed.processes_matching(host, model["id"])


async def test_no_reachable_host_is_a_503_naming_the_hosts(
    testbed: Testbed, specs: Specs, jupyter_path: Path
) -> None:
    specs.write("down", {"ssh_port": 2222})
    async with temp_gateway() as gw:
        status, body = await client_for(gw).request("POST", "/api/kernels", {"name": "down"})
        assert status == 503, body
        assert body["reason"] == "No Host Available"
        for host in testbed.hosts:
            assert host.ip in body["message"]
        assert gw.registry.records == {}
