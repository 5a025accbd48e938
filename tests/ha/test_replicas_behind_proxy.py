"""Gateway replicas on one PostgreSQL store behind HAProxy: what a client of the proxy sees.

Every test gets three fresh replicas (``gw1``…``gw3``) and HAProxy in front of them
(``tests/ha/harness.py``); HAProxy's ``X-Served-By`` header tells which replica answered.
"""

from __future__ import annotations

import logging
import time

import pytest

from kernelfleet.client import KernelSocket, stdout_of
from tests.gatewayproc import kernel_pids
from tests.ha.harness import SERVED_BY, ReplicaSet

pytestmark = [pytest.mark.ha, pytest.mark.timeout(180)]

log = logging.getLogger(__name__)


def _served_by(ws: KernelSocket) -> str:
    """The replica that accepted this websocket (HAProxy's header on the 101 answer)."""
    headers = ws.conn.headers
    return "" if headers is None else str(headers.get(SERVED_BY, ""))


async def test_a_kernel_started_through_the_proxy_is_listed_and_usable_on_every_replica(
    replica_set: ReplicaSet,
) -> None:
    everyone = {replica_set.name(i) for i in replica_set.replicas}
    status, model, started_by = await replica_set.request(
        "POST", "/api/kernels", {"name": "python3", "env": {}}
    )
    assert status == 201, model
    kid = model["id"]
    log.info("kernel %s started by %s", kid, started_by)

    listed_by = set()
    for _ in range(2 * replica_set.n):
        status, kernels, served_by = await replica_set.request("GET", "/api/kernels")
        assert status == 200, (served_by, kernels)
        assert [k["id"] for k in kernels] == [kid], f"{served_by} lists {kernels}"
        listed_by.add(served_by)
        status, one, served_by = await replica_set.request("GET", f"/api/kernels/{kid}")
        assert status == 200, (served_by, one)
        assert one["id"] == kid
        listed_by.add(served_by)
    assert listed_by == everyone

    # One websocket after another, until each replica has carried one: the kernel's state
    # is the same whichever replica bridges to it.
    executed_by: list[str] = []
    for attempt in range(1, 3 * replica_set.n + 1):
        ws = await replica_set.client.connect(kid)
        try:
            executed_by.append(_served_by(ws))
            reply, iopub = await ws.execute("count = globals().get('count', 0) + 1; print(count)")
        finally:
            ws.close()
        assert reply["status"] == "ok", reply
        assert stdout_of(iopub) == f"{attempt}\n", executed_by
        if set(executed_by) == everyone:
            break
    assert set(executed_by) == everyone, executed_by


async def test_a_killed_replica_is_marked_down_and_requests_through_the_proxy_keep_succeeding(
    replica_set: ReplicaSet,
) -> None:
    victim = 2
    survivors = {replica_set.name(i) for i in replica_set.replicas if i != victim}
    killed_at = time.monotonic()
    replica_set.kill(victim)

    # Until HAProxy's checks notice, a request sent to the dead replica is refused and
    # redispatched to another one: every request is answered.
    during: list[tuple[int, str]] = []
    first_ok: float | None = None
    while True:
        status, _, served_by = await replica_set.request("GET", "/api/kernels")
        during.append((status, served_by))
        if status == 200 and first_ok is None:
            first_ok = time.monotonic() - killed_at
        if replica_set.states()[replica_set.name(victim)] == "DOWN":
            break
        assert time.monotonic() - killed_at < 15, f"{replica_set.states()} after 15 s"
    marked_down = time.monotonic() - killed_at
    log.info(
        "failover: kill -> first successful request through the proxy %.3f s, "
        "kill -> HAProxy marks %s DOWN %.3f s, %d requests in between",
        first_ok or -1.0,
        replica_set.name(victim),
        marked_down,
        len(during),
    )
    assert all(status == 200 for status, _ in during), during
    assert {served_by for _, served_by in during} <= survivors, during

    after = [await replica_set.request("GET", "/api/kernels") for _ in range(2 * len(survivors))]
    assert [status for status, _, _ in after] == [200] * len(after), after
    assert {served_by for _, _, served_by in after} == survivors
    states = replica_set.states()
    assert states == {name: "UP" for name in survivors} | {replica_set.name(victim): "DOWN"}


async def test_a_restarted_replica_is_marked_up_and_serves_again(
    replica_set: ReplicaSet,
) -> None:
    replica_set.kill(3)
    down = await replica_set.wait_for_state(3, "DOWN")
    started_at = time.monotonic()
    replica_set.start(3)
    up = await replica_set.wait_for_state(3, "UP")
    log.info(
        "gw3 DOWN %.3f s after the kill; UP again %.3f s after its restart began",
        down,
        time.monotonic() - started_at,
    )
    assert up >= 0
    served = set()
    for _ in range(2 * replica_set.n):
        status, body, served_by = await replica_set.request("GET", "/api/kernels")
        assert status == 200, (served_by, body)
        served.add(served_by)
    assert served == {replica_set.name(i) for i in replica_set.replicas}


async def test_a_kernel_started_by_a_killed_replica_is_executed_through_the_proxy(
    replica_set: ReplicaSet,
) -> None:
    first = replica_set.replica_client(1)
    kid = (await first.start_kernel())["id"]
    ws = await first.connect(kid)
    try:
        await ws.execute("origin = 'set on replica 1'")
    finally:
        ws.close()
    pids = kernel_pids(kid)
    assert len(pids) == 1, pids

    replica_set.kill(1)
    await replica_set.wait_for_state(1, "DOWN")
    assert kernel_pids(kid) == pids, "the kernel must outlive the replica that started it"

    status, model, served_by = await replica_set.request("GET", f"/api/kernels/{kid}")
    assert status == 200, (served_by, model)
    others = {replica_set.name(i) for i in replica_set.replicas if i != 1}
    executed_by: set[str] = set()
    for _ in range(3 * len(others)):
        ws = await replica_set.client.connect(kid)
        try:
            executed_by.add(_served_by(ws))
            reply, iopub = await ws.execute("print(origin)")
        finally:
            ws.close()
        assert reply["status"] == "ok", reply
        assert stdout_of(iopub) == "set on replica 1\n"
        if executed_by == others:
            break
    assert executed_by == others
    assert kernel_pids(kid) == pids, "adopted, not started again"
