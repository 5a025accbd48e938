"""Issue 5 on real hosts: 20 remote kernels survive a killed gateway, and a launch cut short by
a crash leaves no orphan. The gateway runs as a real process; kernels on the netns hosts."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import sys
from pathlib import Path

import pytest
from ssh_helpers import Specs
from testbed import Testbed

from kernelfleet.client import GatewayClient, stdout_of
from tests.gatewayproc import GatewayProcess

pytestmark = pytest.mark.timeout(300)

N_KERNELS = 20


def _env(tmp_path: Path, ssh_env: dict[str, str]) -> dict[str, str]:
    return {
        **ssh_env,
        "JUPYTER_PATH": str(tmp_path),  # Specs writes <tmp_path>/kernels/<name>
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "KF_DATA_DIR": str(tmp_path / "gwdata"),
        "KF_CONFIG_DIR": str(tmp_path / "cfg"),
        "KF_SECRET_KEY_FILE": str(tmp_path / "keys" / "store.key"),
        "KF_IP": "127.0.0.1",
    }


async def _start_all(client: GatewayClient, n: int) -> dict[str, list]:  # type: ignore[type-arg]
    """Start *n* remote kernels (five at a time) and give each a variable; returns
    kernel id -> [index, hostname, pid]."""
    state: dict[str, list] = {}  # type: ignore[type-arg]
    sem = asyncio.Semaphore(5)

    async def one(i: int) -> None:
        async with sem:
            model = await client.start_kernel("remote")
            ws = await client.connect(model["id"], session_id=f"sess-{i}")
            _, iopub = await ws.execute(
                f"import os, socket, json; value = {i} * 11; "
                "print(json.dumps([socket.gethostname(), os.getpid()]))"
            )
            host, pid = json.loads(stdout_of(iopub))
            state[model["id"]] = [i, host, pid]
            ws.close()

    await asyncio.gather(*(one(i) for i in range(n)))
    return state


async def _check_all(client: GatewayClient, state: dict[str, list]) -> None:  # type: ignore[type-arg]
    listed = {k["id"] for k in await client.call("GET", "/api/kernels")}
    assert listed == set(state)

    async def one(kid: str) -> None:
        i, host, pid = state[kid]
        ws = await client.connect(kid, session_id=f"sess-{i}")
        _, iopub = await ws.execute(
            "import os, socket, json; print(json.dumps([value, socket.gethostname(), os.getpid()]))"
        )
        assert json.loads(stdout_of(iopub)) == [i * 11, host, pid]  # same process, state kept
        ws.close()

    await asyncio.gather(*(one(k) for k in state))


def _kernel_processes(testbed: Testbed, kernel_id: str) -> int:
    return sum(len(testbed.processes_matching(h, kernel_id)) for h in testbed.hosts)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigkill", "sigterm-leave"])
async def test_twenty_remote_kernels_survive_the_gateway(
    testbed: Testbed, specs: Specs, ssh_env: dict[str, str], tmp_path: Path, how: str
) -> None:
    specs.write("remote")
    env = _env(tmp_path, ssh_env)
    args = ["--leave-kernels-running"] if how == "sigterm-leave" else []
    first = GatewayProcess(env, *args)
    try:
        state = await _start_all(first.client, N_KERNELS)
        assert {host for _, host, _ in state.values()} == {h.name for h in testbed.hosts}
    finally:
        if how == "sigkill":
            first.kill()
        else:
            assert first.stop() == 0, first.output()
    second = GatewayProcess(env)
    try:
        await _check_all(second.client, state)
        for kid in state:
            assert _kernel_processes(testbed, kid) == 1, "a kernel was started twice"
        assert f"{N_KERNELS} reattached" in second.output()
        await asyncio.gather(*(second.client.shutdown_kernel(k) for k in state))
        for kid in state:
            assert _kernel_processes(testbed, kid) == 0
    finally:
        second.stop()


async def test_a_crash_right_after_the_remote_launch_leaves_no_orphan(
    testbed: Testbed, specs: Specs, ssh_env: dict[str, str], tmp_path: Path
) -> None:
    # The remote kernel command tells a listener in the test the moment it runs; the test then
    # SIGKILLs the gateway: the host started the kernel, the gateway never recorded it.
    with socket.socket() as listener:
        listener.bind(("10.89.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        notify = f"import socket; socket.create_connection(('10.89.0.1', {port})).close()"
        specs.write(
            "remote-notify",
            argv=[
                "/bin/sh",
                "-c",
                f'"{sys.executable}" -c "{notify}"; exec "{sys.executable}" -m ipykernel_launcher '
                '-f "$0"',
                "{connection_file}",
            ],
        )
        env = _env(tmp_path, ssh_env)
        first = GatewayProcess(env)
        try:
            post = asyncio.create_task(
                first.client.request("POST", "/api/kernels", {"name": "remote-notify"})
            )
            loop = asyncio.get_running_loop()
            listener.setblocking(False)
            conn, _ = await asyncio.wait_for(loop.sock_accept(listener), 60)
            conn.close()
        finally:
            first.kill()
        await post
    db = sqlite3.connect(tmp_path / "gwdata" / "kernels.sqlite")
    ((kid, state),) = db.execute("SELECT id, state FROM kf_kernels").fetchall()
    db.close()
    assert state in {"starting", "launching"}
    # Either the host's agent already dropped the launch whose requester vanished, or a kernel
    # process is left for the next gateway to find by id: both must end with nothing running.
    second = GatewayProcess(env)
    try:
        assert await second.client.call("GET", "/api/kernels") == []
        assert "1 unfinished launches stopped" in second.output(), second.output()
        for _ in range(100):
            if not _kernel_processes(testbed, kid):
                break
            await asyncio.sleep(0.1)
        assert not _kernel_processes(testbed, kid), "an orphan kernel survived"
    finally:
        second.stop()
