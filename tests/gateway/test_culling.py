"""Idle kernels are culled; busy or connected ones only when the settings say so."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import client_for, temp_gateway


async def test_idle_kernels_are_culled_but_busy_ones_are_kept(kernelspec_dir: Path) -> None:
    cfg = {"Culler": {"cull_idle_timeout": 1, "cull_interval": 1}}
    async with temp_gateway(**cfg) as gw:
        c = client_for(gw)
        idle = await c.start_kernel()
        busy = await c.start_kernel()
        ws = await c.connect(busy["id"])
        await ws.send(ws.make("execute_request", {"code": "import time; time.sleep(30)"}))
        ws.close()  # disconnected but busy: not culled while cull_busy is off
        async with asyncio.timeout(20):
            while idle["id"] in gw.registry.records:
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)
        assert busy["id"] in gw.registry.records
        assert gw.registry.records[busy["id"]].execution_state == "busy"


async def test_connected_kernels_are_kept_unless_cull_connected(kernelspec_dir: Path) -> None:
    cfg = {"Culler": {"cull_idle_timeout": 1, "cull_interval": 1}}
    async with temp_gateway(**cfg) as gw:
        c = client_for(gw)
        model = await c.start_kernel()
        ws = await c.connect(model["id"])
        await asyncio.sleep(3)
        assert model["id"] in gw.registry.records
        assert gw.registry.records[model["id"]].connections == 1
        ws.close()
        async with asyncio.timeout(20):
            while model["id"] in gw.registry.records:
                await asyncio.sleep(0.2)
