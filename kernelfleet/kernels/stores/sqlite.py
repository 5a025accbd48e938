"""The default kernel store: SQLite in the data directory, driven from one worker thread.

sqlite3 is blocking, so every call runs on a dedicated single-thread executor (never on the
event loop); WAL mode and ``synchronous=NORMAL`` make each write durable against a gateway
crash at a fraction of a millisecond.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import os
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from kernelfleet.kernels.stores.base import (
    COLUMNS,
    SELECT,
    KernelStore,
    StoredKernel,
    insert_sql,
    to_utc,
)

T = TypeVar("T")

SELECT_ONE = SELECT + " WHERE id = ?"
INSERT = insert_sql("?", "INSERT OR REPLACE")

SCHEMA = """
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


def _kernel(row: tuple[Any, ...]) -> StoredKernel:
    values = dict(zip(COLUMNS, row, strict=True))
    values["created"] = to_utc(values["created"])
    values["last_activity"] = to_utc(values["last_activity"])
    values["pooled"] = bool(values["pooled"])
    return StoredKernel(**values)


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
            os.chmod(self.path, 0o600)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.execute(SCHEMA)
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
        return _kernel(rows[0]) if rows else None

    async def delete(self, kernel_id: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM kf_kernels WHERE id = ?", (kernel_id,)))

    async def all(self) -> list[StoredKernel]:
        rows = await self._run(lambda db: db.execute(SELECT).fetchall())
        return [_kernel(r) for r in rows]

    async def touch(self, activity: dict[str, dt.datetime]) -> None:
        if not activity:
            return
        pairs = [(when.isoformat(), kid) for kid, when in activity.items()]
        await self._run(
            lambda db: db.executemany("UPDATE kf_kernels SET last_activity = ? WHERE id = ?", pairs)
        )
