"""Kernel lifecycle on a real host: interrupt, restart on the same host, shutdown, logs,
and a start cancelled half-way."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from ssh_helpers import Specs, execute, kernel_env, running, wait_until
from testbed import Testbed

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("mode", ["signal", "message"])
async def test_interrupt_stops_a_long_sleep(testbed: Testbed, specs: Specs, mode: str) -> None:
    specs.write("intr", interrupt_mode=mode)
    km = specs.manager("intr")
    async with running(km):
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=30)
            msg_id = kc.execute("import time; print('sleeping', flush=True); time.sleep(60)")
            while True:  # wait until the kernel runs the user code
                msg = await kc.get_iopub_msg(timeout=30)
                if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                    break
            started = time.monotonic()
            await km.interrupt_kernel()
            reply = await kc.get_shell_msg(timeout=20)
            assert reply["content"]["status"] == "error"
            assert reply["content"]["ename"] == "KeyboardInterrupt"
            assert time.monotonic() - started < 10
        finally:
            kc.stop_channels()
        assert await km.is_alive()


async def test_restart_stays_on_the_same_host_with_fresh_state(
    testbed: Testbed, specs: Specs
) -> None:
    specs.write("rs")
    km = specs.manager("rs")
    async with running(km):
        kid, host, old_pid = km.kernel_id, km.provisioner.host, km.provisioner.pid
        before = km.get_connection_info()
        await execute(km, "x = 42")
        for now in (False, True):
            await km.restart_kernel(now=now)
            assert km.kernel_id == kid
            assert km.provisioner.host == host
            # same ports and keys, like a local restart: connected clients keep working
            assert km.get_connection_info() == before
            out, _ = await execute(km, "print('x' in globals())")
            assert out.strip() == "False"
        assert km.provisioner.pid != old_pid
        bed_host = testbed.by_ip(host)
        assert old_pid not in testbed.processes(bed_host)
        assert len(testbed.processes_matching(bed_host, kid)) == 1


async def test_shutdown_leaves_no_process_or_file_on_the_host(
    testbed: Testbed, specs: Specs
) -> None:
    specs.write("sd")
    km = specs.manager("sd")
    async with running(km):
        kid = km.kernel_id
        host = testbed.by_ip(km.provisioner.host)
        runtime_dir = km.provisioner.remote["runtime_dir"]
        assert testbed.processes_matching(host, kid)
        await execute(km, "import subprocess; p = subprocess.Popen(['sleep', '300'])")
        await km.shutdown_kernel(now=False)
        assert not km.has_kernel
    assert not testbed.processes_matching(host, kid)
    # the kernel's child was in its process group: gone too
    assert await wait_until(lambda: not testbed.processes_matching(host, "sleep 300"), 5)
    assert testbed.run_in(host, "test", "-e", runtime_dir).returncode != 0


async def test_kernel_log_is_retrievable(testbed: Testbed, specs: Specs) -> None:
    specs.write("lg")
    km = specs.manager("lg")
    async with running(km):
        await execute(km, "import os; os.write(2, b'kft-log-marker-123\\n')")
        log = await km.provisioner.get_kernel_log()
        assert "kft-log-marker-123" in log
        tail = await km.provisioner.get_kernel_log(max_bytes=10)
        assert len(tail) <= 10


async def test_kernel_log_dir_keeps_logs_after_the_kernel(testbed: Testbed, specs: Specs) -> None:
    log_dir = "/var/tmp"  # shared by all hosts; kernel-<id>.log files are kept
    specs.write("lgd", {"kernel_log_dir": log_dir})
    km = specs.manager("lgd")
    async with running(km):
        kid = km.kernel_id
        assert km.provisioner.remote["log_path"] == f"{log_dir}/kernel-{kid}.log"
        await execute(km, "print('to the log', flush=True); import sys; sys.__stdout__.write('x')")
    assert pop_private_file(f"{log_dir}/kernel-{kid}.log")


def pop_private_file(path: str) -> bool:
    """True if *path* exists with mode 0600; removes it."""
    mode = os.stat(path).st_mode & 0o777
    os.unlink(path)
    return mode == 0o600


async def test_cancelled_start_leaves_nothing_behind(testbed: Testbed, specs: Specs) -> None:
    host = testbed.host(1)
    specs.write("cx", {"remote_hosts": [host.ip]})
    km = specs.manager("cx")
    # Connect first so that the cancellation lands while the agent is launching.
    warm = specs.manager("cx")
    async with running(warm, ready=False):
        pass
    task = asyncio.create_task(km.start_kernel(env=kernel_env()))
    assert await wait_until(lambda: bool(testbed.processes_matching(host, "ipykernel")), 10, 0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await km.shutdown_kernel(now=True)
    await km.cleanup_resources()
    assert await wait_until(lambda: not testbed.processes_matching(host, "ipykernel"), 5)
