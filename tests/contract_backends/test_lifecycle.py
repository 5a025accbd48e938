"""The life of one kernel on every backend, through a real in-process gateway: launch, liveness,
interrupts, restart in place (also with its place cut off), shutdown, kill and logs."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pytest

from kernelfleet.client import result_of, stdout_of
from kernelfleet.provisioners.base import Backend, KernelfleetProvisioner, backends
from tests.conftest import client_for, temp_gateway
from tests.contract_backends.helpers import (
    MESSAGE_SPEC,
    SLEEPER,
    SPEC,
    Contract,
    checkpoint_of,
    eventually,
    execute_ok,
    provisioner,
    resource_alive,
    wait_resource_gone,
    within,
)

pytestmark = pytest.mark.timeout(90)

#: Automatic restarts off: a killed kernel stays dead, so the test sees what the kill did.
NO_RESTARTS = {"restart_dead_kernels": False}


async def test_a_kernel_starts_answers_and_its_provisioner_keeps_the_contract(
    contract: Contract,
) -> None:
    backend = contract.backend
    async with temp_gateway(**contract.config()) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel(SPEC))["id"]
        record = gw.registry.records[kid]
        prov = record.manager.provisioner if record.manager is not None else None
        assert isinstance(prov, KernelfleetProvisioner), type(prov)
        assert isinstance(prov.backend, Backend)
        assert prov.backend is prov.backend  # one long-lived backend, not one per access
        assert any(b is prov.backend for b in backends())
        if backend.remote:
            assert record.host in backend.hosts, record.host
        else:
            assert record.host is None
        ws = await c.connect(kid)
        try:
            _, iopub = await execute_ok(ws, "6 * 7")
            assert result_of(iopub) == "42"
        finally:
            ws.close()
        assert await resource_alive(backend, kid, await checkpoint_of(record))
        await c.shutdown_kernel(kid)


async def test_poll_is_none_while_running_and_the_batched_check_reports_a_kill(
    contract: Contract,
) -> None:
    backend = contract.backend
    async with temp_gateway(**contract.config(KernelMonitor=NO_RESTARTS)) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel(SPEC))["id"]
        record = gw.registry.records[kid]
        prov = provisioner(record)
        assert await prov.poll() is None
        assert await prov.backend.check([prov]) == {kid: None}

        await backend.kill(record)

        async def check() -> dict[str, int | None]:
            return await prov.backend.check([prov])

        codes = await eventually(check, lambda v: v.get(kid) is not None, "check saw the exit")
        assert set(codes) == {kid}
        assert await prov.poll() is not None

        # the gateway's monitor noticed too: the kernel is reported dead, with the reason
        async def model() -> Any:
            return (await c.request("GET", f"/api/kernels/{kid}"))[1]

        dead = await eventually(model, lambda m: m["execution_state"] == "dead", "reported dead")
        assert "died" in dead.get("reason", ""), dead


#: An open bug, not a flaky test: in full runs (2 of 2 clean-clone CI runs) and under load, an
#: automatic restart of a pod kernel sometimes stalls (no new pod within 30 s) or its first cell
#: gets no reply; never seen for the other backends. tests/k8s/diagnose.py reports the cluster.
K8S_AUTO_RESTART_BUG = pytest.mark.xfail(
    reason="open bug: an automatic restart of a pod kernel sometimes stalls or loses the first "
    "cell (full runs, loaded machine); provisioners/k8s.py owns the fix",
    strict=False,
)


async def test_a_killed_kernel_is_restarted_in_place_by_the_monitor(
    contract: Contract, request: pytest.FixtureRequest
) -> None:
    backend = contract.backend
    if backend.name == "k8s":
        request.applymarker(K8S_AUTO_RESTART_BUG)
    async with temp_gateway(**contract.config()) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel(SPEC))["id"]
        record = gw.registry.records[kid]
        host_before, before = record.host, await checkpoint_of(record)
        ws = await c.connect(kid)
        try:
            await execute_ok(ws, "contract_state = 1")
        finally:
            ws.close()

        await backend.kill(record)

        async def restarted() -> tuple[int, str]:
            return record.restart_count, record.execution_state

        await eventually(restarted, lambda v: v == (1, "idle"), "automatic restart", 30)
        assert gw.registry.records[kid] is record
        if backend.restart_keeps_place:  # in place: the same host for remote backends
            assert record.host == host_before
        assert await checkpoint_of(record) != before  # a new launch
        ws = await c.connect(kid)
        try:
            async with within("a cell after the restart"):
                reply, _ = await ws.execute("contract_state")
        finally:
            ws.close()
        assert reply.get("ename") == "NameError", reply  # a new process: state is lost
        await c.shutdown_kernel(kid)


@pytest.mark.parametrize("mode", ["signal", "message"])
async def test_a_rest_interrupt_stops_the_running_cell(contract: Contract, mode: str) -> None:
    async with temp_gateway(**contract.config()) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel(SPEC if mode == "signal" else MESSAGE_SPEC))["id"]
        ws = await c.connect(kid)
        try:
            msg_id = await ws.send(ws.execute_request(SLEEPER))
            async with within("the sleeping cell's first output"):
                await ws.wait_for(
                    lambda m: (
                        m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream"
                    )
                )
            await c.call("POST", f"/api/kernels/{kid}/interrupt", {}, expect=204)
            async with within("the interrupted cell's reply"):
                reply, _ = await ws.collect(msg_id)
            assert (reply["status"], reply["ename"]) == ("error", "KeyboardInterrupt"), reply
            _, iopub = await execute_ok(ws, "print('still here')")
            assert stdout_of(iopub) == "still here\n"
        finally:
            ws.close()
        await c.shutdown_kernel(kid)


async def test_a_restart_keeps_id_and_place_and_loses_state(contract: Contract) -> None:
    async with temp_gateway(**contract.config()) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel(SPEC))["id"]
        record = gw.registry.records[kid]
        host_before = record.host
        ws = await c.connect(kid)
        try:
            await execute_ok(ws, "contract_state = 1")
        finally:
            ws.close()
        model = await c.call("POST", f"/api/kernels/{kid}/restart", {})
        assert (model["id"], model["execution_state"]) == (kid, "idle")
        assert gw.registry.records[kid] is record
        if contract.backend.restart_keeps_place:
            assert record.host == host_before
        else:
            assert record.host in contract.backend.hosts, record.host
        ws = await c.connect(kid)
        try:
            async with within("a cell after the restart"):
                reply, _ = await ws.execute("contract_state")
        finally:
            ws.close()
        assert reply.get("ename") == "NameError", reply
        await c.shutdown_kernel(kid)


async def test_a_restart_with_the_place_cut_off_is_a_503_and_works_once_it_is_back(
    contract: Contract,
) -> None:
    backend = contract.backend
    if backend.cut_place is None or backend.restore_place is None:
        pytest.skip(f"the {backend.name} backend has no place to cut off")
    retention = {"dead_kernel_retention": 1.0}
    async with temp_gateway(**contract.config(KernelMonitor=retention)) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel(SPEC))["id"]
        record = gw.registry.records[kid]
        host_before = record.host
        backend.cut_place(record)
        try:
            status, body = await c.request("POST", f"/api/kernels/{kid}/restart", {})
            assert status == 503, body
            assert re.match(r"Host \S+ of kernel .+ is unreachable", body["message"]), body
            if host_before is not None:
                assert body["message"].startswith(f"Host {host_before} "), body
            await asyncio.sleep(2)  # longer than the retention of dead kernels: still listed
            assert kid in {k["id"] for k in await c.call("GET", "/api/kernels")}
        finally:
            backend.restore_place()
        model = await c.call("POST", f"/api/kernels/{kid}/restart", {})
        assert (model["id"], model["execution_state"]) == (kid, "idle")
        assert record.host == host_before
        ws = await c.connect(kid)
        try:
            await execute_ok(ws, "1 + 1")
        finally:
            ws.close()
        await c.shutdown_kernel(kid)
        # nothing of the kernel is left anywhere, the one that ran while cut off included
        await wait_resource_gone(backend, kid, {})


async def test_a_shutdown_stops_the_resource_and_deletes_the_row(contract: Contract) -> None:
    backend = contract.backend
    async with temp_gateway(**contract.config()) as gw:
        assert gw.store is not None
        c = client_for(gw)
        kid = (await c.start_kernel(SPEC))["id"]
        record = gw.registry.records[kid]
        cp = await checkpoint_of(record)
        row = await gw.store.get(kid)
        assert row is not None and row.state == "running", row
        status, body = await c.request("DELETE", f"/api/kernels/{kid}")
        assert status == 204, body
        await wait_resource_gone(backend, kid, cp)
        assert await gw.store.get(kid) is None
        assert (await c.request("GET", f"/api/kernels/{kid}"))[0] == 404


async def test_the_provisioners_kill_stops_the_resource(contract: Contract) -> None:
    backend = contract.backend
    async with temp_gateway(**contract.config(KernelMonitor=NO_RESTARTS)) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel(SPEC))["id"]
        record = gw.registry.records[kid]
        cp = await checkpoint_of(record)
        assert await resource_alive(backend, kid, cp)
        await provisioner(record).kill()
        await wait_resource_gone(backend, kid, cp)


async def test_the_logs_endpoint_shows_what_the_kernel_wrote_to_its_fds(
    contract: Contract,
) -> None:
    marker = uuid.uuid4().hex
    async with temp_gateway(**contract.config()) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel(SPEC))["id"]
        ws = await c.connect(kid)
        try:
            await execute_ok(
                ws,
                f"import os; os.write(2, b'err-{marker}\\n'); os.write(1, b'out-{marker}\\n')",
            )
        finally:
            ws.close()

        async def logs() -> tuple[int, Any]:
            return await c.request("GET", f"/api/kernels/{kid}/logs")

        status, text = await eventually(
            logs,
            lambda r: r[0] != 200 or (f"err-{marker}" in r[1] and f"out-{marker}" in r[1]),
            "both markers in the log",
        )
        assert status == 200, text
        await c.shutdown_kernel(kid)


async def test_the_monitor_checks_all_kernels_of_a_backend_in_one_call(
    contract: Contract, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with temp_gateway(**contract.config()) as gw:
        c = client_for(gw)
        kids = [(await c.start_kernel(SPEC))["id"] for _ in range(2)]
        provs = [provisioner(gw.registry.records[k]) for k in kids]
        backend = provs[0].backend
        assert provs[1].backend is backend
        calls: list[list[str]] = []
        check = backend.check

        async def counting(members: Any) -> dict[str, int | None]:
            calls.append(sorted(str(p.kernel_id) for p in members))
            return await check(members)

        monkeypatch.setattr(backend, "check", counting)

        async def seen() -> int:
            return len(calls)

        await eventually(seen, lambda n: n >= 3, "three monitor ticks")
        assert all(call == sorted(kids) for call in calls), calls
        for kid in kids:
            await c.shutdown_kernel(kid)
