"""A host lost mid-session: its kernels poll dead within 10 s and new kernels go elsewhere.
Each test restores the host it broke."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator

import pytest
from jupyter_client.manager import AsyncKernelManager
from ssh_helpers import Specs, execute, kernel_env, wait_until
from testbed import Testbed, TestHost

from kernelfleet.errors import HostsUnavailable

pytestmark = pytest.mark.timeout(90)

DEAD_WITHIN = 10.0


async def seconds_until_dead(km: AsyncKernelManager, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit + 2:
        if await km.provisioner.poll() is not None:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    return float("inf")


async def shutdown(kms: list[AsyncKernelManager]) -> None:
    for km in kms:
        with contextlib.suppress(Exception):
            await km.shutdown_kernel(now=True)


@pytest.fixture
def killed_host(testbed: Testbed) -> Iterator[TestHost]:
    host = testbed.host(3)
    yield host
    testbed.revive(host)


@pytest.fixture
def cut_host(testbed: Testbed) -> Iterator[TestHost]:
    host = testbed.host(2)
    yield host
    testbed.set_link(host, True)


async def test_killed_host_kernels_die_and_new_kernels_go_elsewhere(
    testbed: Testbed, specs: Specs, killed_host: TestHost
) -> None:
    specs.write("hd")
    survivor = specs.manager("hd")
    victims = [specs.manager("hd") for _ in range(2)]
    late: list[AsyncKernelManager] = []
    try:
        await survivor.start_kernel(env=kernel_env(KERNEL_REMOTE_HOST=testbed.host(1).ip))
        for km in victims:
            await km.start_kernel(env=kernel_env(KERNEL_REMOTE_HOST=killed_host.ip))
        testbed.kill_host(killed_host)
        took = await asyncio.gather(*(seconds_until_dead(km, DEAD_WITHIN) for km in victims))
        assert max(took) < DEAD_WITHIN, took
        assert await survivor.is_alive()
        out, _ = await execute(survivor, "print(1 + 1)")
        assert out.strip() == "2"

        late = [specs.manager("hd") for _ in range(3)]
        for km in late:
            await km.start_kernel(env=kernel_env())
        assert killed_host.ip not in {km.provisioner.host for km in late}

        pinned = specs.manager("hd")
        started = time.monotonic()
        with pytest.raises(HostsUnavailable, match=killed_host.ip):
            await pinned.start_kernel(env=kernel_env(KERNEL_REMOTE_HOST=killed_host.ip))
        assert time.monotonic() - started < 5  # known down: no connection attempt, no timeout
        await pinned.cleanup_resources()
    finally:
        await shutdown([survivor, *victims, *late])


async def test_cut_link_kernels_die_within_ten_seconds_and_are_stopped_later(
    testbed: Testbed, specs: Specs, cut_host: TestHost
) -> None:
    specs.write("cut", {"remote_hosts": [cut_host.ip]})
    km = specs.manager("cut")
    try:
        await km.start_kernel(env=kernel_env())
        kid = km.kernel_id
        testbed.set_link(cut_host, False)
        took = await seconds_until_dead(km, DEAD_WITHIN)
        print(f"dead after {took:.1f} s")
        assert took < DEAD_WITHIN, took
        # The gateway shuts the dead kernel down while the host is unreachable ...
        await km.shutdown_kernel(now=True)
        assert testbed.processes_matching(cut_host, kid), "the host kept running it"
        # ... and stops it for real once the host is back (the link retries by itself).
        testbed.set_link(cut_host, True)
        assert await wait_until(lambda: not testbed.processes_matching(cut_host, kid), 20)
        again = specs.manager("cut")
        await again.start_kernel(env=kernel_env())
        assert again.provisioner.host == cut_host.ip
        await again.shutdown_kernel(now=True)
    finally:
        await shutdown([km])


async def test_lost_connection_to_a_live_host_keeps_its_kernels(
    testbed: Testbed, specs: Specs
) -> None:
    host = testbed.host(1)
    specs.write("blip", {"remote_hosts": [host.ip]})
    km = specs.manager("blip")
    try:
        await km.start_kernel(env=kernel_env())
        await execute(km, "x = 7")
        agents = testbed.processes_matching(host, "kernelfleet_agent")
        assert len(agents) == 1
        for pid in agents:  # the agent dies, the SSH connection closes; the kernel stays
            os.kill(pid, signal.SIGKILL)
        # the link reconnects, and the new agent adopts the running kernel
        assert await wait_until(
            lambda: testbed.processes_matching(host, "kernelfleet_agent").keys() - agents.keys(),
            5,
        )
        await asyncio.sleep(0.5)
        assert await km.provisioner.poll() is None
        out, _ = await execute(km, "print(x)")
        assert out.strip() == "7"
        # signals go through the new agent
        kid = km.kernel_id
        await km.shutdown_kernel(now=True)
        assert await wait_until(lambda: not testbed.processes_matching(host, kid), 5)
    finally:
        await shutdown([km])


async def test_restart_after_host_death_moves_the_kernel_when_the_admin_allows_it(
    testbed: Testbed, specs: Specs, killed_host: TestHost
) -> None:
    specs.write("mv", {"move_kernels_off_down_hosts": True})
    kms = [specs.manager("mv") for _ in testbed.hosts]
    try:
        for km in kms:  # round-robin: one kernel per host
            await km.start_kernel(env=kernel_env())
        (victim,) = [km for km in kms if km.provisioner.host == killed_host.ip]
        kid = victim.kernel_id
        testbed.kill_host(killed_host)
        assert await seconds_until_dead(victim, DEAD_WITHIN) < DEAD_WITHIN
        await victim.restart_kernel(now=True)
        assert victim.kernel_id == kid
        assert victim.provisioner.host != killed_host.ip
        out, _ = await execute(victim, "import socket; print(socket.gethostname())")
        assert out.strip() == testbed.by_ip(victim.provisioner.host).name
    finally:
        await shutdown(kms)


async def test_restart_after_host_death_stays_on_the_host_by_default(
    testbed: Testbed, specs: Specs, killed_host: TestHost
) -> None:
    specs.write("stay", {"remote_hosts": [killed_host.ip, testbed.host(1).ip]})
    kms = [specs.manager("stay") for _ in range(2)]
    try:
        for one in kms:  # round-robin, not pinned: one kernel per host
            await one.start_kernel(env=kernel_env())
        (km,) = [k for k in kms if k.provisioner.host == killed_host.ip]
        testbed.kill_host(killed_host)
        assert await seconds_until_dead(km, DEAD_WITHIN) < DEAD_WITHIN
        with pytest.raises(HostsUnavailable) as err:
            await km.restart_kernel(now=True)
        assert killed_host.ip in err.value.message and "unreachable" in err.value.message
        testbed.start_sshd(killed_host)
        await km.restart_kernel(now=True)
        assert km.provisioner.host == killed_host.ip
        out, _ = await execute(km, "import socket; print(socket.gethostname())")
        assert out.strip() == killed_host.name
    finally:
        await shutdown(kms)
