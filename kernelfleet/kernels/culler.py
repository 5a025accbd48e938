"""Culling of idle kernels, with the option names Jupyter servers use.

:func:`should_cull` is the whole decision, a pure function of a record, the time and the
settings; the :class:`Culler` only runs it every ``cull_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

from traitlets import Bool, Int
from traitlets.config import LoggingConfigurable

from kernelfleet.aio import cancel_and_wait
from kernelfleet.config import option
from kernelfleet.errors import PublicError
from kernelfleet.kernels.identity import Identity
from kernelfleet.kernels.record import KernelRecord, Lifecycle
from kernelfleet.kernels.registry import KernelRegistry
from kernelfleet.kernels.timestamps import utcnow

SYSTEM = Identity("kernelfleet-culler", admin=True)


@dataclass(frozen=True)
class CullSettings:
    idle_timeout: float
    cull_connected: bool
    cull_busy: bool


def should_cull(record: KernelRecord, now: dt.datetime, settings: CullSettings) -> bool:
    """True when *record* has been idle longer than the timeout and the rules allow culling."""
    if settings.idle_timeout <= 0 or record.pooled:
        return False
    if record.lifecycle not in {Lifecycle.RUNNING, Lifecycle.DEAD}:
        return False
    if record.connections > 0 and not settings.cull_connected:
        return False
    if record.execution_state == "busy" and not settings.cull_busy:
        return False
    idle = (now - record.last_activity).total_seconds()
    return idle > settings.idle_timeout


class Culler(LoggingConfigurable):
    """Shuts down kernels that have been idle for too long."""

    cull_idle_timeout = option(
        Int(
            0,
            help="""Seconds of inactivity (no iopub message, no client message) after which a
            kernel is shut down. 0 (default) disables culling.""",
        ),
        "KF_CULL_IDLE_TIMEOUT",
        "EG_CULL_IDLE_TIMEOUT",
    )
    cull_interval = option(
        Int(300, help="Seconds between two checks for idle kernels. Default: 300."),
        "KF_CULL_INTERVAL",
    )
    cull_connected = option(
        Bool(False, help="Also cull kernels that have a websocket connected. Default: false."),
        "KF_CULL_CONNECTED",
    )
    cull_busy = option(
        Bool(False, help="Also cull kernels that are busy executing. Default: false."),
        "KF_CULL_BUSY",
    )

    def __init__(self, registry: KernelRegistry, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.registry = registry
        self._task: asyncio.Task[None] | None = None

    def settings(self) -> CullSettings:
        return CullSettings(
            float(self.cull_idle_timeout), bool(self.cull_connected), bool(self.cull_busy)
        )

    def start(self) -> None:
        if self.cull_idle_timeout > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="culler")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def cull_once(self) -> list[str]:
        """Cull every kernel :func:`should_cull` selects; returns their ids."""
        now = utcnow()
        settings = self.settings()
        victims = [r for r in list(self.registry.records.values()) if should_cull(r, now, settings)]
        for record in victims:
            idle = (now - record.last_activity).total_seconds()
            self.log.info(
                "culling kernel %s (%s, owner %s): idle %.0f s, state %s, %d connection(s)",
                record.id,
                record.name,
                record.owner,
                idle,
                record.execution_state,
                record.connections,
            )
            try:
                await self.registry.shutdown_kernel(record.id, SYSTEM)
            except PublicError as exc:
                self.log.warning("could not cull kernel %s: %s", record.id, exc.message)
        return [r.id for r in victims]

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(max(1, self.cull_interval))
            try:
                await self.cull_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("culling failed")
