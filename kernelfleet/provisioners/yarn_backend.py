"""The YARN backend: one per cluster, watching every kernel's application with one query.

:class:`YarnBackend` holds the cluster's REST client (:mod:`kernelfleet.transport.yarn_rest`:
the active ResourceManager found by HA state and followed through failovers) and one loop that
asks the RM for every live application tagged ``kernelfleet`` each ``poll_interval`` (0.5 s
while a kernel starts or stops), and feeds each kernel's :class:`AppWatch`. Kills the RM could
not take are retried on the next ticks; the ``spark-submit`` processes of launches are tracked
so the backend's close waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from kernelfleet.provisioners.base import Backend, KernelfleetProvisioner
from kernelfleet.transport.yarn_rest import LIVE_STATES, AppReport, RMError, YarnRest

log = logging.getLogger(__name__)

#: Seconds between RM queries while a kernel starts or stops.
FAST_POLL = 0.5
#: Seconds the backend's close waits for spark-submit processes still running.
SUBMIT_GRACE = 15.0


class AppWatch:
    """One kernel's application as the backend last saw it (the provisioner's Watch)."""

    def __init__(self, kernel_id: str, app_id: str | None = None) -> None:
        self.kernel_id = kernel_id
        self.tag = f"kf-kernel-{kernel_id.lower()}"
        self.app_id = app_id
        self.report: AppReport | None = None
        self.exit_code: int | None = None
        self.exited = asyncio.Event()
        self.changed = asyncio.Event()
        self.hurry = False  # poll fast: starting or stopping
        #: application ids this watch must not take by tag (the kernel's previous run)
        self.exclude: set[str] = set()

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    def mark_exited(self, code: int | None) -> None:
        if not self.exited.is_set():
            self.exit_code = code
            self.exited.set()
        self.changed.set()

    def update(self, report: AppReport) -> None:
        self.app_id = self.app_id or report.id
        self.report = report
        if not report.live:
            self.mark_exited(report.exit_code)
        self.changed.set()


class YarnBackend(Backend):
    """One YARN cluster: its REST client and the one loop watching all its kernels."""

    def __init__(self, endpoints: Sequence[str], user: str, ca_bundle: str, interval: float):
        self.rest = YarnRest(endpoints, user=user, ca_certs=ca_bundle)
        self.interval = max(0.1, interval)
        self.watches: dict[str, AppWatch] = {}
        self.kill_later: set[str] = set()  # app ids to kill once the RM answers
        self.error: str | None = None  # why the last query failed, while it does
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.queries = 0  # RM queries made by the watch loop (tests, metrics)
        self.submits: set[asyncio.Task[None]] = set()  # spark-submit processes still running

    # -- watches -------------------------------------------------------------------------------
    def watch(self, kernel_id: str, app_id: str | None = None, hurry: bool = False) -> AppWatch:
        watch = AppWatch(kernel_id, app_id)
        watch.hurry = hurry
        self.watches[kernel_id] = watch
        self.wake()
        return watch

    def unwatch(self, kernel_id: str) -> None:
        self.watches.pop(kernel_id, None)

    def wake(self) -> None:
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while self.watches or self.kill_later:
            self._wake.clear()
            await self.tick()
            fast = any(w.hurry for w in self.watches.values()) or self.kill_later
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FAST_POLL if fast else self.interval):
                    await self._wake.wait()

    async def tick(self) -> None:
        """One query for every live kernelfleet application; single lookups only for a
        watched application that left the live list (to learn how it ended)."""
        try:
            self.queries += 1
            live = await self.rest.apps(tags=["kernelfleet"], states=LIVE_STATES)
        except (RMError, ValueError) as exc:
            if self.error != str(exc):
                log.warning("YARN: cannot watch kernels: %s", exc)
            self.error = str(exc)
            return
        self.error = None
        by_id = {r.id: r for r in live}
        by_tag = {t: r for r in live for t in r.tags}
        for watch in list(self.watches.values()):
            report = by_id.get(watch.app_id or "")
            if report is None and not watch.app_id:
                report = by_tag.get(watch.tag)
                report = None if report is not None and report.id in watch.exclude else report
            if report is not None:
                watch.update(report)
            elif watch.app_id and watch.alive:
                try:
                    ended = await self.rest.app(watch.app_id)
                except RMError as exc:
                    log.warning("YARN: application %s: %s", watch.app_id, exc)
                    continue
                if ended is None:
                    watch.mark_exited(None)  # the RM forgot it (restarted without recovery)
                else:
                    watch.update(ended)
        for app_id in list(self.kill_later):
            with contextlib.suppress(RMError):
                await self.rest.kill(app_id)
                self.kill_later.discard(app_id)

    # -- Backend -------------------------------------------------------------------------------
    async def check(self, provisioners: Sequence[KernelfleetProvisioner]) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for prov in provisioners:
            watch = self.watches.get(str(prov.kernel_id))
            out[str(prov.kernel_id)] = None if watch is None else watch.exit_code
        return out

    async def stop_orphan(self, kernel_id: str) -> int:
        """Kill every live application tagged with *kernel_id* (a launch no checkpoint names)."""
        try:
            apps = await self.rest.apps(tags=[f"kf-kernel-{kernel_id.lower()}"], states=LIVE_STATES)
        except RMError as exc:
            log.warning("YARN: cannot look for applications of kernel %s: %s", kernel_id, exc)
            return 0
        killed = 0
        for app in apps:
            if await self.kill(app.id):
                killed += 1
        return killed

    async def kill(self, app_id: str) -> bool:
        """Kill *app_id* now, or as soon as the RM answers again."""
        try:
            return await self.rest.kill(app_id)
        except RMError as exc:
            log.warning("YARN: kill of %s deferred: %s", app_id, exc)
            self.kill_later.add(app_id)
            self.wake()
            return False

    def track_submit(self, task: asyncio.Task[None]) -> None:
        """Keep a launch's spark-submit task until it ends (close waits for it)."""
        self.submits.add(task)
        task.add_done_callback(self.submits.discard)

    async def close(self) -> None:
        if self.submits:
            _, pending = await asyncio.wait(list(self.submits), timeout=SUBMIT_GRACE)
            for submit in pending:
                submit.cancel()
            if pending:
                await asyncio.wait(pending)
        loop_task, self._task = self._task, None
        if loop_task is not None:
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
        self.rest.close()


__all__ = ["FAST_POLL", "AppWatch", "YarnBackend"]
