"""The default kernel store: SQLite in the data directory, driven from one worker thread.

sqlite3 is blocking, so every call runs on a dedicated single-thread executor (never on the
event loop); WAL mode and ``synchronous=NORMAL`` make each write durable against a gateway
crash at a fraction of a millisecond.

The schema is migrated on :meth:`SQLiteStore.open` (see :mod:`.migrations`), each step in a
``BEGIN IMMEDIATE`` transaction, so processes opening one file at once apply it once. Replica
leases, take-overs and the compare-and-set steps work as on PostgreSQL (times from SQLite's
clock, atomic among every process using the file); :meth:`~SQLiteStore.watch` reports nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kernelfleet.kernels.stores.base import (
    RETURNING,
    SCHEMA_VERSION,
    SELECT,
    KernelStore,
    ReplicaInfo,
    StoredKernel,
    insert_sql,
    kernel_from_row,
    replica_from_row,
)
from kernelfleet.kernels.stores.migrations import (
    KF_SCHEMA,
    SQLITE_NOW,
    AppliedStep,
    next_action,
    plan,
)

T = TypeVar("T")

SELECT_ONE = SELECT + " WHERE id = ?"
INSERT = insert_sql("?", "INSERT OR REPLACE")

#: Seconds since a replica's heartbeat, by SQLite's clock.
AGE = "(julianday('now') - julianday(heartbeat)) * 86400.0"
HEARTBEAT = (
    "INSERT INTO kf_replicas (id, url, version, schema_version, started, heartbeat)"  # noqa: S608
    f" VALUES (?, ?, ?, ?, {SQLITE_NOW}, {SQLITE_NOW})"
    " ON CONFLICT (id) DO UPDATE SET url = excluded.url, version = excluded.version,"
    " schema_version = excluded.schema_version, heartbeat = excluded.heartbeat"
)
REPLICAS = (
    f"SELECT id, url, version, schema_version, started, heartbeat, {AGE}"  # noqa: S608
    " FROM kf_replicas ORDER BY id"
)
CLAIM = "UPDATE kf_kernels SET gateway = ? WHERE id = ? AND gateway = ?" + RETURNING  # noqa: S608
TAKE_POOLED = (
    "UPDATE kf_kernels SET pooled = 0, gateway = ? WHERE id = ? AND pooled"  # noqa: S608
    + RETURNING
)
TAKE_OVER = "UPDATE kf_kernels SET gateway = ? WHERE gateway = ?" + RETURNING  # noqa: S608


def _row(kernel: StoredKernel) -> tuple[Any, ...]:
    return (
        kernel.id,
        kernel.name,
        kernel.owner,
        kernel.state,
        kernel.provisioner,
        kernel.created.isoformat(),
        kernel.last_activity.isoformat(),
        kernel.host,
        kernel.gateway,
        kernel.restart_count,
        int(kernel.pooled),
        kernel.secret,
    )


def in_transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """``work(db)`` in one ``BEGIN IMMEDIATE`` transaction: it holds the database's write lock
    from the start, so concurrent writers (threads or processes) run one after the other."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _migrate_one(db: sqlite3.Connection) -> bool:
    """One migration step (within a transaction); False once the schema is up to date."""
    tables = {
        name
        for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            " AND name IN ('kf_schema', 'kf_kernels')"
        )
    }
    if "kf_schema" not in tables:
        db.execute(KF_SCHEMA["sqlite"])
    applied = [
        AppliedStep(version, description, bool(additive))
        for version, description, additive in db.execute(
            "SELECT version, description, additive FROM kf_schema"
        )
    ]
    action = next_action(plan(applied, "kf_kernels" in tables))
    if action is None:
        return False
    step, run_sql = action
    if run_sql:
        for statement in step.sqlite:
            db.execute(statement)
    db.execute(
        "INSERT INTO kf_schema (version, description, additive) VALUES (?, ?, ?)",
        (step.version, step.description, int(step.additive)),
    )
    return True


def migrate(db: sqlite3.Connection) -> None:
    """Bring the database to :data:`SCHEMA_VERSION`, one transaction per migration; raises
    :class:`~kernelfleet.kernels.stores.migrations.SchemaVersionError` if it is newer and not
    backward compatible."""
    while in_transaction(db, _migrate_one):
        pass


def enable_wal(db: sqlite3.Connection, patience: float = 5.0) -> None:
    """Switch the file to WAL mode. SQLite answers "database is locked" at once, without
    waiting for the busy timeout, while another connection switches a new file: retry then."""
    deadline = time.monotonic() + patience
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SQLiteStore(KernelStore):
    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kf-sqlite")

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        db = self._db
        if db is None:
            raise RuntimeError("the kernel store is not open")
        return await loop.run_in_executor(self._executor, fn, db)

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                os.chmod(self.path, 0o600)
                db.execute("PRAGMA busy_timeout=5000")
                enable_wal(db)
                db.execute("PRAGMA synchronous=NORMAL")
                migrate(db)
            except BaseException:
                db.close()
                raise
            return db

        loop = asyncio.get_running_loop()
        self._db = await loop.run_in_executor(self._executor, connect)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        self._executor.shutdown(wait=False)

    async def put(self, kernel: StoredKernel) -> None:
        row = _row(kernel)
        await self._run(lambda db: db.execute(INSERT, row))

    async def get(self, kernel_id: str) -> StoredKernel | None:
        rows = await self._run(lambda db: db.execute(SELECT_ONE, (kernel_id,)).fetchall())
        return kernel_from_row(rows[0]) if rows else None

    async def delete(self, kernel_id: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM kf_kernels WHERE id = ?", (kernel_id,)))

    async def all(self) -> list[StoredKernel]:
        rows = await self._run(lambda db: db.execute(SELECT).fetchall())
        return [kernel_from_row(r) for r in rows]

    async def touch(self, activity: dict[str, dt.datetime]) -> None:
        if not activity:
            return
        pairs = [(when.isoformat(), kid) for kid, when in activity.items()]
        await self._run(
            lambda db: db.executemany("UPDATE kf_kernels SET last_activity = ? WHERE id = ?", pairs)
        )

    async def schema_version(self) -> int:
        sql = "SELECT max(version) FROM kf_schema"
        rows = await self._run(lambda db: db.execute(sql).fetchall())
        return int(rows[0][0] or 0)

    async def heartbeat(self, replica_id: str, url: str, version: str) -> None:
        params = (replica_id, url, version, SCHEMA_VERSION)
        await self._run(lambda db: db.execute(HEARTBEAT, params))

    async def replicas(self) -> list[ReplicaInfo]:
        rows = await self._run(lambda db: db.execute(REPLICAS).fetchall())
        return [replica_from_row(r) for r in rows]

    async def forget_replica(self, replica_id: str) -> None:
        sql = "DELETE FROM kf_replicas WHERE id = ?"
        await self._run(lambda db: db.execute(sql, (replica_id,)))

    async def take_over(
        self, dead_replica_id: str, new_replica_id: str, *, older_than: float
    ) -> list[StoredKernel]:
        def work(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            lease = db.execute(
                f"SELECT {AGE} FROM kf_replicas WHERE id = ?",  # noqa: S608
                (dead_replica_id,),
            ).fetchone()
            if lease is not None and lease[0] <= older_than:
                return []
            db.execute("DELETE FROM kf_replicas WHERE id = ?", (dead_replica_id,))
            return db.execute(TAKE_OVER, (new_replica_id, dead_replica_id)).fetchall()

        rows = await self._run(lambda db: in_transaction(db, work))
        return [kernel_from_row(r) for r in rows]

    async def claim(
        self, kernel_id: str, expected_gateway: str, new_gateway: str
    ) -> StoredKernel | None:
        params = (new_gateway, kernel_id, expected_gateway)
        rows = await self._run(lambda db: db.execute(CLAIM, params).fetchall())
        return kernel_from_row(rows[0]) if rows else None

    async def take_pooled(self, kernel_id: str, gateway: str) -> StoredKernel | None:
        params = (gateway, kernel_id)
        rows = await self._run(lambda db: db.execute(TAKE_POOLED, params).fetchall())
        return kernel_from_row(rows[0]) if rows else None
