"""A PostgreSQL kernel store, for several gateways serving the same kernels.

psycopg 3 (async, the maintained PostgreSQL adapter) with one connection per call from a small
pool would be overkill for this write rate; one autocommit connection guarded by a lock serves
each gateway, and reconnects if the server went away.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from kernelfleet.kernels.stores.base import (
    COLUMNS,
    SELECT,
    KernelStore,
    StoredKernel,
    insert_sql,
    to_utc,
)

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

SCHEMA = """
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


def _kernel(row: tuple[Any, ...]) -> StoredKernel:
    values = dict(zip(COLUMNS, row, strict=True))
    values["created"] = to_utc(values["created"])
    values["last_activity"] = to_utc(values["last_activity"])
    return StoredKernel(**values)


def _params(kernel: StoredKernel) -> tuple[Any, ...]:
    return tuple(getattr(kernel, column) for column in COLUMNS)


class PostgresStore(KernelStore):
    shared = True

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        return self._conn

    async def _with_connection(self, work: Any) -> Any:
        """Run ``await work(conn)`` on our connection, reconnecting once if it was lost."""
        import psycopg

        async with self._lock:
            for attempt in (1, 2):
                conn = await self._connection()
                try:
                    return await work(conn)
                except psycopg.OperationalError:
                    if attempt == 2:
                        raise
                    self._conn = None
        return None

    async def _execute(self, sql: str, params: Any = None, *, fetch: bool = False) -> Any:
        async def work(conn: Any) -> Any:
            async with conn.cursor() as cur:
                await cur.execute(sql, params)
                return await cur.fetchall() if fetch else None

        return await self._with_connection(work)

    async def open(self) -> None:
        await self._execute(SCHEMA)

    async def close(self) -> None:
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
        return _kernel(rows[0]) if rows else None

    async def delete(self, kernel_id: str) -> None:
        await self._execute("DELETE FROM kf_kernels WHERE id = %s", (kernel_id,))

    async def all(self) -> list[StoredKernel]:
        rows = await self._execute(SELECT, fetch=True)
        return [_kernel(r) for r in rows or []]

    async def touch(self, activity: dict[str, dt.datetime]) -> None:
        if not activity:
            return
        async with self._lock:
            conn = await self._connection()
            async with conn.cursor() as cur:
                await cur.executemany(
                    "UPDATE kf_kernels SET last_activity = %s WHERE id = %s",
                    [(when, kid) for kid, when in activity.items()],
                )
