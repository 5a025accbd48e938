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
from kernelfleet.kernels.profiles import Profile
from kernelfleet.kernels.record import KernelRecord, Lifecycle
from kernelfleet.kernels.registry import KernelRegistry
from kernelfleet.kernels.timestamps import utcnow

SYSTEM = Identity("kernelfleet-culler", admin=True)


@dataclass(frozen=True)
class CullSettings:
    idle_timeout: float
    cull_connected: bool
    cull_busy: bool


def cull_reason(
    record: KernelRecord, now: dt.datetime, settings: CullSettings, profile: Profile | None = None
) -> str | None:
    """Why *record* is culled now ("idle", "lifetime"), or None. A kernel profile's
    ``idle_timeout`` replaces the gateway's; its ``max_lifetime`` ends a kernel whatever it
    does."""
    if record.pooled or record.lifecycle not in {Lifecycle.RUNNING, Lifecycle.DEAD}:
        return None
    lifetime = profile.max_lifetime if profile is not None else None
    if lifetime is not None and (now - record.created).total_seconds() > lifetime:
        return "lifetime"
    timeout = settings.idle_timeout
    if profile is not None and profile.idle_timeout is not None:
        timeout = profile.idle_timeout
    if timeout <= 0:
        return None
    if record.connections > 0 and not settings.cull_connected:
        return None
    if record.execution_state == "busy" and not settings.cull_busy:
        return None
    idle = (now - record.last_activity).total_seconds()
    return "idle" if idle > timeout else None


def should_cull(record: KernelRecord, now: dt.datetime, settings: CullSettings) -> bool:
    """True when *record* has been idle longer than the timeout and the rules allow culling."""
    return cull_reason(record, now, settings) == "idle"


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
        # Runs even with cull_idle_timeout 0: kernel profiles have timeouts and lifetimes of
        # their own, and a config reload may turn culling on.
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="culler")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def cull_once(self) -> list[str]:
        """Cull every kernel :func:`cull_reason` selects; returns their ids."""
        now = utcnow()
        settings = self.settings()
        profiles = self.registry.profiles.table().profiles
        victims = []
        for record in list(self.registry.records.values()):
            if not self.registry.owns(record):
                continue  # its replica culls it
            reason = cull_reason(record, now, settings, profiles.get(record.profile))
            if reason is not None and await self._still_idle(record):
                reason = cull_reason(record, now, settings, profiles.get(record.profile))
            if reason is not None:
                victims.append((record, reason))
        for record, reason in victims:
            idle = (now - record.last_activity).total_seconds()
            age = (now - record.created).total_seconds()
            self.log.info(
                "culling kernel %s (%s, owner %s): %s; idle %.0f s, age %.0f s, state %s, "
                "%d connection(s)",
                record.id,
                record.name,
                record.owner,
                "past its profile's max_lifetime" if reason == "lifetime" else "idle too long",
                idle,
                age,
                record.execution_state,
                record.connections,
            )
            try:
                await self.registry.shutdown_kernel(
                    record.id, SYSTEM, action="cull", source="gateway", cause=reason
                )
            except PublicError as exc:
                self.log.warning("could not cull kernel %s: %s", record.id, exc.message)
        return [r.id for r, _ in victims]

    async def _still_idle(self, record: KernelRecord) -> bool:
        """With replicas, a kernel's clients may use another replica: its latest activity is
        the store's (each replica writes its own) if that is newer. True if we checked."""
        store = self.registry.persist.store
        if not self.registry.shared_store or store is None:
            return False
        await self.registry.persist.flush()
        row = await store.get(record.id)
        if row is not None and row.last_activity > record.last_activity:
            record.last_activity = row.last_activity
        return True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(max(1, self.cull_interval))
            try:
                await self.cull_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("culling failed")
