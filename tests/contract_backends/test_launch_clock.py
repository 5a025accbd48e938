"""The one launch clock on every backend: the gateway's deadline (the client's
KERNEL_LAUNCH_TIMEOUT, capped by max_launch_timeout, else the kernelspec's launch_timeout, else the
gateway's default) is the only one; no provisioner keeps a clock of its own."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import client_for, temp_gateway
from tests.contract_backends.helpers import (
    Contract,
    delayed_argv,
    execute_ok,
    wait_resource_gone,
)

pytestmark = pytest.mark.timeout(60)


def slow_spec(contract: Contract) -> str:
    """A kernel that needs about 4 s to start, of a kernelspec that allows 2 s."""
    return contract.write_spec(
        "contract_clock",
        argv=delayed_argv(4, python=contract.backend.python),
        config={"launch_timeout": 2},
    )


async def test_the_clients_launch_timeout_outranks_the_kernelspecs(contract: Contract) -> None:
    spec = slow_spec(contract)
    async with temp_gateway(**contract.config()) as gw:
        c = client_for(gw)
        enough = 8 + contract.backend.startup_seconds
        model = await c.start_kernel(spec, env={"KERNEL_LAUNCH_TIMEOUT": f"{enough:g}"})
        ws = await c.connect(model["id"])
        try:
            await execute_ok(ws, "1 + 1")
        finally:
            ws.close()
        await c.shutdown_kernel(model["id"])


async def test_the_kernelspecs_launch_timeout_ends_a_slow_launch_and_leaves_nothing(
    contract: Contract,
) -> None:
    spec = slow_spec(contract)
    kid = str(uuid.uuid4())
    async with temp_gateway(**contract.config()) as gw:
        assert gw.store is not None
        c = client_for(gw)
        status, body = await c.request(
            "POST", "/api/kernels", {"name": spec, "env": {"KERNEL_ID": kid}}
        )
        assert status == 504, body
        assert body["reason"] == "Kernel Launch Timeout", body
        assert "launch_timeout" in body["message"], body
        assert await c.call("GET", "/api/kernels") == []
        assert await gw.store.get(kid) is None
        await wait_resource_gone(contract.backend, kid, {})
