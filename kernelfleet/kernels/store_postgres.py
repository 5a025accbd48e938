"""A PostgreSQL kernel store, for several gateways serving the same kernels.

psycopg 3 (async, the maintained PostgreSQL adapter) with one connection per call from a small
pool would be overkill for this write rate; one autocommit connection guarded by a lock serves
each gateway, and reconnects if the server went away.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from kernelfleet.kernels.store import (
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

    async def _execute(self, sql: str, params: Any = None, *, fetch: bool = False) -> Any:
        import psycopg

        async with self._lock:
            for attempt in (1, 2):
                conn = await self._connection()
                try:
                    async with conn.cursor() as cur:
                        await cur.execute(sql, params)
                        return await cur.fetchall() if fetch else None
                except psycopg.OperationalError:
                    if attempt == 2:
                        raise
                    self._conn = None
        return None

    async def open(self) -> None:
        await self._execute(SCHEMA)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def put(self, kernel: StoredKernel) -> None:
        await self._execute(
            INSERT,
            (
                kernel.id,
                kernel.name,
                kernel.owner,
                kernel.state,
                kernel.provisioner,
                kernel.created,
                kernel.last_activity,
                kernel.host,
                kernel.gateway,
                kernel.restart_count,
                kernel.pooled,
                kernel.secret,
            ),
        )

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
