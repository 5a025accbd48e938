"""The gateway refuses to start an Enterprise Gateway or Gateway Provisioners kernelspec, with
the fix (``kernelfleet spec migrate NAME``) in the error, and leaves no kernel behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import add_kernelspec, client_for, temp_gateway

EG_SPEC: dict[str, Any] = {
    "argv": [
        "python",
        "/opt/eg/kernels/python_distributed/scripts/launch_ipykernel.py",
        "--RemoteProcessProxy.kernel-id",
        "{kernel_id}",
        "--RemoteProcessProxy.response-address",
        "{response_address}",
        "--RemoteProcessProxy.public-key",
        "{public_key}",
    ],
    "metadata": {
        "process_proxy": {
            "class_name": "enterprise_gateway.services.processproxies.distributed."
            "DistributedProcessProxy",
            "config": {"remote_hosts": "h1,h2"},
        }
    },
}
GP_SPEC: dict[str, Any] = {
    "argv": [
        "python",
        "/opt/gp/kernels/ssh_python/scripts/launch_ipykernel.py",
        "--kernel-id",
        "{kernel_id}",
        "--response-address",
        "{response_address}",
        "--public-key",
        "{public_key}",
    ],
    "metadata": {
        "kernel_provisioner": {
            "provisioner_name": "distributed-provisioner",
            "config": {"remote_hosts": ["h1"]},
        }
    },
}


@pytest.mark.parametrize(
    ("name", "spec", "origin"),
    [
        ("python_distributed", EG_SPEC, "an Enterprise Gateway"),
        ("ssh_python", GP_SPEC, "a Gateway Provisioners"),
    ],
)
async def test_starting_an_unmigrated_spec_fails_with_the_migrate_command(
    kernelspec_dir: Path, name: str, spec: dict[str, Any], origin: str
) -> None:
    add_kernelspec(kernelspec_dir, name, spec)
    async with temp_gateway() as gw:
        client = client_for(gw)
        status, body = await client.request("POST", "/api/kernels", {"name": name})
        assert status == 500, body
        assert body["reason"] == "Kernelspec Not Migrated"
        assert body["message"].startswith(
            f"Kernelspec '{name}' needs 'kernelfleet spec migrate {name}'"
        )
        assert f"it is {origin} spec" in body["message"]
        assert await client.call("GET", "/api/kernels") == []
        # a spec the gateway can run still starts next to it
        model = await client.start_kernel()
        await client.shutdown_kernel(model["id"])
