"""Liveness of running kernels: notice deaths, restart in place or report them dead.

Every ``monitor_interval`` seconds the monitor asks each backend, in one batched call, which of
its running kernels still run (``Backend.check``: state the host agent pushed for SSH kernels,
a cheap local check for local ones, one query for a resource manager's — never one per
kernel), flushes batched activity to the store, and with a shared store
catches up with other gateways. A death is handled in its own task, so one slow restart never
delays the checks of the other kernels.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from traitlets import Bool, Float, Int
from traitlets.config import LoggingConfigurable

from kernelfleet.aio import cancel_and_wait, release_free_memory
from kernelfleet.config import option
from kernelfleet.errors import PublicError
from kernelfleet.kernels.events import KernelEvent, backend_of, cause_of
from kernelfleet.kernels.lifecycle import KernelLifecycle
from kernelfleet.kernels.notices import notice_message, status_message
from kernelfleet.kernels.reattach import refresh_standby
from kernelfleet.kernels.record import KernelRecord, Lifecycle
from kernelfleet.provisioners.base import Backend, KernelfleetProvisioner


class KernelMonitor(LoggingConfigurable):
    """Watches kernels for the registry (see module docstring)."""

    monitor_interval = option(
        Float(
            2.0,
            help="""Seconds between liveness checks of all kernels (a poll of each provisioner's
            known state; no I/O per kernel for remote provisioners). Default: 2.""",
        ),
        "KF_MONITOR_INTERVAL",
    )
    restart_dead_kernels = option(
        Bool(
            True,
            help="""Restart a kernel that died on its own (as Jupyter servers do), up to
            restart_limit times in a row. Default: true.""",
        ),
        "KF_RESTART_DEAD_KERNELS",
    )
    restart_limit = option(
        Int(3, help="Consecutive automatic restarts before a kernel is left dead. Default: 3."),
        "KF_RESTART_LIMIT",
    )
    dead_kernel_retention = option(
        Float(
            30.0,
            help="""Seconds a kernel that died (and could not be restarted) stays listed with
            execution_state 'dead' before its record is removed and its resources cleaned up,
            so clients see why it went away. Default: 30.""",
        ),
        "KF_DEAD_KERNEL_RETENTION",
    )

    def __init__(
        self,
        registry: KernelLifecycle,
        sync: Callable[[], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.registry = registry
        self._sync = sync  # catching up with other gateways of a shared store
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures: dict[str, int] = {}
        self._seen_output = 0  # registry.iopub_count at the last round
        self._trimmed_at = 0  # registry.iopub_count at the last trim

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="kernel-monitor")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def forget(self, kernel_id: str) -> None:
        self._failures.pop(kernel_id, None)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.monitor_interval)
            try:
                await self.registry.persist.flush()
                if self.registry.shared_store and self._sync is not None:
                    await self._sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("could not synchronise with the kernel store")
            for record in list(self.registry.records.values()):
                if record.channels is not None:
                    record.channels.sweep()
            await self._trim_after_output()
            for record, code in await self._exit_codes():
                if code is not None and record.lifecycle is Lifecycle.RUNNING:
                    # Handled in its own task: a restart must not hold up everyone's checks.
                    record.lifecycle = Lifecycle.RESTARTING
                    task = asyncio.create_task(self._on_death(record, code))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _trim_after_output(self) -> None:
        """Once output stopped flowing (a round without iopub after rounds with), give the
        memory the burst took back to the system: one trim per burst, none while idle."""
        count = self.registry.iopub_count
        if count != self._seen_output:
            self._seen_output = count  # still flowing
        elif count != self._trimmed_at:
            self._trimmed_at = count
            await release_free_memory()

    async def _exit_codes(self) -> list[tuple[KernelRecord, int | None]]:
        """The exit status of every running kernel: one batched check per backend (one
        query to a resource manager for all its kernels), ``poll()`` for other provisioners."""
        by_backend: dict[Backend, list[tuple[KernelRecord, KernelfleetProvisioner]]] = {}
        out: list[tuple[KernelRecord, int | None]] = []
        for record in list(self.registry.records.values()):
            if record.lifecycle is not Lifecycle.RUNNING or record.lock.locked():
                continue
            km = record.manager
            prov = km.provisioner if km is not None else None
            if isinstance(prov, KernelfleetProvisioner):
                by_backend.setdefault(prov.backend, []).append((record, prov))
            elif prov is not None:
                try:
                    out.append((record, await prov.poll()))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.log.exception("poll of kernel %s failed", record.id)
        for backend, members in by_backend.items():
            try:
                codes = await backend.check([prov for _, prov in members])
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("status check of %d kernels failed", len(members))
                continue
            out.extend((record, codes.get(record.id)) for record, _ in members)
        return out

    async def _on_death(self, record: KernelRecord, code: int) -> None:
        try:
            await self._handle_death(record, code)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("handling the death of kernel %s failed", record.id)
            record.lifecycle = Lifecycle.DEAD
            record.touch("dead")
            self.schedule_removal(record)

    async def _handle_death(self, record: KernelRecord, code: int) -> None:
        if self.registry.shared_store and self.registry.persist.store is not None:
            row = await self.registry.persist.store.get(record.id)
            if row is None or row.state == "stopping":
                # Another gateway shut it down: not a crash to repair.
                await self.registry.forget(record)
                return
            if row.gateway and row.gateway != self.registry.persist.gateway_id:
                # Another replica owns it and repairs it (kernels.replicas): this one only
                # follows that replica's restart, or takes the kernel over if it dies too.
                await refresh_standby(self.registry, record, row)
                if record.lifecycle is Lifecycle.RESTARTING:
                    record.lifecycle = Lifecycle.RUNNING
                return
        failures = self._failures.get(record.id, 0)
        why = death_reason(record)
        self.log.warning("kernel %s died (exit %s)%s", record.id, code, f": {why}" if why else "")
        detail = f"exit status {code}{f': {why}' if why else ''}"
        self._tell(record, "death", "failed", cause="exited", message=detail)
        if why and record.channels is not None:
            # the only place its user learns why: no kernel message says it
            record.channels.broadcast(notice_message(f"The kernel died: {why}."))
        if self.restart_dead_kernels and failures < self.restart_limit:
            self._failures[record.id] = failures + 1
            async with record.lock:
                if (
                    self.registry.records.get(record.id) is not record
                    or record.lifecycle is not Lifecycle.RESTARTING
                ):
                    return  # shut down (or restarted) while we waited for the lock
                began = time.monotonic()
                try:
                    await self.registry.restart_in_place(record, now=True, automatic=True)
                except PublicError as exc:  # it is dead and scheduled for removal
                    self.log.error("automatic restart of %s failed: %s", record.id, exc.message)
                    record.reason = exc.message
                    self._tell(
                        record, "auto_restart", "failed", cause=cause_of(exc), message=exc.message
                    )
                else:
                    self._tell(record, "auto_restart", seconds=time.monotonic() - began)
            return
        record.lifecycle = Lifecycle.DEAD
        record.touch("dead")
        record.reason = f"Kernel died (exit status {code}){f': {why}' if why else ''}."
        if record.channels is not None:
            record.channels.broadcast(status_message("dead"))
        self.schedule_removal(record)

    def _tell(
        self,
        record: KernelRecord,
        action: str,
        outcome: str = "ok",
        *,
        cause: str = "",
        message: str = "",
        seconds: float | None = None,
    ) -> None:
        self.registry.events.publish(
            KernelEvent(
                action,
                outcome,
                kernel_id=record.id,
                kernelspec=record.name,
                owner=record.owner,
                backend=backend_of(record.spec),
                host=record.host or "",
                cause=cause,
                message=message,
                seconds=seconds,
                source="gateway",
            )
        )

    def schedule_removal(self, record: KernelRecord) -> None:
        """Remove a dead kernel's record after ``dead_kernel_retention`` seconds."""

        async def remove() -> None:
            await asyncio.sleep(self.dead_kernel_retention)
            if (
                self.registry.records.get(record.id) is record
                and record.lifecycle is Lifecycle.DEAD
            ):
                self.log.info("removing dead kernel %s", record.id)
                await self.registry.shutdown_record(record)

        task = asyncio.create_task(remove(), name=f"remove-{record.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def death_reason(record: KernelRecord) -> str | None:
    """What the kernel's provisioner says of its death, if anything."""
    prov = record.manager.provisioner if record.manager is not None else None
    if not isinstance(prov, KernelfleetProvisioner):
        return None
    try:
        return prov.exit_reason()
    except Exception:  # a provisioner's bug must not stop the death being handled
        return None
