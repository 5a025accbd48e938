"""An R (IRkernel) kernelspec from `spec install ssh --language r`, run on a testbed host
through the gateway and the SSH provisioner: code runs on the host, interrupt stops a running
cell, shutdown leaves no R process on the host, ``readline()`` asks the client over stdin."""

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


async def test_r_readline_asks_the_client_and_the_answer_reaches_the_cell(
    r_spec: tuple[str, Any],
) -> None:
    """IRkernel answers R's ``readline()`` with an ``input_request`` on stdin (as the Python
    kernels of tests/conformance/test_stdin.py do). Unlike ipykernel, IRkernel (1.3.2) asks even
    when the request says ``allow_stdin: false``: a client that does not answer then leaves the
    cell waiting (ipykernel raises StdinNotImplementedError instead)."""
    name, _host = r_spec
    async with temp_gateway() as gw:
        client = client_for(gw)
        kid = (await client.start_kernel(name))["id"]
        ws = await client.connect(kid)
        try:
            # JupyterLab's connection handshake first (see tests/conformance/test_stdin.py)
            await asyncio.wait_for(ws.request("kernel_info_request", {}), 60)
            asked: list[dict[str, Any]] = []

            def answer(content: dict[str, Any]) -> str:
                asked.append(content)
                return f"Ada{len(asked)}"

            reply, iopub = await asyncio.wait_for(
                ws.execute('name <- readline("name? ")\ncat("hello", name)', on_input=answer), 60
            )
            assert asked == [{"prompt": "name? ", "password": False}]
            assert reply["status"] == "ok", reply
            assert stdout_of(iopub) == "hello Ada1"

            msg_id = await ws.send(ws.execute_request('cat("[", readline("no? "), "]")'))
            request = await asyncio.wait_for(
                ws.wait_for(lambda m: m["msg_type"] == "input_request"), 60
            )
            assert request["parent_header"]["msg_id"] == msg_id
            assert request["content"] == {"prompt": "no? ", "password": False}
            await ws.answer(request, "anyway")
            reply, iopub = await asyncio.wait_for(ws.collect(msg_id), 60)
            assert reply["status"] == "ok" and stdout_of(iopub) == "[ anyway ]"
        finally:
            ws.close()
            await client.shutdown_kernel(kid)
