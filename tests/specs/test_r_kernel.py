"""An R (IRkernel) kernelspec from `spec install ssh --language r`, run on a testbed host
through the gateway and the SSH provisioner: code runs on the host, interrupt stops a running
cell, shutdown leaves no R process on the host."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.cli.hosts import CheckApp
from kernelfleet.client import stdout_of
from kernelfleet.specs.builders import SpecOptions
from kernelfleet.specs.installer import install
from tests.conftest import client_for, temp_gateway
from tests.specs.fleet import gateway_env_for

pytestmark = [
    pytest.mark.ssh,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        shutil.which("R") is None,
        reason="R is not installed (apt-get install r-base-core r-cran-irkernel; make test does)",
    ),
]


@pytest.fixture
async def r_spec(
    fleet_bed: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Any]]:
    host = fleet_bed.host(1)
    # not under /tmp: the same path exists on the hosts (the sync tests cover copying)
    root = Path(fleet_bed.dir) / "r-specs" / tmp_path.name
    install(
        SpecOptions(kernel_name="kf_r", language="r", remote_hosts=(host.ip,)), root / "kernels"
    )
    async with gateway_env_for(fleet_bed, root, tmp_path, monkeypatch):
        yield "kf_r", host
    shutil.rmtree(root, ignore_errors=True)


async def test_r_kernel_runs_on_the_host_interrupts_and_shuts_down(
    r_spec: tuple[str, Any], fleet_bed: Any
) -> None:
    name, host = r_spec
    # hosts check sees R and IRkernel on the host
    out = io.StringIO()
    app = CheckApp()
    with contextlib.redirect_stdout(out):
        app.initialize([f"--spec={name}", "--json"])
        await asyncio.to_thread(app.start)
    (row,) = json.loads(out.getvalue())["hosts"]
    checks = {c["name"]: c for c in row["checks"]}
    assert row["ready"], row
    assert checks["interpreter"]["detail"].startswith("R version")
    assert checks["kernel"]["detail"].startswith("IRkernel ")

    async with temp_gateway() as gw:
        client = client_for(gw)
        kernel = await client.start_kernel(name)
        kid = kernel["id"]
        ws = await client.connect(kid)
        try:
            reply, iopub = await ws.execute(
                'cat(Sys.info()[["nodename"]], Sys.getenv("KERNEL_ID"))'
            )
            assert reply["status"] == "ok"
            assert stdout_of(iopub).split() == [host.name, kid]
            assert fleet_bed.processes_matching(host, "IRkernel::main()")

            started = time.monotonic()
            running = asyncio.ensure_future(ws.execute("Sys.sleep(60)"))
            await asyncio.sleep(1.0)  # the cell is running on the host
            await client.call("POST", f"/api/kernels/{kid}/interrupt", expect=204)
            reply, _ = await asyncio.wait_for(running, 20)
            assert reply["status"] in ("error", "abort")
            assert time.monotonic() - started < 15

            reply, iopub = await ws.execute("cat(6 * 7)")
            assert reply["status"] == "ok" and stdout_of(iopub) == "42"
        finally:
            ws.close()
            await client.shutdown_kernel(kid)
    deadline = time.monotonic() + 10
    while fleet_bed.processes_matching(host, "IRkernel::main()") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not fleet_bed.processes_matching(host, "IRkernel::main()")
