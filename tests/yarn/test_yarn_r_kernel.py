"""An R kernel (IRkernel, without SparkR) in YARN cluster mode, as `spec install yarn
--language r` makes it: the launcher holds the SparkContext YARN's AM waits for."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from kernelfleet.client import stdout_of
from tests.conftest import client_for, temp_gateway
from tests.contract_backends.helpers import eventually, execute_ok
from tests.yarn.cluster import YarnCluster
from tests.yarn.kernels import gateway_config, live_apps, write_yarn_spec

pytestmark = [pytest.mark.yarn, pytest.mark.timeout(300)]


async def test_an_r_kernel_runs_in_a_yarn_container_and_leaves_nothing(
    yarn_cluster: YarnCluster, yarn_env: Path, tmp_path: Path
) -> None:
    argv = ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]
    write_yarn_spec(yarn_env, "yr", yarn_cluster, spark=False, argv=argv, python=sys.executable)
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel("yr"))["id"]
        ws = await c.connect(kid)
        try:
            _, iopub = await execute_ok(ws, 'cat(6 * 7, Sys.info()[["nodename"]])')
        finally:
            ws.close()
        answer, host = stdout_of(iopub).split()
        assert answer == "42" and host in {h.name for h in yarn_cluster.hosts}, stdout_of(iopub)
        await c.shutdown_kernel(kid)
        await eventually(
            lambda: asyncio.to_thread(live_apps, yarn_cluster, kid),
            lambda apps: not apps,
            "no application of the R kernel left",
            30,
        )
