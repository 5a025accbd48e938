"""Kernels outlive the gateway: SIGKILL, SIGTERM in leave mode, and a crash mid-launch."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from kernelfleet.client import stdout_of
from tests.conftest import add_kernelspec
from tests.gatewayproc import GatewayProcess, kernel_pids

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def gw_env(kernelspec_dir: Path, tmp_path: Path) -> dict[str, str]:
    return {
        "JUPYTER_PATH": str(kernelspec_dir),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "KF_DATA_DIR": str(tmp_path / "gwdata"),
        "KF_CONFIG_DIR": str(tmp_path / "cfg"),
        "KF_SECRET_KEY_FILE": str(tmp_path / "keys" / "store.key"),
    }


async def _start_with_state(gw: GatewayProcess, n: int) -> dict[str, int]:
    pids = {}
    for i in range(n):
        model = await gw.client.start_kernel()
        ws = await gw.client.connect(model["id"], session_id=f"s{i}")
        await ws.execute(f"value = {i} * 7")
        ws.close()
        (pid,) = kernel_pids(model["id"])
        pids[model["id"]] = pid
    return pids


async def _check_state(gw: GatewayProcess, pids: dict[str, int]) -> None:
    listed = {k["id"] for k in await gw.client.call("GET", "/api/kernels")}
    assert listed == set(pids), gw.output()
    for i, (kid, pid) in enumerate(pids.items()):
        assert kernel_pids(kid) == [pid], "the kernel must not have been started twice"
        ws = await gw.client.connect(kid, session_id=f"s{i}")
        _, iopub = await ws.execute("print(value)")
        assert stdout_of(iopub).strip() == str(i * 7)
        ws.close()


async def test_kernels_survive_a_sigkilled_gateway(gw_env: dict[str, str]) -> None:
    first = GatewayProcess(gw_env)
    try:
        pids = await _start_with_state(first, 3)
    finally:
        first.kill()
    second = GatewayProcess(gw_env)
    try:
        await _check_state(second, pids)
        assert "3 reattached" in second.output()
    finally:
        code = second.stop()
        assert code == 0, second.output()
    # stop_mode=auto shuts local kernels down at the end
    await asyncio.sleep(0.5)
    assert all(not kernel_pids(kid) for kid in pids)


async def test_leave_mode_keeps_kernels_across_a_clean_restart(gw_env: dict[str, str]) -> None:
    first = GatewayProcess(gw_env, "--leave-kernels-running")
    try:
        pids = await _start_with_state(first, 2)
    finally:
        assert first.stop() == 0
    assert all(kernel_pids(kid) for kid in pids)
    second = GatewayProcess(gw_env)
    try:
        await _check_state(second, pids)
    finally:
        # SIGTERM right after the checks, maybe before start-up finished: still graceful
        assert second.stop() == 0, second.output()
    await asyncio.sleep(0.5)
    assert all(not kernel_pids(kid) for kid in pids)


async def test_a_kernel_that_died_while_the_gateway_was_down_is_cleaned_up(
    gw_env: dict[str, str],
) -> None:
    first = GatewayProcess(gw_env)
    try:
        pids = await _start_with_state(first, 1)
    finally:
        first.kill()
    ((_kid, pid),) = pids.items()
    os.kill(pid, signal.SIGKILL)
    second = GatewayProcess(gw_env)
    try:
        assert await second.client.call("GET", "/api/kernels") == [], second.output()
        assert "1 gone" in second.output(), second.output()
    finally:
        second.stop()


async def test_a_crash_between_launch_and_checkpoint_leaves_no_orphan(
    gw_env: dict[str, str], kernelspec_dir: Path
) -> None:
    # The kernel command kills its parent (the gateway) right after starting: the gateway dies
    # after the launch began and before it recorded the launch's result.
    add_kernelspec(
        kernelspec_dir,
        "killer",
        {
            "argv": [
                "/bin/sh",
                "-c",
                f'kill -9 $PPID; exec "{sys.executable}" -m ipykernel_launcher -f "$0"',
                "{connection_file}",
            ]
        },
    )
    first = GatewayProcess(gw_env)
    status, _ = await first.client.request("POST", "/api/kernels", {"name": "killer"})
    first.kill()
    assert status == 599 or status >= 500
    db = sqlite3.connect(Path(gw_env["KF_DATA_DIR"]) / "kernels.sqlite")
    ((kid, state),) = db.execute("SELECT id, state FROM kf_kernels").fetchall()
    db.close()
    # Killed before the launch's checkpoint (found by its id) or right after it (its pid).
    assert state in {"starting", "launching"}
    await asyncio.sleep(1)
    assert kernel_pids(kid), "the launch should have left a kernel behind"
    second = GatewayProcess(gw_env)
    try:
        await asyncio.sleep(0.5)
        assert not kernel_pids(kid)
        assert await second.client.call("GET", "/api/kernels") == []
        assert "1 unfinished launches stopped" in second.output()
    finally:
        second.stop()


async def test_secrets_are_encrypted_at_rest(gw_env: dict[str, str]) -> None:
    gw = GatewayProcess(gw_env)
    try:
        model = await gw.client.start_kernel(env={"KERNEL_SECRET_THING": "hunter2"})
        raw = (Path(gw_env["KF_DATA_DIR"]) / "kernels.sqlite").read_bytes()
        wal = Path(gw_env["KF_DATA_DIR"]) / "kernels.sqlite-wal"
        if wal.exists():
            raw += wal.read_bytes()
        assert model["id"].encode() in raw
        assert b"hunter2" not in raw and b"hmac-sha256" not in raw
        assert oct(Path(gw_env["KF_SECRET_KEY_FILE"]).stat().st_mode & 0o777) == "0o600"
    finally:
        gw.stop()


async def test_warm_kernels_left_running_are_stopped_when_the_pool_is_gone(
    gw_env: dict[str, str],
) -> None:
    first = GatewayProcess({**gw_env, "KF_POOL_SIZES": '{"python3": 2}'}, "--leave-kernels-running")
    try:
        async with asyncio.timeout(90):  # the pool fills in the background
            while True:
                pooled = await first.client.call("GET", "/api/kernels")
                if len([k for k in pooled if k["execution_state"] == "idle"]) == 2:
                    break
                await asyncio.sleep(0.2)
    finally:
        assert first.stop() == 0
    warm = {k["id"] for k in pooled}
    assert all(kernel_pids(kid) for kid in warm)
    second = GatewayProcess(gw_env)  # no pool configured any more
    try:
        model = await second.client.start_kernel()
        assert model["id"] not in warm  # never a leftover warm kernel
        assert [k["id"] for k in await second.client.call("GET", "/api/kernels")] == [model["id"]]
        assert all(not kernel_pids(kid) for kid in warm), second.output()
    finally:
        assert second.stop() == 0, second.output()
