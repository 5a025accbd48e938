"""The store's versioned schema, replica leases, take-overs and change notifications, on real
SQLite files and a real PostgreSQL 15 server (a fresh database per test)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.kernels.stores import KernelStore, StoredKernel
from kernelfleet.kernels.stores.base import (
    COLUMNS,
    SCHEMA_VERSION,
    LeaseHeldError,
    SchemaVersionError,
)
from kernelfleet.kernels.stores.pgwatch import APPLICATION_NAME
from kernelfleet.kernels.stores.postgres import PostgresStore
from kernelfleet.kernels.stores.sqlite import SQLiteStore
from tests.persistence.test_postgres_shared import postgres_url  # noqa: F401 - the server

pytestmark = pytest.mark.timeout(60)

# kf_kernels exactly as version 1 of the stores created it (before kf_schema existed).
V1_SQLITE = """
CREATE TABLE IF NOT EXISTS kf_kernels (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    provisioner TEXT NOT NULL,
    created TEXT NOT NULL,
    last_activity TEXT NOT NULL,
    host TEXT,
    gateway TEXT NOT NULL DEFAULT '',
    restart_count INTEGER NOT NULL DEFAULT 0,
    pooled INTEGER NOT NULL DEFAULT 0,
    secret TEXT NOT NULL DEFAULT ''
)
"""
V1_POSTGRES = """
CREATE TABLE IF NOT EXISTS kf_kernels (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    provisioner TEXT NOT NULL,
    created TIMESTAMPTZ NOT NULL,
    last_activity TIMESTAMPTZ NOT NULL,
    host TEXT,
    gateway TEXT NOT NULL DEFAULT '',
    restart_count INTEGER NOT NULL DEFAULT 0,
    pooled BOOLEAN NOT NULL DEFAULT FALSE,
    secret TEXT NOT NULL DEFAULT ''
)
"""
# How a version-1 gateway writes a row: an explicit column list.
V1_COLUMNS = (
    "id, name, owner, state, provisioner, created, last_activity, host, gateway, "
    "restart_count, pooled, secret"
)
V1_INSERT = f"INSERT INTO kf_kernels ({V1_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def kernel(
    kid: str, *, gateway: str = "gw-1", state: str = "running", pooled: bool = False
) -> StoredKernel:
    spec = ("python3", "alice", state, "kernelfleet-local")
    return StoredKernel(kid, *spec, NOW, NOW, gateway=gateway, pooled=pooled)


def v1_row(kid: str, gateway: str = "gw-old") -> tuple[Any, ...]:
    iso = NOW.isoformat()
    spec = ("python3", "bob", "running", "kernelfleet-local")
    return (kid, *spec, iso, iso, "h1", gateway, 0, 0, "")


class Database:
    """Raw SQL on the test's database, as another program (or an older gateway) would run it.
    Statements use ``?`` placeholders, turned into ``%s`` for PostgreSQL."""

    def __init__(self, dialect: str, target: str) -> None:
        self.dialect = dialect
        self.target = target  # a file path or a postgresql:// URL

    async def run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.dialect == "sqlite":
            with sqlite3.connect(self.target, isolation_level=None) as db:
                rows = db.execute(sql, params).fetchall()
            db.close()
            return rows
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.target, autocommit=True) as conn:
            cur = await conn.execute(sql.replace("?", "%s"), params)
            return await cur.fetchall() if cur.description else []

    def store(self) -> KernelStore:
        if self.dialect == "sqlite":
            return SQLiteStore(self.target)
        return PostgresStore(self.target)

    @property
    def v1_schema(self) -> str:
        return V1_SQLITE if self.dialect == "sqlite" else V1_POSTGRES

    async def v1_insert(self, kid: str, gateway: str = "gw-old") -> None:
        row = v1_row(kid, gateway)
        if self.dialect == "postgres":
            row = (*row[:5], NOW, NOW, *row[7:10], False, row[11])
        await self.run(V1_INSERT, row)


@pytest.fixture
async def pg_url(postgres_url: str) -> AsyncIterator[str]:  # noqa: F811
    """A new, empty database on the module's PostgreSQL server."""
    import psycopg

    name = f"kf_{uuid.uuid4().hex[:16]}"
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute(f"CREATE DATABASE {name}")
    yield postgres_url.replace("/postgres?", f"/{name}?")
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        return Database("sqlite", str(tmp_path / "kernels.sqlite"))
    return Database("postgres", request.getfixturevalue("pg_url"))


@pytest.fixture
def pg_database(pg_url: str) -> Database:
    return Database("postgres", pg_url)


@pytest.fixture
async def stores(database: Database) -> AsyncIterator[Callable[[], Awaitable[KernelStore]]]:
    """``await stores()``: one more opened store on the test's database (as another gateway
    would open it); all are closed at the end."""
    opened: list[KernelStore] = []

    async def make() -> KernelStore:
        store = database.store()
        opened.append(store)
        await store.open()
        return store

    yield make
    for store in opened:
        await store.close()


async def recorded_versions(db: Database) -> list[int]:
    return [v for (v,) in await db.run("SELECT version FROM kf_schema ORDER BY version")]


# -- the schema -----------------------------------------------------------------------------


async def test_a_fresh_store_is_at_the_current_version(database: Database, stores: Any) -> None:
    store = await stores()
    assert SCHEMA_VERSION == 2
    assert await store.schema_version() == SCHEMA_VERSION
    assert await recorded_versions(database) == [1, 2]
    assert await database.run("SELECT count(*) FROM kf_replicas") == [(0,)]


async def test_a_version_1_database_is_recognised_and_migrated_in_place(
    database: Database, stores: Any
) -> None:
    await database.run(database.v1_schema)
    for kid in ("old-1", "old-2"):
        await database.v1_insert(kid)
    store = await stores()
    assert await store.schema_version() == 2
    assert await recorded_versions(database) == [1, 2]
    rows = {k.id: k for k in await store.all()}
    assert set(rows) == {"old-1", "old-2"}
    assert rows["old-1"].owner == "bob" and rows["old-1"].gateway == "gw-old"
    assert rows["old-1"].host == "h1" and rows["old-1"].created == NOW
    # opening again changes nothing
    await store.close()
    again = await stores()
    assert await recorded_versions(database) == [1, 2]
    assert len(await again.all()) == 2


async def test_concurrent_openers_apply_each_migration_once(
    database: Database, stores: Any
) -> None:
    opened = await asyncio.gather(*(stores() for _ in range(4)))
    assert all([await s.schema_version() == 2 for s in opened])
    assert await recorded_versions(database) == [1, 2]
    if database.dialect == "postgres":
        triggers = await database.run(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'kf_kernels'::regclass"
            " AND NOT tgisinternal"
        )
        assert triggers == [(2,)]


async def test_a_newer_schema_opens_only_if_its_new_steps_are_additive(
    database: Database, stores: Any
) -> None:
    await (await stores()).close()
    await database.run(
        "INSERT INTO kf_schema (version, description, additive) VALUES (?, ?, ?)",
        (3, "kf_kernels: drop host", False if database.dialect == "postgres" else 0),
    )
    with pytest.raises(SchemaVersionError) as refused:
        await stores()
    message = str(refused.value)
    assert "schema version 3" in message and "version 2 that this gateway knows" in message
    assert "drop host" in message and "Upgrade this gateway" in message
    assert (refused.value.recorded, refused.value.known) == (3, 2)

    await database.run("UPDATE kf_schema SET additive = ? WHERE version = 3", (True,))
    store = await stores()
    assert await store.schema_version() == 3
    assert await recorded_versions(database) == [1, 2, 3]  # nothing re-applied or undone
    await store.put(kernel("k-new"))
    assert (await store.get("k-new")) is not None


async def test_a_previous_version_gateway_keeps_working_on_a_migrated_store(
    database: Database, stores: Any
) -> None:
    store = await stores()
    # what a version-1 gateway does: create its table if missing, write with its column list
    await database.run(database.v1_schema)
    await database.v1_insert("from-v1")
    row = await store.get("from-v1")
    assert row is not None and row.owner == "bob" and row.gateway == "gw-old"
    await store.put(kernel("from-v2"))
    assert {r[0] for r in await database.run("SELECT id FROM kf_kernels")} == {
        "from-v1",
        "from-v2",
    }


# -- replica leases and take-overs ----------------------------------------------------------


async def test_heartbeats_keep_a_lease_by_the_database_clock(stores: Any) -> None:
    store = await stores()
    await store.heartbeat("gw-a", "http://a:8888", "1.2.3")
    (first,) = await store.replicas()
    await asyncio.sleep(0.05)
    await store.heartbeat("gw-a", "http://a:9999", "1.2.4")
    await store.heartbeat("gw-b", "http://b:8888", "1.2.4")
    a, b = await store.replicas()
    assert (a.id, a.url, a.version, a.schema_version) == ("gw-a", "http://a:9999", "1.2.4", 2)
    assert a.started == first.started and a.heartbeat > first.heartbeat
    assert a.heartbeat.tzinfo is dt.UTC
    assert 0 <= a.age_seconds < 5 and b.id == "gw-b"
    await asyncio.sleep(0.3)
    (aged, _) = await store.replicas()
    assert aged.age_seconds >= 0.25
    await store.forget_replica("gw-a")
    assert [r.id for r in await store.replicas()] == ["gw-b"]


async def test_take_over_waits_for_the_lease_to_expire(stores: Any) -> None:
    store = await stores()
    for kid in ("t1", "t2"):
        await store.put(kernel(kid, gateway="gw-dead"))
    await store.put(kernel("t3", gateway="gw-other"))
    await store.heartbeat("gw-dead", "http://dead", "1")
    assert await store.take_over("gw-dead", "gw-new", older_than=30) == []
    assert {k.id for k in await store.all() if k.gateway == "gw-dead"} == {"t1", "t2"}
    assert [r.id for r in await store.replicas()] == ["gw-dead"]

    await asyncio.sleep(0.3)
    taken = await store.take_over("gw-dead", "gw-new", older_than=0.1)
    assert sorted(k.id for k in taken) == ["t1", "t2"]
    assert {k.gateway for k in taken} == {"gw-new"}
    assert await store.replicas() == []  # the dead replica's lease is gone
    gateways = {k.id: k.gateway for k in await store.all()}
    assert gateways == {"t1": "gw-new", "t2": "gw-new", "t3": "gw-other"}
    # a replica that never wrote a lease can be taken over at once
    await store.put(kernel("t4", gateway="gw-never"))
    assert [k.id for k in await store.take_over("gw-never", "gw-new", older_than=3600)] == ["t4"]


async def test_concurrent_take_overs_give_each_row_to_exactly_one(stores: Any) -> None:
    one, two = await stores(), await stores()
    ids = {f"c{i}" for i in range(20)}
    for kid in ids:
        await one.put(kernel(kid, gateway="gw-dead"))
    await one.heartbeat("gw-dead", "http://dead", "1")
    await asyncio.sleep(0.3)
    results = await asyncio.gather(
        *(
            store.take_over("gw-dead", f"gw-{n}", older_than=0.1)
            for n, store in enumerate([one, two, one, two])
        )
    )
    taken = [{k.id for k in rows} for rows in results]
    assert sum(len(t) for t in taken) == len(ids) and set().union(*taken) == ids
    winners = [n for n, t in enumerate(taken) if t]
    assert len(winners) == 1  # one take-over of a replica at a time: the first takes all
    gateways = {k.id: k.gateway for k in await two.all()}
    assert gateways == dict.fromkeys(ids, f"gw-{winners[0]}")


async def test_claim_is_a_compare_and_set(stores: Any) -> None:
    store = await stores()
    await store.put(kernel("k1", gateway="gw-a"))
    assert await store.claim("k1", "gw-x", "gw-b") is None
    assert await store.claim("missing", "gw-a", "gw-b") is None
    row = await store.claim("k1", "gw-a", "gw-b")
    assert row is not None and row.gateway == "gw-b" and row.owner == "alice"
    assert await store.claim("k1", "gw-a", "gw-c") is None
    got = await store.get("k1")
    assert got is not None and got.gateway == "gw-b"


async def test_a_pooled_kernel_is_taken_exactly_once(stores: Any) -> None:
    one, two = await stores(), await stores()
    await one.put(kernel("warm", gateway="gw-pool", pooled=True))
    await one.put(kernel("busy", gateway="gw-pool", pooled=False))
    results = await asyncio.gather(
        *(store.take_pooled("warm", f"gw-{n}") for n, store in enumerate([one, two] * 4))
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert not winners[0].pooled
    row = await two.get("warm")
    assert row is not None and not row.pooled and row.gateway == winners[0].gateway
    assert await one.take_pooled("busy", "gw-0") is None
    assert await one.take_pooled("missing", "gw-0") is None


async def test_a_replica_death_is_seen_when_its_lease_session_ends(
    pg_database: Database,
) -> None:
    holder, watcher, twin = (pg_database.store() for _ in range(3))
    for store in (holder, watcher, twin):
        await store.open()
    try:
        await holder.hold_lease("gw-a")
        await holder.hold_lease("gw-a")  # idempotent
        with pytest.raises(LeaseHeldError, match="'gw-a'"):
            await twin.hold_lease("gw-a", wait=0.3)
        await watcher.await_death("gw-nobody")  # no lease: already dead

        death = asyncio.create_task(watcher.await_death("gw-a"))
        await asyncio.sleep(0.5)
        assert not death.done()
        # the process dies: its session ends (here: the server ends it)
        terminated = await pg_database.run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'kernelfleet-lease' AND datname = current_database()"
        )
        assert terminated == [(True,)]
        async with asyncio.timeout(5):
            await death
        # the id is free again, for a restarted gateway; closing the store frees it too
        await twin.hold_lease("gw-a", wait=2)
        death = asyncio.create_task(watcher.await_death("gw-a"))
        await asyncio.sleep(0.3)
        assert not death.done()
        await twin.close()
        async with asyncio.timeout(5):
            await death
    finally:
        for store in (holder, watcher, twin):
            await store.close()


async def test_a_cancelled_death_watch_closes_its_connection(pg_database: Database) -> None:
    holder, watcher = pg_database.store(), pg_database.store()
    await holder.open()
    await watcher.open()
    try:
        await holder.hold_lease("gw-a")
        death = asyncio.create_task(watcher.await_death("gw-a"))
        await asyncio.sleep(0.3)
        death.cancel()
        with pytest.raises(asyncio.CancelledError):
            await death
        async with asyncio.timeout(5):
            while await pg_database.run(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'kernelfleet-await'"
            ):
                await asyncio.sleep(0.05)
    finally:
        await holder.close()
        await watcher.close()


# -- change notifications -------------------------------------------------------------------


class Changes:
    """A watch callback that queues what it is given."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def __call__(self, change: dict[str, Any]) -> None:
        await self.queue.put(change)

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(10):
            return await self.queue.get()


async def test_sqlite_watch_reports_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "k.sqlite"))
    await store.open()
    try:
        changes = Changes()
        stop = await store.watch(changes)
        await store.put(kernel("k1"))
        await store.delete("k1")
        await stop()
        assert changes.queue.empty()
    finally:
        await store.close()


async def test_changes_are_notified_but_activity_updates_are_not(pg_database: Database) -> None:
    store, writer = pg_database.store(), pg_database.store()
    await store.open()
    await writer.open()
    changes = Changes()
    stop = await store.watch(changes)
    try:
        await writer.put(kernel("n1", pooled=True))
        assert await changes.next() == {
            "op": "insert",
            "id": "n1",
            "state": "running",
            "owner": "alice",
            "gateway": "gw-1",
            "pooled": True,
        }
        await writer.touch({"n1": NOW + dt.timedelta(minutes=5)})
        await writer.put(kernel("n1", state="stopping"))
        # notifications arrive in commit order: had the touch notified, it would come first
        change = await changes.next()
        assert (change["op"], change["state"], change["pooled"]) == ("update", "stopping", False)
        assert await writer.take_pooled("n1", "gw-2") is None
        await writer.claim("n1", "gw-1", "gw-2")
        assert (await changes.next())["gateway"] == "gw-2"
        await writer.delete("n1")
        assert await changes.next() == {
            "op": "delete",
            "id": "n1",
            "state": "stopping",
            "owner": "alice",
            "gateway": "gw-2",
            "pooled": False,
        }
        assert changes.queue.empty()
    finally:
        await stop()
        await store.close()
        await writer.close()


async def test_a_previous_version_write_notifies_too(pg_database: Database) -> None:
    store = pg_database.store()
    await store.open()
    changes = Changes()
    stop = await store.watch(changes)
    try:
        await pg_database.v1_insert("raw-1", gateway="gw-v1")
        change = await changes.next()
        assert (change["op"], change["id"], change["gateway"], change["owner"]) == (
            "insert",
            "raw-1",
            "gw-v1",
            "bob",
        )
        await pg_database.run("UPDATE kf_kernels SET state = 'dead' WHERE id = 'raw-1'")
        assert (await changes.next())["state"] == "dead"
        await pg_database.run("DELETE FROM kf_kernels")
        assert (await changes.next())["op"] == "delete"
    finally:
        await stop()
        await store.close()


async def test_malformed_notifications_and_failing_callbacks_do_not_stop_the_watch(
    pg_database: Database,
) -> None:
    store = pg_database.store()
    await store.open()
    changes = Changes()
    calls = 0

    def flaky(change: dict[str, Any]) -> Awaitable[None]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the first change breaks the callback")
        return changes(change)

    stop = await store.watch(flaky)
    try:
        for payload in ("not json", "[1, 2]", '{"op": "drop", "id": "x"}', '{"op": "insert"}'):
            await pg_database.run("SELECT pg_notify('kf_kernels', ?)", (payload,))
        await store.put(kernel("first"))  # the callback raises on this one
        await store.put(kernel("second"))
        change = await changes.next()
        assert (change["op"], change["id"]) == ("insert", "second")
        assert calls == 2
    finally:
        await stop()
        await store.close()


async def test_the_watch_reconnects_and_asks_for_a_resync(pg_database: Database) -> None:
    store = pg_database.store()
    await store.open()
    changes = Changes()
    stop = await store.watch(changes)
    try:
        await store.put(kernel("before"))
        assert (await changes.next())["id"] == "before"
        terminated = await pg_database.run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = ? AND datname = current_database()",
            (APPLICATION_NAME,),
        )
        assert terminated == [(True,)]
        assert await changes.next() == {"op": "resync"}
        await store.put(kernel("after"))
        assert (await changes.next())["id"] == "after"
        # one connection listens (the terminated backend may take a moment to leave the list)
        async with asyncio.timeout(5):
            while await pg_database.run(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = ? AND datname = current_database()",
                (APPLICATION_NAME,),
            ) != [(1,)]:
                await asyncio.sleep(0.05)
    finally:
        await stop()
    await no_watch_connection(pg_database)  # stopped: its connection is closed
    await store.close()


async def no_watch_connection(db: Database) -> None:
    async with asyncio.timeout(5):
        while await db.run(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = ?", (APPLICATION_NAME,)
        ):
            await asyncio.sleep(0.05)


async def test_a_callback_may_stop_its_own_watch(pg_database: Database) -> None:
    store = pg_database.store()
    await store.open()
    seen: list[str] = []

    async def once(change: dict[str, Any]) -> None:
        seen.append(change["id"])
        await stop()

    stop = await store.watch(once)
    try:
        await store.put(kernel("only"))
        async with asyncio.timeout(10):
            while not seen:
                await asyncio.sleep(0.02)
        await no_watch_connection(pg_database)
        await store.put(kernel("later"))
        await asyncio.sleep(0.2)
        assert seen == ["only"]
    finally:
        await store.close()


async def test_closing_the_store_stops_its_watches(pg_database: Database) -> None:
    store = pg_database.store()
    await store.open()
    await store.watch(Changes())
    await store.close()
    await no_watch_connection(pg_database)


def test_the_v1_column_list_is_the_stores() -> None:
    assert tuple(c.strip() for c in V1_COLUMNS.split(",")) == COLUMNS
