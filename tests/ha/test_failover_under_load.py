"""A replica SIGKILLed while clients work through the proxy: its clients reconnect to another
replica and carry on with the same kernels and sessions; every message arrives once or is
reported lost; no kernel is lost, started twice or orphaned.

The clients are the benchmark's load generator (``benchmarks/loadgen``) in reconnect mode: it
verifies every message it receives (no loss, no duplicate, no cross-talk) and recognises the
gateway's loss notices. Times are logged, not asserted (``benchmarks/scenarios/ha.py``
measures them).
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from benchmarks.loadgen.client import ClientSettings
from benchmarks.loadgen.runner import LoadConfig, LoadRunner
from tests.gatewayproc import kernel_pids
from tests.ha.harness import ReplicaSet

pytestmark = [pytest.mark.ha, pytest.mark.timeout(300)]

log = logging.getLogger(__name__)


async def _kernels(replica_set: ReplicaSet, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        status, model, _ = await replica_set.request(
            "POST", "/api/kernels", {"name": "python3", "env": {}}
        )
        assert status == 201, model
        ids.append(model["id"])
    return ids


def _processes(ids: list[str]) -> dict[str, list[int]]:
    return {kid: sorted(kernel_pids(kid)) for kid in ids}


async def test_clients_of_a_killed_replica_carry_on_elsewhere_with_every_message_once_or_reported(
    replica_set: ReplicaSet,
) -> None:
    ids = await _kernels(replica_set, 4)
    before = _processes(ids)
    assert all(len(p) == 1 for p in before.values()), before
    settings = ClientSettings(
        url=replica_set.proxy_url + "/",
        token=replica_set.token,
        lines=3,
        reconnect=True,
        reconnect_deadline=30.0,
        outstanding_timeout=10.0,
    )
    runner = LoadRunner(LoadConfig(settings, ids, clients=24, seconds=16.0, workers=2))
    await runner.start()
    try:
        await runner.go()
        await asyncio.sleep(5.0)
        replica_set.kill(1)
        summary = await runner.wait()
    finally:
        await runner.stop()
    log.info(
        "load summary: %s", json.dumps({k: summary[k] for k in ("counts", "reconnect", "problems")})
    )
    counts = summary["counts"]
    assert counts["drops"] > 0, "no client was on the killed replica"
    assert counts["reconnect_failures"] == 0, summary["problems"]
    assert counts["duplicated"] == 0, summary["problems"]
    assert counts["cross_talk"] == 0, summary["problems"]
    assert counts["lost_messages"] == 0, summary["problems"]  # unreported losses
    assert counts["errors"] == 0, summary["problems"]
    assert counts["round_trips"] > 0

    # the same kernels, the same processes: none lost, none started twice, none orphaned
    status, listed, _ = await replica_set.request("GET", "/api/kernels")
    assert status == 200
    assert {k["id"] for k in listed} == set(ids)
    assert _processes(ids) == before
