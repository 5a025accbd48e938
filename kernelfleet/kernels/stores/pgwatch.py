"""Watching ``kf_kernels`` change on PostgreSQL: a dedicated connection doing ``LISTEN``.

The schema's trigger (migration 2 in :mod:`.migrations`) notifies channel ``kf_kernels`` on
commit of every insert, delete, and update that changes more than ``last_activity``, with a JSON
payload ``{"op", "id", "state", "owner", "gateway", "pooled"}``. :class:`ChangeListener` hands
each decoded payload to a callback, in the order PostgreSQL delivered them.

Crash rules:
- The connection is lost (server restart, ``pg_terminate_backend``, network): the listener
  reconnects with exponential backoff (0.1 s doubling to 5 s, jittered) for as long as it runs,
  and after each reconnect calls the callback with ``{"op": "resync"}``: notifications sent while
  it was away are lost, so the caller should re-read the store.
- A half-open connection (no traffic, no error) is found by a ``SELECT 1`` whenever nothing
  arrived for ``ping_interval`` seconds.
- A payload that is not what the trigger sends (anyone who may connect can ``NOTIFY kf_kernels``)
  is logged and skipped. A callback that raises is logged; the next change is delivered anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
from typing import Any

from kernelfleet.kernels.stores.base import ChangeCallback

log = logging.getLogger("kernelfleet.store")

#: The channel the trigger notifies.
CHANNEL = "kf_kernels"
#: What the listener's connection calls itself in ``pg_stat_activity``.
APPLICATION_NAME = "kernelfleet-watch"

_OPS = frozenset({"insert", "update", "delete"})
_TEXT_FIELDS = ("state", "owner", "gateway")


def decode_change(payload: str) -> dict[str, Any] | None:
    """The change a ``kf_kernels`` notification payload describes, or None if it is not one
    the trigger sends: ``{"op": "insert"|"update"|"delete", "id": str, "state": str | None,
    "owner": str | None, "gateway": str | None, "pooled": bool | None}`` (unknown keys dropped).
    """
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    op, kernel_id = value.get("op"), value.get("id")
    if not isinstance(op, str) or op not in _OPS or not isinstance(kernel_id, str):
        return None
    change: dict[str, Any] = {"op": op, "id": kernel_id}
    for key in _TEXT_FIELDS:
        field = value.get(key)
        if field is not None and not isinstance(field, str):
            return None
        change[key] = field
    pooled = value.get("pooled")
    if pooled is not None and not isinstance(pooled, bool):
        return None
    change["pooled"] = pooled
    return change


class ChangeListener:
    """``LISTEN kf_kernels`` on a connection of its own, calling *callback* with each change.

    :meth:`start` returns once the first ``LISTEN`` is in force (a change committed after it
    returns is delivered) and raises if the database cannot be reached then; afterwards a lost
    connection is retried until :meth:`stop`. The callback runs on the listener's task, one
    change at a time: a slow callback delays the next change, it never loses it.
    """

    def __init__(
        self,
        url: str,
        callback: ChangeCallback,
        *,
        ping_interval: float = 30.0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        self.url = url
        self.callback = callback
        self.ping_interval = ping_interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await self._connect()
        self._task = asyncio.create_task(self._run(), name="kf-store-watch")

    async def stop(self) -> None:
        """Stop listening and close the connection (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            if task is asyncio.current_task():
                return  # called by the callback: the task closes the connection as it ends
            await asyncio.wait([task])
        await self._close()

    async def _connect(self) -> Any:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, application_name=APPLICATION_NAME
        )
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _run(self) -> None:
        try:
            await self._listen_forever()
        finally:
            await self._close()

    async def _listen_forever(self) -> None:
        import psycopg

        delay = self.min_backoff
        while True:
            try:
                if self._conn is None:
                    self._conn = await self._connect()
                    log.info("kernel store watch: reconnected")
                    delay = self.min_backoff
                    await self._deliver({"op": "resync"})
                await self._listen(self._conn)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError, TimeoutError) as exc:
                pause = delay * random.uniform(0.5, 1.0)
                log.warning(
                    "kernel store watch: connection lost (%s); reconnecting in %.1f s",
                    str(exc).strip() or type(exc).__name__,
                    pause,
                )
                await self._close()
                await asyncio.sleep(pause)
                delay = min(self.max_backoff, delay * 2)

    async def _listen(self, conn: Any) -> None:
        while True:
            async with contextlib.aclosing(conn.notifies(timeout=self.ping_interval)) as notes:
                async for note in notes:
                    if note.channel != CHANNEL:
                        continue
                    change = decode_change(note.payload)
                    if change is None:
                        log.warning(
                            "kernel store watch: ignored a malformed %s notification from "
                            "backend %s: %.200r",
                            CHANNEL,
                            note.pid,
                            note.payload,
                        )
                        continue
                    await self._deliver(change)
            # Quiet for ping_interval: make sure the connection is still there (a half-open
            # one would not answer before TCP gives up, minutes later).
            async with asyncio.timeout(self.ping_interval):
                await conn.execute("SELECT 1")

    async def _deliver(self, change: dict[str, Any]) -> None:
        try:
            result = self.callback(change)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("kernel store watch: the callback failed on %s", change)
