"""The pure parts of the store schema: migration planning, and decoding change notifications."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernelfleet.kernels.stores import KernelStore, StoredKernel
from kernelfleet.kernels.stores.migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    AppliedStep,
    Migration,
    SchemaVersionError,
    check_migrations,
    next_action,
    plan,
)
from kernelfleet.kernels.stores.pgwatch import ChangeListener, decode_change


def applied(*versions: int, additive: bool = True) -> list[AppliedStep]:
    return [AppliedStep(v, f"step {v}", additive) for v in versions]


def step(version: int, additive: bool = True) -> Migration:
    return Migration(version, f"step {version}", ("-- s",), ("-- p",), additive)


def run_to_end(found_applied: list[AppliedStep], has_kernels: bool) -> list[tuple[int, bool]]:
    """What a store's migration loop does: one action per transaction, re-planning each time.
    Returns (version, ran_sql) per transaction."""
    done: list[tuple[int, bool]] = []
    rows = list(found_applied)
    while (action := next_action(plan(rows, has_kernels))) is not None:
        migration, run_sql = action
        done.append((migration.version, run_sql))
        rows.append(AppliedStep(migration.version, migration.description, migration.additive))
        has_kernels = True
    return done


def test_the_migrations_are_numbered_from_one_and_cover_both_dialects() -> None:
    check_migrations(MIGRATIONS)
    assert SCHEMA_VERSION == MIGRATIONS[-1].version == 2
    assert "kf_kernels" in MIGRATIONS[0].sqlite[0] and "kf_kernels" in MIGRATIONS[0].postgres[0]
    assert all(m.additive for m in MIGRATIONS)


@pytest.mark.parametrize(
    ("migrations", "problem"),
    [
        ((step(1), step(3)), "migration #2 has version 3"),
        ((step(2),), "migration #1 has version 2"),
        ((step(1), Migration(2, "no sqlite", (), ("x",))), "lacks SQL"),
        ((Migration(1, "", ("x",), ("x",)),), "no description"),
    ],
)
def test_a_broken_migration_list_is_refused(
    migrations: tuple[Migration, ...], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        check_migrations(migrations)


def test_an_empty_database_gets_every_migration() -> None:
    found = plan([], has_kernels_table=False)
    assert (found.current, found.baseline) == (0, None)
    assert [m.version for m in found.steps] == [1, 2]
    assert run_to_end([], False) == [(1, True), (2, True)]


def test_an_unversioned_kf_kernels_is_version_1() -> None:
    found = plan([], has_kernels_table=True)
    assert found.current == 1
    assert found.baseline is MIGRATIONS[0]
    assert [m.version for m in found.steps] == [2]
    # version 1 is recorded without running its SQL, then version 2 is applied
    assert run_to_end([], True) == [(1, False), (2, True)]


def test_a_store_at_the_current_version_needs_nothing() -> None:
    found = plan(applied(1, 2), has_kernels_table=True)
    assert found.done and found.current == 2
    assert next_action(found) is None


def test_a_newer_store_opens_when_its_new_steps_are_additive() -> None:
    found = plan(applied(1, 2, 3, 4), has_kernels_table=True)
    assert found.done and found.current == 4


def test_a_newer_store_with_an_incompatible_step_is_refused() -> None:
    rows = [*applied(1, 2, 3), AppliedStep(4, "kf_kernels: drop host", False)]
    with pytest.raises(SchemaVersionError) as refused:
        plan(rows, has_kernels_table=True)
    message = str(refused.value)
    assert "schema version 4" in message and "version 2 that this gateway knows" in message
    assert "version 4 (kf_kernels: drop host)" in message and "version 3" not in message
    assert "Upgrade this gateway" in message
    assert (refused.value.recorded, refused.value.known) == (4, 2)
    # an incompatible step this gateway knows (applied by itself) is no obstacle
    found = plan(rows, True, [step(1), step(2), step(3), step(4, additive=False)])
    assert found.done


@given(
    known=st.integers(1, 8),
    recorded=st.integers(0, 8),
    has_kernels=st.booleans(),
)
def test_any_older_store_is_brought_to_the_known_version_once_each(
    known: int, recorded: int, has_kernels: bool
) -> None:
    migrations = [step(v) for v in range(1, known + 1)]
    rows = applied(*range(1, min(recorded, known) + 1))
    done: list[int] = []
    while (action := next_action(plan(rows, has_kernels, migrations))) is not None:
        migration, _ = action
        done.append(migration.version)
        rows.append(AppliedStep(migration.version, migration.description, True))
        has_kernels = True
    assert [r.version for r in rows] == list(range(1, known + 1))
    assert len(done) == len(set(done))


# -- change notification payloads ----------------------------------------------------------


def test_a_trigger_payload_is_decoded() -> None:
    payload = json.dumps(
        {
            "op": "update",
            "id": "k1",
            "state": "running",
            "owner": "a",
            "gateway": "g",
            "pooled": True,
        }
    )
    assert decode_change(payload) == {
        "op": "update",
        "id": "k1",
        "state": "running",
        "owner": "a",
        "gateway": "g",
        "pooled": True,
    }
    # missing optional fields read as None, unknown keys are dropped
    assert decode_change('{"op": "delete", "id": "k2", "extra": [1]}') == {
        "op": "delete",
        "id": "k2",
        "state": None,
        "owner": None,
        "gateway": None,
        "pooled": None,
    }


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "not json",
        "[1, 2]",
        "null",
        '{"op": "insert"}',
        '{"op": "resync", "id": "k"}',
        '{"op": "insert", "id": 7}',
        '{"op": "insert", "id": "k", "state": 3}',
        '{"op": "insert", "id": "k", "pooled": "yes"}',
        '{"op": "insert", "id": "k", "owner": {"a": 1}}',
        "[" * 100_000 + "]" * 100_000,
        '{"op": "insert", "id": "k"',
    ],
)
def test_a_payload_the_trigger_does_not_send_is_refused(payload: str) -> None:
    assert decode_change(payload) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _assert_well_formed(change: dict[str, Any] | None) -> None:
    if change is None:
        return
    assert set(change) == {"op", "id", "state", "owner", "gateway", "pooled"}
    assert change["op"] in {"insert", "update", "delete"} and isinstance(change["id"], str)
    assert all(change[k] is None or isinstance(change[k], str) for k in ("state", "owner"))
    assert change["gateway"] is None or isinstance(change["gateway"], str)
    assert change["pooled"] is None or isinstance(change["pooled"], bool)


@given(st.text())
def test_any_text_decodes_to_a_change_or_nothing(payload: str) -> None:
    _assert_well_formed(decode_change(payload))


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "op": st.sampled_from(["insert", "update", "delete", "resync"]) | json_values,
            "id": st.text() | json_values,
            "state": st.text() | json_values,
            "owner": st.text() | json_values,
            "gateway": st.text() | json_values,
            "pooled": st.booleans() | json_values,
        },
    )
)
def test_any_json_object_decodes_to_a_change_or_nothing(value: dict[str, Any]) -> None:
    _assert_well_formed(decode_change(json.dumps(value)))


async def test_a_failing_callback_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[dict[str, Any]] = []

    def broken(change: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    async def fine(change: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        seen.append(change)

    with caplog.at_level(logging.ERROR, "kernelfleet.store"):
        await ChangeListener("postgresql://unused", broken)._deliver({"op": "resync"})
    assert "the callback failed" in caplog.text
    await ChangeListener("postgresql://unused", fine)._deliver({"op": "resync"})
    assert seen == [{"op": "resync"}]


async def test_stopping_a_listener_that_never_started_is_harmless() -> None:
    listener = ChangeListener("postgresql://unused", lambda change: None)
    await listener.stop()
    await listener.stop()


# -- the defaults of KernelStore (a store one gateway process uses alone) ------------------


class MemoryStore(KernelStore):
    """Only the abstract methods: every schema, lease and take-over method is the default."""

    def __init__(self) -> None:
        self.rows: dict[str, StoredKernel] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def put(self, kernel: StoredKernel) -> None:
        await asyncio.sleep(0)  # a real store yields here: let other callers interleave
        self.rows[kernel.id] = dataclasses.replace(kernel)

    async def get(self, kernel_id: str) -> StoredKernel | None:
        await asyncio.sleep(0)
        row = self.rows.get(kernel_id)
        return dataclasses.replace(row) if row else None

    async def delete(self, kernel_id: str) -> None:
        self.rows.pop(kernel_id, None)

    async def all(self) -> list[StoredKernel]:
        return [dataclasses.replace(r) for r in self.rows.values()]

    async def touch(self, activity: dict[str, dt.datetime]) -> None:
        return None


def _row(kid: str, gateway: str, pooled: bool = False) -> StoredKernel:
    now = dt.datetime.now(dt.UTC)
    return StoredKernel(kid, "python3", "alice", "running", "p", now, now, None, gateway, 0, pooled)


async def test_the_default_compare_and_set_steps_hold_among_one_process_coroutines() -> None:
    store = MemoryStore()
    await store.put(_row("warm", "gw", pooled=True))
    got = await asyncio.gather(*(store.take_pooled("warm", f"gw-{n}") for n in range(5)))
    assert len([g for g in got if g is not None]) == 1
    assert not store.rows["warm"].pooled

    await store.put(_row("k", "gw-a"))
    got = await asyncio.gather(*(store.claim("k", "gw-a", f"gw-{n}") for n in range(5)))
    (winner,) = [g for g in got if g is not None]
    assert store.rows["k"].gateway == winner.gateway

    await store.put(_row("d1", "gw-dead"))
    await store.put(_row("d2", "gw-dead"))
    taken = await asyncio.gather(
        store.take_over("gw-dead", "gw-x", older_than=10),
        store.take_over("gw-dead", "gw-y", older_than=10),
    )
    assert sorted(len(t) for t in taken) == [0, 2]


async def test_the_default_store_has_no_leases_and_reports_no_changes() -> None:
    store = MemoryStore()
    assert await store.schema_version() == SCHEMA_VERSION
    await store.heartbeat("gw", "http://gw", "1")
    assert await store.replicas() == []
    await store.forget_replica("gw")
    await store.hold_lease("gw")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await store.await_death("gw-other")  # no other replicas: nobody ever dies
    calls: list[dict[str, Any]] = []
    stop = await store.watch(calls.append)
    await store.put(_row("k", "gw"))
    await stop()
    assert calls == []
