"""What outlives a gateway on every backend: reattaching kernels a stopped gateway left running,
stopping a kernel whose record was lost, persisting each launch checkpoint before the launch
goes on, and stopping, on restart, what a launch cut short by a crash had created."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kernelfleet.client import stdout_of
from kernelfleet.gateway.app import Gateway
from kernelfleet.provisioners.base import KernelfleetProvisioner
from kernelfleet.provisioners.factory import provisioner_class
from tests.conftest import client_for, make_config, temp_gateway
from tests.contract_backends.helpers import (
    SPEC,
    Contract,
    checkpoint_of,
    delayed_argv,
    execute_ok,
    notify_code,
    read_row,
    resource_alive,
    wait_resource_gone,
    within,
)
from tests.gatewayproc import GatewayProcess

pytestmark = pytest.mark.timeout(90)


Children = list["subprocess.Popen[bytes]"]
Sweep = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def children() -> Iterator[Children]:
    """Local kernels that an in-process gateway left running are children of the test process:
    the test reaps them at its end (killing those a failed test left behind), as the parent."""
    found: Children = []
    yield found
    for child in found:
        if child.poll() is None:
            child.kill()
            child.wait(10)


async def stop_leaving_kernels(gw: Gateway, children: Children) -> None:
    """Stop *gw* in leave mode; its kernels' child processes go to *children*."""
    for record in gw.registry.records.values():
        prov = record.manager.provisioner if record.manager is not None else None
        process = getattr(prov, "process", None)
        if isinstance(process, subprocess.Popen):
            children.append(process)
    await gw.stop(mode="leave")


async def test_a_gateway_on_the_same_data_dir_reattaches_a_kernel_left_running(
    contract: Contract, children: Children, sweep: Sweep
) -> None:
    backend = contract.backend
    config = contract.config()
    first = Gateway(config=make_config(**config))
    await first.start()
    try:
        c = client_for(first)
        kid = (await c.start_kernel(SPEC))["id"]
        sweep.append((kid, contract.kernelspec(SPEC)))
        cp = await checkpoint_of(first.registry.records[kid])
        ws = await c.connect(kid)
        try:
            await execute_ok(ws, "contract_state = 6 * 7")
        finally:
            ws.close()
    finally:
        await stop_leaving_kernels(first, children)
    assert await resource_alive(backend, kid, cp), "the left kernel must keep running"

    async with temp_gateway(**config) as second:
        c = client_for(second)
        assert [k["id"] for k in await c.call("GET", "/api/kernels")] == [kid]
        ws = await c.connect(kid)
        try:
            _, iopub = await execute_ok(ws, "print(contract_state)")
        finally:
            ws.close()
        assert stdout_of(iopub) == "42\n"  # the same process: its state is there
        await c.shutdown_kernel(kid)
        await wait_resource_gone(backend, kid, cp)


async def test_stop_orphans_stops_a_kernel_whose_record_was_lost(
    contract: Contract, children: Children, sweep: Sweep
) -> None:
    backend = contract.backend
    # A gateway stopped in leave mode forgets the kernel; its stored row then counts as lost.
    gw = Gateway(config=make_config(**contract.config()))
    await gw.start()
    try:
        c = client_for(gw)
        kid = (await c.start_kernel(SPEC))["id"]
        sweep.append((kid, contract.kernelspec(SPEC)))
        cp = await checkpoint_of(gw.registry.records[kid])
        spec = dict(gw.registry.records[kid].spec)
    finally:
        await stop_leaving_kernels(gw, children)
    assert await resource_alive(backend, kid, cp)

    klass = provisioner_class(spec)
    assert klass is not None and issubclass(klass, KernelfleetProvisioner), klass
    stopped = await klass.stop_orphans(kid, spec)
    assert stopped >= 1
    await wait_resource_gone(backend, kid, cp)


async def test_each_launch_checkpoint_is_stored_before_the_kernel_runs(
    contract: Contract,
) -> None:
    backend = contract.backend
    spec = contract.write_spec(
        "contract_slow", argv=delayed_argv(3, python=contract.backend.python)
    )
    kid = str(uuid.uuid4())
    async with temp_gateway(**contract.config()) as gw:
        store, box = gw.store, gw.registry.persist.box
        assert store is not None and box is not None
        c = client_for(gw)
        post = asyncio.create_task(c.start_kernel(spec, env={"KERNEL_ID": kid}))
        seen: list[tuple[str, dict[str, object], str | None]] = []
        async with within("the launch"):
            while True:
                done = post.done()
                row = await store.get(kid)
                if row is not None and (not seen or seen[-1][0] != row.state):
                    info = row.unseal(box).get("provisioner_info") or {}
                    seen.append((row.state, info, row.host))
                if done:
                    break
                await asyncio.sleep(0.02)
        await post
        states = [state for state, _, _ in seen]
        assert "launching" in states, states
        assert states[-1] == "running", states
        assert states.index("launching") < states.index("running"), states
        _, info, host = seen[states.index("launching")]
        assert info, "a launching row names what the launch created"
        if backend.remote and backend.host_in_first_checkpoint:
            assert info.get("host") in backend.hosts, info
            assert host == info["host"]
        await c.shutdown_kernel(kid)


async def test_a_gateway_killed_mid_launch_has_the_next_one_stop_what_it_started(
    contract: Contract, sweep: Sweep
) -> None:
    backend = contract.backend
    kid = str(uuid.uuid4())
    with socket.socket() as listener:
        listener.bind((backend.notify_address, 0))
        listener.listen()
        port = listener.getsockname()[1]
        before = notify_code(backend.notify_address, port, backend.python)
        spec = contract.write_spec("contract_notify", argv=delayed_argv(30, before, backend.python))
        sweep.append((kid, contract.kernelspec(spec)))
        env = contract.process_env()
        first = GatewayProcess(env)
        try:
            post = asyncio.create_task(
                first.client.request(
                    "POST", "/api/kernels", {"name": spec, "env": {"KERNEL_ID": kid}}
                )
            )
            listener.setblocking(False)
            async with within("the kernel command's notification", 40):
                conn, _ = await asyncio.get_running_loop().sock_accept(listener)
            conn.close()
        finally:
            first.kill()
        await post
    row, payload = await asyncio.to_thread(read_row, contract.data_dir, contract.key_file, kid)
    assert row.state == "launching", (row.state, first.output())
    info = payload.get("provisioner_info") or {}
    if backend.remote and backend.host_in_first_checkpoint:
        assert info.get("host") in backend.hosts and row.host == info["host"], (row, info)

    second = GatewayProcess(env)
    try:
        assert await second.client.call("GET", "/api/kernels") == [], second.output()
        assert "1 unfinished launches stopped" in second.output(), second.output()
        await wait_resource_gone(backend, kid, info)
    finally:
        assert second.stop() == 0, second.output()
