"""A PostgreSQL kernel store, for several gateways serving the same kernels.

psycopg 3 (async, the maintained PostgreSQL adapter) with one connection per call from a small
pool would be overkill for this write rate; one autocommit connection guarded by a lock serves
each gateway, and reconnects if the server went away. :meth:`PostgresStore.watch` adds one
connection per watch (:mod:`.pgwatch`).

The schema is migrated on :meth:`PostgresStore.open` (see :mod:`.migrations`), each step in one
transaction under an advisory lock, so gateways starting together apply it once.

Crash rules for the compare-and-set steps (:meth:`~PostgresStore.take_over`,
:meth:`~PostgresStore.claim`, :meth:`~PostgresStore.take_pooled`): each is one transaction. If
the connection is lost before its ``COMMIT`` was sent, nothing happened and it is retried once on
a new connection; if it is lost during the ``COMMIT``, the outcome is unknown and
``psycopg.OperationalError`` propagates: re-read the rows (:meth:`~PostgresStore.get`) to learn
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from kernelfleet.kernels.stores.base import (
    COLUMNS,
    RETURNING,
    SCHEMA_VERSION,
    SELECT,
    ChangeCallback,
    KernelStore,
    LeaseHeldError,
    ReplicaInfo,
    StopWatching,
    StoredKernel,
    insert_sql,
    kernel_from_row,
    replica_from_row,
)
from kernelfleet.kernels.stores.migrations import KF_SCHEMA, AppliedStep, next_action, plan
from kernelfleet.kernels.stores.pgwatch import ChangeListener

T = TypeVar("T")

SELECT_ONE = SELECT + " WHERE id = %s"
INSERT = (
    insert_sql("%s")
    + " ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "id")
)

#: Kernels that count against the limits: every row not on its way out.
COUNT_LIVE = (
    "SELECT count(*), count(*) FILTER (WHERE owner = %s) FROM kf_kernels"
    " WHERE state NOT IN ('stopping', 'dead') AND id <> %s"
)
#: pg_advisory_xact_lock key serialising limit checks across gateways ("kfli").
LIMITS_LOCK = 0x6B666C69
#: pg_advisory_xact_lock key serialising schema migrations across gateways ("kfsm").
MIGRATION_LOCK = 0x6B66736D
#: First key of the pg_advisory_xact_lock(int, int) serialising take-overs of one replica
#: (the second is the hash of its id) ("kftv").
TAKEOVER_LOCK = 0x6B667476

#: First key of the session pg_advisory_lock(int, int) that is a replica's lease (the second
#: is the hash of its id) ("kfls").
LEASE_LOCK = 0x6B666C73
LEASE_KEY = "%s, hashtext(%s)"
#: Which of the replica ids (a text[]) have their lease held by a live lease session.
LEASES_HELD = (
    "SELECT id FROM unnest(%s::text[]) AS id WHERE EXISTS ("
    " SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s"
    " AND l.objid::bigint = (hashtext(id)::bigint & 4294967295) AND a.application_name = %s)"
)
#: What the lease's and the death watches' connections call themselves in pg_stat_activity.
LEASE_APPLICATION = "kernelfleet-lease"
AWAIT_APPLICATION = "kernelfleet-await"

#: Seconds since a replica's heartbeat, by the database's clock.
AGE = "extract(epoch FROM now() - heartbeat)::float8"
HEARTBEAT = (
    "INSERT INTO kf_replicas (id, url, version, schema_version, started, heartbeat)"
    " VALUES (%s, %s, %s, %s, now(), now())"
    " ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, version = EXCLUDED.version,"
    " schema_version = EXCLUDED.schema_version, heartbeat = EXCLUDED.heartbeat"
)
REPLICAS = (
    f"SELECT id, url, version, schema_version, started, heartbeat, {AGE}"  # noqa: S608
    " FROM kf_replicas ORDER BY id"
)
LEASE = f"SELECT {AGE} FROM kf_replicas WHERE id = %s FOR UPDATE"  # noqa: S608
CLAIM = "UPDATE kf_kernels SET gateway = %s WHERE id = %s AND gateway = %s" + RETURNING  # noqa: S608
TAKE_POOLED = (
    "UPDATE kf_kernels SET pooled = FALSE, gateway = %s WHERE id = %s AND pooled"  # noqa: S608
    + RETURNING
)
TAKE_OVER = "UPDATE kf_kernels SET gateway = %s WHERE gateway = %s" + RETURNING  # noqa: S608


def _params(kernel: StoredKernel) -> tuple[Any, ...]:
    return tuple(getattr(kernel, column) for column in COLUMNS)


async def _migrate_one(cur: Any) -> bool:
    """One migration step (within a transaction); False once the schema is up to date."""
    await cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    await cur.execute(
        "SELECT to_regclass('kf_schema') IS NOT NULL, to_regclass('kf_kernels') IS NOT NULL"
    )
    has_schema, has_kernels = await cur.fetchone()
    if not has_schema:
        await cur.execute(KF_SCHEMA["postgres"])
    await cur.execute("SELECT version, description, additive FROM kf_schema")
    applied = [AppliedStep(v, d, bool(a)) for v, d, a in await cur.fetchall()]
    action = next_action(plan(applied, bool(has_kernels)))
    if action is None:
        return False
    step, run_sql = action
    if run_sql:
        for statement in step.postgres:
            await cur.execute(statement)
    await cur.execute(
        "INSERT INTO kf_schema (version, description, additive) VALUES (%s, %s, %s)",
        (step.version, step.description, step.additive),
    )
    return True


class PostgresStore(KernelStore):
    shared = True

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._listeners: set[ChangeListener] = set()
        self._lease: tuple[str, Any] | None = None  # (replica id, its connection)

    async def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        return self._conn

    async def _discard(self, conn: Any) -> None:
        """Drop *conn* after an OperationalError (closing it: the error may have been the
        server's, on a connection that still works)."""
        if self._conn is conn:
            self._conn = None
        with contextlib.suppress(Exception):
            await conn.close()

    async def _with_connection(self, work: Any) -> Any:
        """Run ``await work(conn)`` on our connection, reconnecting once if it was lost."""
        import psycopg

        async with self._lock:
            for attempt in (1, 2):
                conn = await self._connection()
                try:
                    return await work(conn)
                except psycopg.OperationalError:
                    await self._discard(conn)
                    if attempt == 2:
                        raise
        return None

    async def _transaction(self, body: Callable[[Any], Awaitable[T]]) -> T:
        """``await body(cursor)`` in one transaction; retried once on a new connection if the
        connection was lost before the ``COMMIT``, never when it was lost during it."""
        import psycopg

        async with self._lock:
            attempt = 0
            while True:
                attempt += 1
                conn = await self._connection()
                committing = False
                try:
                    async with conn.transaction(), conn.cursor() as cur:
                        result = await body(cur)
                        committing = True
                    return result
                except psycopg.OperationalError:
                    await self._discard(conn)
                    if committing or attempt == 2:
                        raise

    async def _execute(self, sql: str, params: Any = None, *, fetch: bool = False) -> Any:
        async def work(conn: Any) -> Any:
            async with conn.cursor() as cur:
                await cur.execute(sql, params)
                return await cur.fetchall() if fetch else None

        return await self._with_connection(work)

    async def open(self) -> None:
        async def migrate(conn: Any) -> None:
            more = True
            while more:
                async with conn.transaction(), conn.cursor() as cur:
                    more = await _migrate_one(cur)

        await self._with_connection(migrate)

    async def close(self) -> None:
        for listener in list(self._listeners):
            await listener.stop()
        self._listeners.clear()
        await self._release_lease()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def put(self, kernel: StoredKernel) -> None:
        await self._execute(INSERT, _params(kernel))

    async def reserve(self, kernel: StoredKernel, max_total: int, max_per_user: int) -> str | None:
        if not max_total and not (max_per_user and kernel.owner):
            await self.put(kernel)
            return None

        async def work(conn: Any) -> str | None:
            # One transaction, serialised across gateways by an advisory lock: two gateways
            # starting kernels at once cannot both take the last slot.
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute("SELECT pg_advisory_xact_lock(%s)", (LIMITS_LOCK,))
                await cur.execute(COUNT_LIVE, (kernel.owner, kernel.id))
                total, mine = await cur.fetchone()
                if max_total and total >= max_total:
                    return "total"
                if max_per_user and kernel.owner and mine >= max_per_user:
                    return "user"
                await cur.execute(INSERT, _params(kernel))
                return None

        result: str | None = await self._with_connection(work)
        return result

    async def get(self, kernel_id: str) -> StoredKernel | None:
        rows = await self._execute(SELECT_ONE, (kernel_id,), fetch=True)
        return kernel_from_row(rows[0]) if rows else None

    async def delete(self, kernel_id: str) -> None:
        await self._execute("DELETE FROM kf_kernels WHERE id = %s", (kernel_id,))

    async def all(self) -> list[StoredKernel]:
        rows = await self._execute(SELECT, fetch=True)
        return [kernel_from_row(r) for r in rows or []]

    async def touch(self, activity: dict[str, dt.datetime]) -> None:
        if not activity:
            return
        async with self._lock:
            conn = await self._connection()
            async with conn.cursor() as cur:
                # One transaction (psycopg pipelines the batch): rows in id order, as every
                # replica does, so two replicas touching the same kernels cannot deadlock;
                # activity only moves forward, whichever replica saw it.
                await cur.executemany(
                    "UPDATE kf_kernels SET last_activity = GREATEST(last_activity, %s)"
                    " WHERE id = %s",
                    [(activity[kid], kid) for kid in sorted(activity)],
                )

    async def schema_version(self) -> int:
        rows = await self._execute("SELECT max(version) FROM kf_schema", fetch=True)
        return int(rows[0][0] or 0)

    async def heartbeat(self, replica_id: str, url: str, version: str) -> None:
        await self._execute(HEARTBEAT, (replica_id, url, version, SCHEMA_VERSION))

    async def _connect_aside(self, application_name: str) -> Any:
        """A connection of its own (not the store's shared one), for a lock held or awaited."""
        import psycopg

        return await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, application_name=application_name
        )

    async def hold_lease(self, replica_id: str, *, wait: float = 10.0) -> None:
        # A session advisory lock on a connection of its own: the server releases it the
        # moment the session ends, however the process dies.
        if self._lease is not None:
            held, conn = self._lease
            if held == replica_id and not conn.closed:
                return
            await self._release_lease()
        conn = await self._connect_aside(LEASE_APPLICATION)
        try:
            deadline = asyncio.get_running_loop().time() + wait
            while True:
                cur = await conn.execute(
                    f"SELECT pg_try_advisory_lock({LEASE_KEY})", (LEASE_LOCK, replica_id)
                )
                (got,) = await cur.fetchone()
                if got:
                    break
                if asyncio.get_running_loop().time() >= deadline:
                    raise LeaseHeldError(
                        f"Another live database session holds the lease of gateway replica "
                        f"{replica_id!r}: another gateway uses the same id, or a previous "
                        f"process of this one still runs. Stop it or give this gateway "
                        f"another id."
                    )
                await asyncio.sleep(0.2)
        except BaseException:
            await conn.close()
            raise
        self._lease = (replica_id, conn)

    async def _release_lease(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            with contextlib.suppress(Exception):
                await lease[1].close()

    async def await_death(self, replica_id: str) -> None:
        # Wait for the lease's lock on a connection of its own (a blocking query), then let
        # go of it at once: a restarted replica takes its lease again.
        conn = await self._connect_aside(AWAIT_APPLICATION)
        try:
            await conn.execute(f"SELECT pg_advisory_lock({LEASE_KEY})", (LEASE_LOCK, replica_id))
            await conn.execute(f"SELECT pg_advisory_unlock({LEASE_KEY})", (LEASE_LOCK, replica_id))
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def leases_held(self, replica_ids: list[str]) -> set[str]:
        # Granted lease locks of lease sessions only: a peer's await_death holds the lock for
        # a moment after the holder died, and must not count.
        rows = await self._execute(
            LEASES_HELD, (replica_ids, LEASE_LOCK, LEASE_APPLICATION), fetch=True
        )
        return {str(r[0]) for r in rows or []}

    async def replicas(self) -> list[ReplicaInfo]:
        rows = await self._execute(REPLICAS, fetch=True)
        return [replica_from_row(r) for r in rows or []]

    async def forget_replica(self, replica_id: str) -> None:
        await self._execute("DELETE FROM kf_replicas WHERE id = %s", (replica_id,))

    async def take_over(
        self, dead_replica_id: str, new_replica_id: str, *, older_than: float
    ) -> list[StoredKernel]:
        async def body(cur: Any) -> list[tuple[Any, ...]]:
            # Take-overs of one replica run one after the other, so one caller takes all its
            # rows; the lease row is locked against a late heartbeat.
            await cur.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (TAKEOVER_LOCK, dead_replica_id)
            )
            await cur.execute(LEASE, (dead_replica_id,))
            lease = await cur.fetchone()
            if lease is not None and lease[0] <= older_than:
                return []
            await cur.execute("DELETE FROM kf_replicas WHERE id = %s", (dead_replica_id,))
            await cur.execute(TAKE_OVER, (new_replica_id, dead_replica_id))
            rows: list[tuple[Any, ...]] = await cur.fetchall()
            return rows

        return [kernel_from_row(r) for r in await self._transaction(body)]

    async def claim(
        self, kernel_id: str, expected_gateway: str, new_gateway: str
    ) -> StoredKernel | None:
        return await self._update_one(CLAIM, (new_gateway, kernel_id, expected_gateway))

    async def take_pooled(self, kernel_id: str, gateway: str) -> StoredKernel | None:
        return await self._update_one(TAKE_POOLED, (gateway, kernel_id))

    async def _update_one(self, sql: str, params: tuple[Any, ...]) -> StoredKernel | None:
        async def body(cur: Any) -> tuple[Any, ...] | None:
            await cur.execute(sql, params)
            row: tuple[Any, ...] | None = await cur.fetchone()
            return row

        row = await self._transaction(body)
        return kernel_from_row(row) if row is not None else None

    async def watch(self, callback: ChangeCallback) -> StopWatching:
        listener = ChangeListener(self.url, callback)
        await listener.start()
        self._listeners.add(listener)

        async def stop() -> None:
            self._listeners.discard(listener)
            await listener.stop()

        return stop
