"""The dashboard's live feed: server-sent events with server-side diffs, never a re-polled list.

One :class:`LiveFeed` per dashboard. While at least one browser listens, a task compares the
kernels' rows (:func:`~kernelfleet.dashboard.views.kernel_row`) with the last ones every
``live_interval`` seconds, or at once when the registry's event bus tells of a start, stop,
restart, interrupt, cull or death, and sends each listener only what changed:

- ``snapshot`` (first message of a stream, and after a listener fell behind): every row and
  the overview;
- ``kernel``: one new or changed row; ``gone``: the id of a kernel no longer listed;
- ``overview``: counts by state, spec and host, host health, warm pools and recent failed
  starts, whenever any of it changed (host health is checked every ``host_check_interval``);
- ``event``: a kernel event as it happens (the pages show notices).

Listeners each have a bounded queue; one that falls behind (a stalled connection) is not
waited for: its queue is emptied and its next message is a fresh snapshot. The bus
subscription is kept for the dashboard's life (the overview lists recent failures even if
nobody was watching when they happened).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kernelfleet.dashboard import views
from kernelfleet.dashboard.hosts import HostHealth
from kernelfleet.kernels.events import KernelEvent
from kernelfleet.kernels.registry import KernelRegistry

log = logging.getLogger("kernelfleet.dashboard")

#: Messages a listener may have waiting before it must start again from a snapshot.
QUEUE_LIMIT = 500
#: Seconds between two readings of the hosts' state when active checks are off.
PASSIVE_HOST_PERIOD = 2.0

#: Checks the hosts: probe (try to reach hosts that are not connected) or only read.
HostChecker = Callable[[bool], Awaitable[list[HostHealth]]]


def frame(kind: str, data: Any) -> str:
    """One server-sent event. JSON has no raw newline, so ``data`` is one line."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class Listener:
    """One open stream's queue of frames."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.behind = False
        self.closed = asyncio.Event()

    def put(self, text: str) -> None:
        if self.behind:
            return
        if self.queue.qsize() >= QUEUE_LIMIT:
            self.behind = True  # the feed sends it a snapshot instead
            while not self.queue.empty():
                self.queue.get_nowait()
            return
        self.queue.put_nowait(text)

    async def next(self, wait: float) -> str | None:
        """The next frame, or None after *wait* s (time for a keep-alive) or once closed and
        every frame queued before was taken."""
        if not self.queue.empty():
            return self.queue.get_nowait()
        if self.closed.is_set():
            return None
        getter = asyncio.ensure_future(self.queue.get())
        closer = asyncio.ensure_future(self.closed.wait())
        try:
            done, _ = await asyncio.wait(
                {getter, closer}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            closer.cancel()
            if not getter.done():
                getter.cancel()
        if getter in done and not getter.cancelled():
            return getter.result()
        return None

    def close(self) -> None:
        self.closed.set()


class LiveFeed:
    """See the module docstring."""

    def __init__(
        self,
        registry: KernelRegistry,
        check_hosts: HostChecker,
        *,
        interval: float,
        host_interval: float,
        failures_kept: int,
    ) -> None:
        self.registry = registry
        self._check_hosts = check_hosts
        self.interval = max(interval, 0.05)
        self.host_interval = host_interval
        self.failures: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=max(failures_kept, 1)
        )
        self.hosts: list[dict[str, Any]] = []
        self._hosts_at = -1e9
        self._listeners: set[Listener] = set()
        self._rows: dict[str, dict[str, Any]] = {}
        self._overview: dict[str, Any] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._host_task: asyncio.Task[None] | None = None
        self._unsubscribe = registry.events.subscribe(self.on_event)

    # -- what is shown ------------------------------------------------------------------------

    def rows(self) -> dict[str, dict[str, Any]]:
        return {
            r.id: views.kernel_row(r, views.kernel_rss(r)) for r in self.registry.records.values()
        }

    async def overview(self, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
        pools = []
        pool = self.registry.pool
        if pool is not None:
            for name, entry in sorted((await self.registry.catalog.all()).items()):
                size = await pool.size_of(entry)
                if size > 0:
                    members = [r for r in self.registry.records.values() if r.pooled]
                    mine = [r for r in members if r.name == name]
                    pools.append(views.pool_row(name, size, mine))
        return {
            **views.counts(rows.values()),
            "total": len(rows),
            "hosts": self.hosts,
            "pools": pools,
            "failures": list(reversed(self.failures)),
        }

    def _hosts_due(self) -> bool:
        period = self.host_interval if self.host_interval > 0 else PASSIVE_HOST_PERIOD
        return time.monotonic() - self._hosts_at >= period

    async def refresh_hosts(self, *, probe: bool) -> None:
        """Check the hosts now; with *probe*, also try those not connected."""
        self._hosts_at = time.monotonic()
        try:
            hosts = [h.as_json() for h in await self._check_hosts(probe)]
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("host health check failed")
            return
        if hosts != self.hosts:
            self.hosts = hosts
            self._wake.set()

    def _start_host_check(self) -> None:
        """Check the hosts in the background: a probe of a host that does not answer must not
        hold up the kernels' updates."""
        running = self._host_task
        if (running is None or running.done()) and self._hosts_due():
            self._host_task = asyncio.create_task(
                self.refresh_hosts(probe=self.host_interval > 0), name="dashboard-hosts"
            )

    # -- events -------------------------------------------------------------------------------

    def on_event(self, event: KernelEvent) -> None:
        failure = views.failure_row(event)
        if failure is not None:
            self.failures.append(failure)
        if self._listeners:
            text = frame("event", views.event_row(event))
            for listener in list(self._listeners):
                listener.put(text)
            self._wake.set()

    # -- listeners ----------------------------------------------------------------------------

    async def subscribe(self) -> Listener:
        """A new listener, whose first message is a snapshot."""
        if self._hosts_at < 0:
            await self.refresh_hosts(probe=False)  # what is known now; probes come later
        listener = Listener()
        rows = self.rows()
        overview = await self.overview(rows)
        self._send_changes(rows, overview)  # the others catch up to the same state first
        listener.put(frame("snapshot", {"kernels": list(rows.values()), "overview": overview}))
        self._listeners.add(listener)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dashboard-feed")
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        listener.close()
        self._listeners.discard(listener)

    def _send_changes(self, rows: dict[str, dict[str, Any]], overview: dict[str, Any]) -> None:
        changed, gone = views.diff_rows(self._rows, rows)
        self._rows = rows
        texts = [frame("kernel", row) for row in changed] + [frame("gone", kid) for kid in gone]
        if overview != self._overview:
            self._overview = overview
            texts.append(frame("overview", overview))
        snapshot: str | None = None
        for listener in list(self._listeners):
            if listener.behind:
                listener.behind = False
                snapshot = snapshot or frame(
                    "snapshot", {"kernels": list(rows.values()), "overview": overview}
                )
                listener.put(snapshot)
                continue
            for text in texts:
                listener.put(text)

    async def _run(self) -> None:
        try:
            while self._listeners:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await self._wake.wait()
                self._wake.clear()
                if not self._listeners:
                    break
                self._start_host_check()
                rows = self.rows()
                self._send_changes(rows, await self.overview(rows))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the dashboard's live feed stopped")
        finally:
            self._task = None

    async def close(self) -> None:
        self._unsubscribe()
        for listener in list(self._listeners):
            self.unsubscribe(listener)
        for task in (self._task, self._host_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._host_task = None
