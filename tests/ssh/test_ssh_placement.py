"""Placement across real hosts: round-robin, least-connection, pinning, host names."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import pytest
from jupyter_client.manager import AsyncKernelManager
from ssh_helpers import Specs, execute, kernel_env
from testbed import Testbed

from kernelfleet.errors import Forbidden

pytestmark = pytest.mark.timeout(90)


async def start_many(kms: list[AsyncKernelManager], envs: list[dict[str, str]]) -> None:
    await asyncio.gather(*(km.start_kernel(env=env) for km, env in zip(kms, envs, strict=True)))


async def stop_all(kms: list[AsyncKernelManager]) -> None:
    async def stop(km: AsyncKernelManager) -> None:
        with contextlib.suppress(Exception):
            if km.has_kernel:
                await km.shutdown_kernel(now=True)

    await asyncio.gather(*(stop(km) for km in kms))


async def test_round_robin_spreads_six_kernels_two_per_host(testbed: Testbed, specs: Specs) -> None:
    specs.write("rr", {"load_balancing_algorithm": "round-robin"})
    kms = [specs.manager("rr") for _ in range(6)]
    try:
        await start_many(kms, [kernel_env() for _ in kms])
        hosts = [km.provisioner.host for km in kms]
        assert sorted(Counter(hosts).values()) == [2, 2, 2]
        names = await asyncio.gather(
            *(execute(km, "import socket; print(socket.gethostname())") for km in kms)
        )
        for km, (out, _) in zip(kms, names, strict=True):
            assert out.strip() == testbed.by_ip(km.provisioner.host).name
    finally:
        await stop_all(kms)


async def test_least_connection_fills_the_emptiest_host(testbed: Testbed, specs: Specs) -> None:
    # Another kernelspec's kernels count too: placement is process-wide.
    specs.write("pinned")
    specs.write("lc", {"load_balancing_algorithm": "least-connection"})
    h1, h2, h3 = (h.ip for h in testbed.hosts)
    pinned = [specs.manager("pinned") for _ in range(3)]
    fresh = [specs.manager("lc") for _ in range(3)]
    try:
        await start_many(
            pinned,
            [kernel_env(KERNEL_REMOTE_HOST=h) for h in (h1, h1, h2)],
        )
        assert [km.provisioner.host for km in pinned] == [h1, h1, h2]
        await fresh[0].start_kernel(env=kernel_env())
        assert fresh[0].provisioner.host == h3
        await start_many(fresh[1:], [kernel_env(), kernel_env()])
        counts = Counter(km.provisioner.host for km in pinned + fresh)
        assert counts == {h1: 2, h2: 2, h3: 2}
    finally:
        await stop_all(pinned + fresh)


async def test_pinned_host_is_used_and_an_unlisted_one_refused(
    testbed: Testbed, specs: Specs
) -> None:
    h2 = testbed.host(2)
    specs.write("two", {"remote_hosts": [testbed.host(1).ip, h2.ip]})
    km = specs.manager("two")
    try:
        await km.start_kernel(env=kernel_env(KERNEL_REMOTE_HOST=h2.ip))
        assert km.provisioner.host == h2.ip
        out, _ = await execute(km, "import socket; print(socket.gethostname())")
        assert out.strip() == h2.name
    finally:
        await stop_all([km])
    before = {h.name: len(testbed.processes(h)) for h in testbed.hosts}
    refused = specs.manager("two")
    with pytest.raises(Forbidden, match=testbed.host(3).ip):
        await refused.start_kernel(env=kernel_env(KERNEL_REMOTE_HOST=testbed.host(3).ip))
    await refused.cleanup_resources()
    assert {h.name: len(testbed.processes(h)) for h in testbed.hosts} == before


async def test_load_spreads_a_burst_using_agent_reports(testbed: Testbed, specs: Specs) -> None:
    # The hosts share one machine, so their load reports are equal: the kernels this gateway
    # just placed decide, and a burst spreads instead of piling onto one host.
    specs.write("load", {"load_balancing_algorithm": "load"})
    kms = [specs.manager("load") for _ in range(3)]
    try:
        await start_many(kms, [kernel_env() for _ in kms])
        assert sorted(Counter(km.provisioner.host for km in kms).values()) == [1, 1, 1]
    finally:
        await stop_all(kms)
