"""nbclient runs a notebook on a YARN kernel whose start takes longer than jupyter_server's
default 40 s, through our gateway, with the notebook-side settings the README names raised."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_server.gateway.gateway_client import GatewayClient as JupyterGatewayClient
from jupyter_server.gateway.managers import GatewayKernelManager
from nbclient import NotebookClient

from tests.gateway.test_nbclient import gateway_in_thread, jupyter_client_env  # noqa: F401
from tests.yarn.cluster import YarnCluster
from tests.yarn.kernels import gateway_config, live_apps, write_yarn_spec

pytestmark = [pytest.mark.yarn, pytest.mark.timeout(300)]

#: Seconds the kernel command waits before starting ipykernel: with YARN's own 10-20 s, the
#: start takes longer than the 40 s a notebook server waits by default.
DELAY = 30


async def test_nbclient_runs_a_notebook_on_a_slow_starting_yarn_kernel_with_raised_timeouts(
    yarn_cluster: YarnCluster,
    yarn_env: Path,
    tmp_path: Path,
    jupyter_client_env: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = [
        "/bin/sh",
        "-c",
        f'sleep {DELAY}; exec "{sys.executable}" -m ipykernel_launcher -f "$0"',
        "{connection_file}",
    ]
    write_yarn_spec(yarn_env, "yslow", yarn_cluster, spark=False, argv=argv, python=sys.executable)
    # what the README tells notebook users: request and connect timeouts of 200 s; the gateway
    # client then sends KERNEL_LAUNCH_TIMEOUT = 200 - launch_timeout_pad
    monkeypatch.setenv("KERNEL_LAUNCH_TIMEOUT", "198")
    monkeypatch.setattr(JupyterGatewayClient, "KERNEL_LAUNCH_TIMEOUT", 198)
    config = gateway_config(tmp_path, Authenticator={"auth_enabled": False})
    config["ResponseListener"] = {"ip": yarn_cluster.ip, "port": 0}
    with gateway_in_thread(**config) as gw:
        JupyterGatewayClient.instance(
            url=gw.url.rstrip("/"), request_timeout=200.0, connect_timeout=200.0
        )
        km = GatewayKernelManager()
        nb = nbformat.v4.new_notebook(
            metadata={
                "kernelspec": {"name": "yslow", "display_name": "slow", "language": "python"}
            },
            cells=[nbformat.v4.new_code_cell("import socket\nprint(6 * 7, socket.gethostname())")],
        )
        client = NotebookClient(nb, km=km, timeout=60, startup_timeout=200, kernel_name="yslow")
        try:
            # jupyter_server's GatewayKernelManager starts "python3" unless told: nbclient passes
            # these keyword arguments on to its start_kernel
            await client.async_execute(kernel_name="yslow")
            kernel_id = km.kernel_id
            assert kernel_id is not None and gw.registry.records[kernel_id].name == "yslow"
        finally:
            if client.kc is not None:
                client.kc.stop_channels()
            if km.has_kernel:
                await km.shutdown_kernel(now=True)
        (out,) = nb.cells[0].outputs
        answer, host = out.text.split()
        assert answer == "42" and host in {h.name for h in yarn_cluster.hosts}, out.text
    assert kernel_id is not None
    assert not live_apps(yarn_cluster, kernel_id)
