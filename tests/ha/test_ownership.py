"""Who acts on a kernel when several replicas serve it (kernels.replicas): its owner restarts
it once when it dies, a change made on one replica is seen by the others at once, a dead
replica's kernels get a live owner, and any replica hands over another one's warm kernels.

While notifications arrive, a replica reads the whole store only every 30 s
(``registry.NOTIFIED_SYNC_SECONDS``) or for a listing (at most once a second): a shutdown that
shows within seconds in ``GET /api/kernels/{id}`` came through the store's notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kernelfleet.client import stdout_of
from tests.gatewayproc import kernel_pids
from tests.ha.harness import MARKER, ReplicaSet

pytestmark = [pytest.mark.ha, pytest.mark.timeout(240)]


@pytest.fixture
def slow_sync_set(postgres_url: str, tmp_path: Path) -> Iterator[ReplicaSet]:
    """Three replicas."""
    with ReplicaSet(tmp_path / "ha", postgres_url, n=3) as replicas:
        yield replicas


@pytest.fixture
def pooled_set(postgres_url: str, tmp_path: Path) -> Iterator[ReplicaSet]:
    """Three replicas, each keeping one warm kernel."""
    env = {"KF_POOL_SIZES": '{"python3": 1}'}
    with ReplicaSet(tmp_path / "ha", postgres_url, n=3, env=env) as replicas:
        yield replicas


def rows(rs: ReplicaSet) -> dict[str, dict[str, Any]]:
    """The store's kernel rows: id → state, gateway, pooled, restart_count."""
    with psycopg.connect(rs.store_url) as conn:
        found = conn.execute(
            "SELECT id, state, gateway, pooled, restart_count FROM kf_kernels"
        ).fetchall()
    return {r[0]: {"state": r[1], "gateway": r[2], "pooled": r[3], "restarts": r[4]} for r in found}


async def until(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.1)


async def listed(rs: ReplicaSet, i: int) -> set[str]:
    return {k["id"] for k in await rs.replica_client(i).call("GET", "/api/kernels")}


async def started_on(rs: ReplicaSet, i: int) -> str:
    model = await rs.replica_client(i).start_kernel("python3")
    return str(model["id"])


async def run(rs: ReplicaSet, i: int, kid: str, code: str) -> str:
    ws = await rs.replica_client(i).connect(kid)
    try:
        reply, iopub = await ws.execute(code)
        assert reply["status"] == "ok", reply
        return stdout_of(iopub)
    finally:
        ws.close()


async def test_a_kernel_shut_down_on_one_replica_is_gone_from_the_others_at_once(
    slow_sync_set: ReplicaSet,
) -> None:
    rs = slow_sync_set
    kid = await started_on(rs, 1)
    for i in (2, 3):  # served there too (adopted on first use)
        assert (await run(rs, i, kid, "print(6 * 7)")).strip() == "42"
    await rs.replica_client(1).shutdown_kernel(kid)

    async def gone_everywhere() -> bool:
        # GET of one kernel reads no store: only the notification can have told them
        for i in (2, 3):
            status, _ = await rs.replica_client(i).request("GET", f"/api/kernels/{kid}")
            if status != 404:
                return False
        return True

    await until(gone_everywhere, 5, "the other replicas forget the kernel")
    assert kernel_pids(kid) == []


async def test_a_new_kernel_is_listed_by_every_replica_at_once(slow_sync_set: ReplicaSet) -> None:
    rs = slow_sync_set
    kid = await started_on(rs, 2)

    async def listed_everywhere() -> bool:
        for i in (1, 3):
            if kid not in await listed(rs, i):
                return False
        return True

    await until(listed_everywhere, 5, "the other replicas list the kernel")


async def test_a_kernel_that_dies_is_restarted_once_by_its_owner_only(
    slow_sync_set: ReplicaSet,
) -> None:
    rs = slow_sync_set
    kid = await started_on(rs, 1)
    for i in (2, 3):
        await run(rs, i, kid, "x = 1")
    assert rows(rs)[kid]["gateway"] == "ha-1"
    (pid,) = kernel_pids(kid)
    os.kill(pid, signal.SIGKILL)

    async def restarted() -> bool:
        pids = kernel_pids(kid)
        return len(pids) == 1 and pids[0] != pid and rows(rs)[kid]["state"] == "running"

    await until(restarted, 60, "the owner restarts the kernel")
    await asyncio.sleep(3)  # long enough for a second restart to show, if one happened
    (new_pid,) = kernel_pids(kid)
    assert rows(rs)[kid]["restarts"] == 1
    assert rows(rs)[kid]["gateway"] == "ha-1"
    for i in (1, 2, 3):  # every replica reaches the new process
        out = await run(rs, i, kid, "import os; print(os.getpid())")
        assert out.strip() == str(new_pid)


async def test_a_dead_replicas_kernels_and_warm_kernels_get_a_live_owner(
    pooled_set: ReplicaSet,
) -> None:
    rs = pooled_set

    async def pools_full() -> bool:
        pooled = [r for r in rows(rs).values() if r["pooled"] and r["state"] == "running"]
        return len({r["gateway"] for r in pooled}) == 3

    await until(pools_full, 90, "every replica has its warm kernel")
    kid = await started_on(rs, 1)
    mine = {k for k, r in rows(rs).items() if r["gateway"] == "ha-1"}
    assert kid in mine and len(mine) == 2  # a user's kernel and a warm one
    rs.kill(1)

    async def all_owned_by_the_living() -> bool:
        now = rows(rs)
        return kid in now and all(r["gateway"] in {"ha-2", "ha-3"} for r in now.values())

    await until(all_owned_by_the_living, 30, "the dead replica's kernels are taken over")
    assert rows(rs)[kid]["state"] == "running"
    assert (await run(rs, 2, kid, "print('alive')")).strip() == "alive"
    warm = (mine - {kid}).pop()
    assert warm not in rows(rs) or not rows(rs)[warm]["pooled"]
    if warm not in rows(rs):  # released: its process is gone too
        await until(lambda: _none(kernel_pids(warm)), 30, "the released warm kernel stops")


async def _none(pids: list[int]) -> bool:
    return not pids


async def test_any_replica_hands_over_another_replicas_warm_kernel(pooled_set: ReplicaSet) -> None:
    rs = pooled_set

    async def pools_full() -> bool:
        pooled = [r for r in rows(rs).values() if r["pooled"] and r["state"] == "running"]
        return len({r["gateway"] for r in pooled}) == 3

    await until(pools_full, 90, "every replica has its warm kernel")
    warm = {k: r["gateway"] for k, r in rows(rs).items() if r["pooled"]}
    first = await started_on(rs, 2)  # its own warm kernel
    second = await started_on(rs, 2)  # its own is gone: another replica's
    assert warm.get(first) == "ha-2"
    assert warm.get(second) in {"ha-1", "ha-3"}
    assert rows(rs)[second]["gateway"] == "ha-2" and not rows(rs)[second]["pooled"]
    # the replica it came from no longer offers it, and lists it as the user's kernel
    origin = int(warm[second][-1])

    async def origin_lists_it_as_a_users_kernel() -> bool:
        return second in await listed(rs, origin)

    await until(origin_lists_it_as_a_users_kernel, 10, "the origin replica sees the hand-over")
    assert (await run(rs, origin, second, "print('same kernel')")).strip() == "same kernel"


SLOW = """import os, sys, time
time.sleep(30)
os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", "-f", sys.argv[1]])
"""


async def test_a_dead_replicas_unfinished_launch_is_stopped_and_forgotten(
    postgres_url: str, tmp_path: Path
) -> None:
    env = {"KF_ALLOWED_KERNELSPECS": "python3,slow"}
    with ReplicaSet(tmp_path / "ha", postgres_url, n=2, env=env) as rs:
        slow = rs.root / "jupyter" / "kernels" / "slow"
        slow.mkdir(parents=True)
        spec = {
            "argv": [sys.executable, "-c", SLOW, "{connection_file}"],
            "display_name": "slow to start",
            "language": "python",
            "env": {MARKER: rs.id},
        }
        (slow / "kernel.json").write_text(json.dumps(spec))

        async def known() -> bool:  # kernelspecs are read again every 2 s
            specs = await rs.replica_client(1).call("GET", "/api/kernelspecs")
            return "slow" in specs["kernelspecs"]

        await until(known, 10, "replica 1 sees the new kernelspec")
        launch = asyncio.ensure_future(rs.replica_client(1).start_kernel("slow"))

        async def launching() -> bool:
            return any(r["state"] in {"starting", "launching"} for r in rows(rs).values())

        await until(launching, 30, "replica 1 launching the slow kernel")
        (kid,) = [k for k, r in rows(rs).items() if r["state"] in {"starting", "launching"}]
        await until(lambda: _some(kernel_pids(kid)), 30, "the slow kernel's process runs")
        rs.kill(1)
        with contextlib.suppress(Exception):
            await launch  # its client gets an error: the replica died
        # replica 2 knows at once that replica 1 died: the launch it left is stopped
        await until(lambda: _gone(rs, kid), 30, "the unfinished launch is stopped and forgotten")


async def _some(pids: list[int]) -> bool:
    return bool(pids)


async def _gone(rs: ReplicaSet, kid: str) -> bool:
    return kid not in rows(rs) and not kernel_pids(kid)
