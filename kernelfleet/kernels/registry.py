"""The kernel registry: what handlers ask of kernels, on behalf of an identity.

Handlers ask it to start, find, interrupt, restart and shut down kernels; it enforces
ownership, authorization and limits (atomically: the check and the reservation happen with no
``await`` in between, so concurrent requests cannot overshoot), hands a start to the warm pool
or to a launch, and wires the parts built on the lifecycle core
(:class:`~kernelfleet.kernels.lifecycle.KernelLifecycle`: records, launch clock, checkpoints,
restart in place, stop) together: the pool, the liveness monitor and reattach.

A kernel start, from the REST handler down: ``gateway.rest:KernelsHandler.post`` →
``KernelRegistry.start_kernel`` (policy, limits) → ``KernelLifecycle.launch_record`` (record
stored, clock started) → ``KernelLifecycle._launch`` (provisioner made, launch terms handed)
→ jupyter_client ``AsyncKernelManager.start_kernel`` → the provisioner's ``launch_kernel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from kernelfleet.errors import (
    Conflict,
    Forbidden,
    LimitReached,
    NotFound,
    PublicError,
    describe,
)
from kernelfleet.kernels import policy as pol
from kernelfleet.kernels import profiles as prof
from kernelfleet.kernels.catalog import KernelSpecCatalog
from kernelfleet.kernels.events import KernelEvent, backend_of, cause_of, outcome_of
from kernelfleet.kernels.identity import Identity
from kernelfleet.kernels.lifecycle import KernelLifecycle
from kernelfleet.kernels.liveness import KernelMonitor
from kernelfleet.kernels.persistence import Persister
from kernelfleet.kernels.pool import KernelPool, TakenElsewhere
from kernelfleet.kernels.reattach import ReattachReport, adopt_one, reattach_all, sync_shared
from kernelfleet.kernels.record import KernelRecord, Lifecycle

#: Seconds between full reads of a shared store while its notifications are received.
NOTIFIED_SYNC_SECONDS = 30.0


class KernelRegistry(KernelLifecycle):
    """Starts and tracks kernels on behalf of identities; see the module docstring."""

    def __init__(
        self,
        catalog: KernelSpecCatalog,
        data_dir: str,
        persister: Persister | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(catalog, data_dir, persister, **kwargs)
        self.pool: KernelPool | None = None
        self.monitor = KernelMonitor(self, sync=self.sync, parent=self)
        self.on_kernel_removed.append(self.monitor.forget)
        self.on_kernel_dead = self.monitor.schedule_removal
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._sync_lock = asyncio.Lock()
        self._synced_at = 0.0
        #: True while a shared store's notifications keep the view current (kernels.replicas)
        self.notified = False
        #: Awaited before every start decision: the gateway's config reload makes sure the
        #: configuration file's latest limits are in force (kernelfleet.gateway.reload).
        self.before_start: Callable[[], Awaitable[None]] | None = None

    # -- lookup ---------------------------------------------------------------------------

    def visible(self, identity: Identity) -> list[KernelRecord]:
        """The kernels *identity* may see: their own, or all (pool kernels too) for an admin."""
        return [r for r in self.records.values() if identity.may_access(r.owner)]

    def get(self, kernel_id: str, identity: Identity) -> KernelRecord:
        """The record of *kernel_id* if *identity* may use it; others' kernels are 'not found'."""
        record = self.records.get(kernel_id)
        if record is None or not identity.may_access(record.owner):
            raise NotFound(f"Kernel does not exist: {kernel_id}", reason="No Such Kernel")
        return record

    async def find(self, kernel_id: str, identity: Identity) -> KernelRecord:
        """Like :meth:`get`, but with a shared store a kernel another gateway started is
        adopted on first use."""
        if kernel_id not in self.records and self.shared_store:
            await adopt_one(self, kernel_id, self.reattach_timeout)
        return self.get(kernel_id, identity)

    async def refresh(self) -> None:
        """Bring the in-memory view up to date with a shared store (one read per listing;
        concurrent listings share it). Also while the store's notifications keep the view
        current (kernels.replicas): a listing right after a start on another replica may
        come before its notification."""
        if not self.shared_store:
            return
        if self._sync_lock.locked():
            async with self._sync_lock:
                return
        await self.sync(force=True)

    async def sync(self, *, force: bool = False) -> None:
        """Catch up with a shared store: every monitor round, or with notifications only
        every :data:`NOTIFIED_SYNC_SECONDS` (a safety net), unless *force* (they may have
        been missed)."""
        if (
            self.notified
            and not force
            and time.monotonic() - self._synced_at < NOTIFIED_SYNC_SECONDS
        ):
            return
        async with self._sync_lock:
            await sync_shared(self, self.reattach_timeout)
            self._synced_at = time.monotonic()

    async def reattach(self) -> ReattachReport:
        """Take back the kernels an earlier gateway left in the store."""
        report = await reattach_all(self, self.reattach_timeout)
        self._synced_at = time.monotonic()
        return report

    # -- start ----------------------------------------------------------------------------

    async def start_kernel(
        self, identity: Identity, body: dict[str, Any], *, source: str = "api"
    ) -> KernelRecord:
        """Validate, authorize, reserve a slot, launch and wait until the kernel is ready.

        A compatible kernel from the warm pool is handed over instead of a launch when there
        is one (see :mod:`kernelfleet.kernels.pool`). The start, its refusal or its failure
        is published on :attr:`events`.
        """
        began = time.monotonic()
        facts: dict[str, Any] = {"kernelspec": str(body.get("name") or "")[:200]}
        try:
            record = await self._start_kernel(identity, body, facts)
        except Exception as exc:
            self.events.publish(
                KernelEvent(
                    "start",
                    outcome_of(exc),
                    actor=identity.user,
                    admin=identity.admin,
                    cause=cause_of(exc),
                    message=exc.message if isinstance(exc, PublicError) else describe(exc),
                    seconds=time.monotonic() - began,
                    source=source,
                    **facts,
                )
            )
            raise
        facts.pop("kernel_id", None)
        self.events.publish(
            KernelEvent(
                "start",
                actor=identity.user,
                admin=identity.admin,
                kernel_id=record.id,
                host=record.host or "",
                seconds=time.monotonic() - began,
                source=source,
                **facts,
            )
        )
        return record

    async def _start_kernel(
        self, identity: Identity, body: dict[str, Any], facts: dict[str, Any]
    ) -> KernelRecord:
        if self.before_start is not None:
            await self.before_start()
        if self.closing:
            raise PublicError(
                "The gateway is shutting down; start the kernel again in a moment.",
                status=503,
                reason="Gateway Stopping",
            )
        gw = self.policy()
        table = self.profiles.table()
        name = body.get("name") or await self.catalog.default_name()
        pol.check_kernelspec_name(name)
        name, named_profile = prof.split_published(name, table.profiles)
        pol.check_kernelspec_allowed(name, gw)
        entry = await self.catalog.get(name)
        facts.update(kernelspec=name, backend=backend_of(entry.spec))
        req_env = pol.validate_request_env(body.get("env"))
        owner = pol.resolve_owner(
            identity.user, identity.admin, req_env, name_fixed=identity.name_fixed
        )
        claimed = req_env.get("KERNEL_USERNAME")
        if claimed and claimed != owner:  # only a name fixed by an authority gets here
            self.log.info(
                "KERNEL_USERNAME %r ignored: %s verified the caller as %r, who owns the kernel",
                claimed[:64],
                identity.authority,
                owner,
            )
        facts["owner"] = owner
        pol.check_user_allowed(
            owner,
            name,
            entry.policy,
            gw,
            identity.groups if owner == identity.user else frozenset(),
        )
        profile, allowance = None, prof.Allowance()
        if table.active:
            groups = identity.groups if owner == identity.user else frozenset()
            allowance = prof.allowance_for(owner, groups, table.allowances)
            profile = prof.choose_profile(
                spec_name=name,
                backend=facts["backend"],
                requested=named_profile or req_env.get("KERNEL_PROFILE"),
                default=table.default,
                profiles=table.profiles,
                allowance=allowance,
                user=owner,
            )
            facts["profile"] = profile.name if profile is not None else ""
        timeout = pol.launch_timeout(req_env, entry.policy, gw)
        if "KERNEL_ID" in req_env:
            if not identity.admin:
                # Else "already exists" would tell a user that someone else's kernel id lives.
                raise Forbidden(
                    "KERNEL_ID is for admins only (a notebook server's shared token); leave it "
                    "out and the gateway picks the kernel's id.",
                    reason="Kernel Id Not Allowed",
                )
            kernel_id = pol.check_kernel_id(req_env["KERNEL_ID"])
            store = self.persist.store
            if kernel_id in self.records or (store is not None and await store.get(kernel_id)):
                raise Conflict(f"A kernel with id {kernel_id} already exists.")
        else:
            kernel_id = str(uuid.uuid4())
        env = pol.kernel_env(req_env, self.process_env(), gw, kernel_id=kernel_id, username=owner)
        env.pop("KERNEL_PROFILE", None)  # only the gateway names a kernel's profile
        if table.active:  # and, with profiles on, its limits
            for key in prof.PROFILE_ENV:
                env.pop(key, None)
            if profile is not None:
                env.update(profile.env())

        # Check and reserve with no await in between: concurrent requests cannot overshoot.
        # A shared store counts at the write instead (our view of it may be stale; allowances
        # are checked against it all the same).
        local = not self.shared_store
        if local and gw.max_kernels_per_user and self.live_count(owner) >= gw.max_kernels_per_user:
            raise pol.limit_reached("user", owner, gw, shared=False)
        if table.active:
            prof.check_allowance(owner, profile, allowance, self.usage(owner, table))
        if self.pool is not None and (profile is None or profile.limits() is None):
            pooled = self.pool.take(entry, req_env)
            if pooled is None and self.shared_store:
                pooled = await self.pool.take_from_peers(entry, req_env)
            if pooled is not None:
                facts["pooled"] = True
                try:
                    return await self.pool.hand_over(pooled, owner=owner, env=env)
                except asyncio.CancelledError:
                    await asyncio.shield(self.destroy(pooled))
                    raise
                except LimitReached:  # counted over a shared store; the kernel stays pooled
                    raise
                except TakenElsewhere as exc:  # another replica's now: a fresh kernel
                    self.log.info("%s", exc)
                    facts["pooled"] = False
                except Exception as exc:  # fall through to a fresh kernel
                    self.log.warning("warm kernel %s discarded: %s", pooled.id, exc)
                    await self.destroy(pooled)
                    facts["pooled"] = False
        if local and gw.max_kernels and self.live_count() >= gw.max_kernels:
            raise pol.limit_reached("total", owner, gw, shared=False)
        record = KernelRecord(
            id=kernel_id,
            name=name,
            owner=owner,
            env=env,
            launch_timeout=timeout,
            spec=entry.spec,
            resource_dir=entry.resource_dir,
        )
        return await self.launch_record(record, entry)

    def usage(self, owner: str, table: prof.ProfileTable) -> prof.Usage:
        """What *owner*'s live kernels take now (memory: as their profiles set it)."""
        mine = [
            r
            for r in self.records.values()
            if r.owner == owner and r.lifecycle is not Lifecycle.DEAD
        ]
        memory = 0
        for record in mine:
            profile = table.profiles.get(record.profile)
            if profile is not None and profile.memory:
                memory += profile.memory
        return prof.Usage(kernels=len(mine), memory=memory)

    # -- actions --------------------------------------------------------------------------

    async def shutdown_kernel(
        self,
        kernel_id: str,
        identity: Identity,
        *,
        action: str = "shutdown",
        source: str = "api",
        cause: str = "",
    ) -> None:
        """Shut a kernel down gracefully (idempotent: a second call waits for the first).
        *action* and *cause* are what the events say ("cull", "idle" for the culler)."""
        async with self._acting(action, kernel_id, identity, source, cause):
            record = await self.find(kernel_id, identity)
            task = self._stopping.get(kernel_id)
            if task is None:
                task = asyncio.create_task(self.shutdown_record(record))
                self._stopping[kernel_id] = task
                task.add_done_callback(lambda _t: self._stopping.pop(kernel_id, None))
            await asyncio.shield(task)

    async def interrupt_kernel(
        self, kernel_id: str, identity: Identity, *, source: str = "api"
    ) -> None:
        async with self._acting("interrupt", kernel_id, identity, source):
            record = await self.find(kernel_id, identity)
            if record.manager is None or not record.alive:
                raise Conflict(
                    f"Kernel {kernel_id} is {record.lifecycle.value}; it cannot be interrupted."
                )
            await record.manager.interrupt_kernel()
            record.touch()

    async def restart_kernel(
        self, kernel_id: str, identity: Identity, *, source: str = "api"
    ) -> KernelRecord:
        """Restart in place (same kernelspec, same host for remote provisioners), same id."""
        async with self._acting("restart", kernel_id, identity, source):
            record = await self.find(kernel_id, identity)
            async with record.lock:
                if (
                    record.lifecycle in {Lifecycle.STOPPING, Lifecycle.STARTING}
                    or not record.manager
                ):
                    raise Conflict(
                        f"Kernel {kernel_id} is {record.lifecycle.value}; it cannot be restarted "
                        "now."
                    )
                if not self.owns(record):
                    # The replica that restarts a kernel owns it from then on: its row says
                    # so before the old process stops, so the former owner does not take
                    # the exit for a crash to repair (kernels.replicas).
                    await self.persist.save(record, "running")
                    record.replica = ""
                await self.restart_in_place(record, now=False)
            return record

    @contextlib.asynccontextmanager
    async def _acting(
        self, action: str, kernel_id: str, identity: Identity, source: str, cause: str = ""
    ) -> AsyncIterator[None]:
        """Publish *action* on a kernel with its outcome (a kernel another user owns, or none,
        is 'not found' and published without its facts)."""
        began = time.monotonic()
        record = self.records.get(kernel_id)
        known = record is not None and identity.may_access(record.owner)
        facts: dict[str, Any] = {}
        if record is not None and known:
            facts = {
                "kernelspec": record.name,
                "profile": record.profile,
                "owner": record.owner,
                "backend": backend_of(record.spec),
                "host": record.host or "",
            }
        error: Exception | None = None
        try:
            yield
        except Exception as exc:
            error = exc
            raise
        finally:
            if not isinstance(error, asyncio.CancelledError):
                self.events.publish(
                    KernelEvent(
                        action,
                        outcome_of(error),
                        actor=identity.user,
                        admin=identity.admin,
                        kernel_id=kernel_id,
                        cause=cause_of(error) if error is not None else cause,
                        message=(
                            ""
                            if error is None
                            else error.message
                            if isinstance(error, PublicError)
                            else describe(error)
                        ),
                        seconds=time.monotonic() - began,
                        source=source,
                        **facts,
                    )
                )

    # -- whole registry -------------------------------------------------------------------

    async def close(
        self, *, shutdown_kernels: bool | Callable[[KernelRecord], bool] = True
    ) -> None:
        """Stop the monitor; shut kernels down (all, or those the predicate selects), and leave
        the others running with their records stored for the next gateway to reattach."""
        await self.monitor.stop()
        records = list(self.records.values())
        if callable(shutdown_kernels):
            doomed = [r for r in records if shutdown_kernels(r)]
        else:
            doomed = records if shutdown_kernels else []
        await asyncio.gather(*(self.shutdown_record(r) for r in doomed), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.persist.flush()
        for record in list(self.records.values()):
            await self.forget(record)
        self.context.destroy(linger=0)
