"""The kernel launcher on this machine (no root needed): a real ipykernel reports through the
listener and answers a client; failures are reported at once; nothing is left behind."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kernelfleet.errors import LaunchFailed
from kernelfleet.transport.listener import Registration, ResponseListener
from tests.listener.launch import (
    KERNEL_ENV,
    kernel_info_and_shutdown,
    launcher_argv,
    local_processes_with,
    wait_exit,
)


@pytest.fixture
async def listener() -> AsyncIterator[ResponseListener]:
    lst = ResponseListener(ip="127.0.0.1", port=0)
    await lst.start()
    try:
        yield lst
    finally:
        await lst.close()


async def start(reg: Registration, *argv: str, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, env={**KERNEL_ENV, "HOME": os.environ.get("HOME", "/tmp"), **reg.env, **env}
    )


async def test_a_local_kernel_reports_through_the_listener_and_answers(
    listener: ResponseListener, tmp_path: Path
) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    with await listener.expect("local-1", deadline) as reg:
        proc = await start(reg, *launcher_argv("--runtime-dir", str(tmp_path), "--curve"))
        try:
            info = await reg.wait()
            assert info["ip"] == "127.0.0.1" and reg.peer == "127.0.0.1"
            assert info.get("curve_publickey") and len(info["key"]) == 64
            conn_file = next(tmp_path.glob("kernelfleet-*/kernel-local-1.json"))
            assert conn_file.stat().st_mode & 0o777 == 0o600
            assert local_processes_with(str(conn_file))  # the kernel runs
            content = await kernel_info_and_shutdown(info)
            assert content["status"] == "ok" and content["implementation"] == "ipython"
            assert await wait_exit(proc) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert not list(tmp_path.iterdir())  # connection file and its directory removed
    assert not local_processes_with(str(tmp_path))


async def test_a_kernel_that_exits_at_start_fails_the_launch_at_once(
    listener: ResponseListener, tmp_path: Path
) -> None:
    argv = launcher_argv("--runtime-dir", str(tmp_path), kernel_argv=["sh", "-c", "exit 7"])
    with await listener.expect("local-2", asyncio.get_running_loop().time() + 60) as reg:
        proc = await start(reg, *argv)
        with pytest.raises(LaunchFailed, match="exited with status 7"):
            await asyncio.wait_for(reg.wait(), 20)
        assert await wait_exit(proc) == 4
    assert not list(tmp_path.iterdir())


async def test_a_kernel_that_never_listens_is_stopped_and_reported(
    listener: ResponseListener, tmp_path: Path
) -> None:
    marker = f"sleep 3{os.getpid() % 1000}"
    argv = launcher_argv(
        "--runtime-dir", str(tmp_path), "--ready-timeout", "1",
        kernel_argv=["sh", "-c", f"exec {marker}"],
    )  # fmt: skip
    with await listener.expect("local-3") as reg:
        proc = await start(reg, *argv)
        with pytest.raises(LaunchFailed, match="did not listen"):
            await asyncio.wait_for(reg.wait(), 20)
        assert await wait_exit(proc) == 4
    assert not local_processes_with(marker)


async def test_a_refused_response_stops_the_kernel(
    listener: ResponseListener, tmp_path: Path
) -> None:
    """A launcher given a key the listener does not know is refused (auth_failed): it stops
    the kernel and exits 3, and the real registration is untouched."""
    with await listener.expect("local-4") as reg:
        forged = "A" * 43 + "="
        proc = await start(
            reg, *launcher_argv("--runtime-dir", str(tmp_path)), KF_RESPONSE_KEY=forged
        )
        assert await wait_exit(proc) == 3
        assert not reg.done
    assert not local_processes_with(str(tmp_path))


async def test_sigterm_to_the_launcher_reaches_the_kernel(
    listener: ResponseListener, tmp_path: Path
) -> None:
    with await listener.expect("local-5") as reg:
        proc = await start(reg, *launcher_argv("--runtime-dir", str(tmp_path)))
        info = await asyncio.wait_for(reg.wait(), 60)
        proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc) in (0, 128 + signal.SIGTERM)
        with pytest.raises(ProcessLookupError):
            os.kill(info["pid"], 0)
    assert not list(tmp_path.iterdir())
