"""The kernel registry: the one owner of every kernel record and of its life.

Handlers ask it to start, find, interrupt, restart and shut down kernels on behalf of an
identity; it enforces ownership, limits (atomically: the check and the reservation happen with no
``await`` in between, so concurrent requests cannot overshoot) and the launch timeout (the
registry owns the clock; provisioners only launch). Each kernel is driven by a jupyter_client
``AsyncKernelManager`` whose provisioner is chosen by the kernelspec, so any provisioner plugs in.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager
from traitlets import Float, Int, Unicode
from traitlets import List as TList
from traitlets import Set as TSet
from traitlets.config import LoggingConfigurable

from kernelfleet.config import option
from kernelfleet.errors import (
    Conflict,
    Forbidden,
    HostsUnavailable,
    LaunchFailed,
    LaunchTimeout,
    LimitReached,
    NotFound,
    PublicError,
    describe,
)
from kernelfleet.kernels import policy as pol
from kernelfleet.kernels.channels import BufferLimits, KernelChannels
from kernelfleet.kernels.identity import Identity
from kernelfleet.kernels.liveness import KernelMonitor
from kernelfleet.kernels.logs import kernel_log, open_log, working_dir
from kernelfleet.kernels.notices import moved_notice
from kernelfleet.kernels.persistence import (
    LOCAL_NAMES,
    Persister,
    make_provisioner,
    provisioner_name,
    spec_from_dict,
)
from kernelfleet.kernels.reattach import ReattachReport, adopt_one, reattach_all, sync_shared
from kernelfleet.kernels.record import KernelRecord, Lifecycle
from kernelfleet.kernels.wire import KernelMessage, status_message
from kernelfleet.specs.catalog import KernelSpecCatalog, SpecEntry

if TYPE_CHECKING:
    from kernelfleet.kernels.pool import KernelPool


class KernelRegistry(LoggingConfigurable):
    """Starts and tracks kernels; see the module docstring."""

    max_kernels = option(
        Int(
            0,
            help="Most kernels the gateway runs at once, pooled ones included; with a shared "
            "store, all its gateways together (0: no limit). Default: 0.",
        ),
        "KF_MAX_KERNELS",
        "EG_MAX_KERNELS",
    )
    max_kernels_per_user = option(
        Int(
            0,
            help="Most kernels one user may run at once; with a shared store, on all its "
            "gateways together (0: no limit). Default: 0.",
        ),
        "KF_MAX_KERNELS_PER_USER",
        "EG_MAX_KERNELS_PER_USER",
    )
    authorized_users = option(
        TSet(
            Unicode(),
            help="""Users allowed to start kernels (comma list). Empty (default): everyone not
            denied. Kernelspecs may add their own list in metadata.kernel_provisioner.config.""",
        ),
        "KF_AUTHORIZED_USERS",
        "EG_AUTHORIZED_USERS",
    )
    unauthorized_users = option(
        TSet(
            Unicode(),
            default_value={"root"},
            help="""Users never allowed to start kernels (comma list); denial wins over any
            allow list. Default: root.""",
        ),
        "KF_UNAUTHORIZED_USERS",
        "EG_UNAUTHORIZED_USERS",
    )
    inherited_envs = option(
        TList(
            Unicode(),
            default_value=["PATH", "LANG", "LC_ALL", "TZ"],
            help="""Names of the gateway's own environment variables passed to kernels (comma
            list). The rest of the gateway's environment never reaches a kernel.
            Default: PATH,LANG,LC_ALL,TZ.""",
        ),
        "KF_INHERITED_ENVS",
        "EG_INHERITED_ENVS",
    )
    client_envs = option(
        TList(
            Unicode(),
            help="""Names of request env variables accepted besides KERNEL_* (comma list; '*'
            accepts all). Default: none.""",
        ),
        "KF_CLIENT_ENVS",
        "EG_CLIENT_ENVS",
    )
    launch_timeout = option(
        Float(
            60.0,
            help="""Seconds a kernel may take from the start request until it answers
            kernel_info, when neither the request (KERNEL_LAUNCH_TIMEOUT) nor the kernelspec
            (launch_timeout in its provisioner config) says. Default: 60.""",
        ),
        "KF_LAUNCH_TIMEOUT",
    )
    max_launch_timeout = option(
        Float(
            300.0,
            help="""Upper bound, in seconds, on a client's KERNEL_LAUNCH_TIMEOUT.
            Default: 300.""",
        ),
        "KF_MAX_LAUNCH_TIMEOUT",
    )
    shutdown_timeout = option(
        Float(
            30.0,
            help="""Seconds a kernel shutdown may take (graceful request, then terminate and
            kill by the provisioner) before the gateway kills it and moves on. Default: 30.""",
        ),
        "KF_SHUTDOWN_TIMEOUT",
    )
    reattach_timeout = option(
        Float(
            15.0,
            help="""Seconds a kernel found running at gateway start may take to answer before
            it is considered lost. Default: 15.""",
        ),
        "KF_REATTACH_TIMEOUT",
    )
    kernel_log_dir = option(
        Unicode(
            "",
            help="""Directory for the stdout/stderr logs of local kernels (one file per kernel
            id, readable through GET /api/kernels/{id}/logs). Default: <data_dir>/logs.""",
        ),
        "KF_KERNEL_LOG_DIR",
    )
    iopub_buffer_messages = option(
        Int(
            10_000,
            help="""Most iopub messages kept per disconnected websocket session for replay on
            reconnect. Default: 10000.""",
        ),
        "KF_IOPUB_BUFFER_MESSAGES",
    )
    iopub_buffer_mb = option(
        Int(64, help="Most megabytes kept per disconnected websocket session. Default: 64."),
        "KF_IOPUB_BUFFER_MB",
    )
    iopub_buffer_seconds = option(
        Float(
            600.0,
            help="""Seconds a disconnected session's buffer is kept before it is discarded.
            Default: 600.""",
        ),
        "KF_IOPUB_BUFFER_SECONDS",
    )

    def __init__(
        self,
        catalog: KernelSpecCatalog,
        data_dir: str,
        persister: Persister | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.catalog = catalog
        self.data_dir = data_dir
        self.persist = persister or Persister(None, None, "")
        self.pool: KernelPool | None = None
        self.closing = False
        self.records: dict[str, KernelRecord] = {}
        self.context = zmq.asyncio.Context()
        self.monitor = KernelMonitor(self, parent=self)
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._sync_lock = asyncio.Lock()
        self._synced_at = 0.0
        self.on_kernel_removed: list[Callable[[str], Awaitable[None] | None]] = []

    # -- settings -------------------------------------------------------------------------

    def policy(self) -> pol.GatewayPolicy:
        return pol.GatewayPolicy(
            authorized_users=frozenset(self.authorized_users),
            unauthorized_users=frozenset(self.unauthorized_users),
            allowed_kernelspecs=frozenset(self.catalog.allowed_kernelspecs),
            inherited_envs=tuple(self.inherited_envs),
            client_envs=frozenset(self.client_envs),
            default_launch_timeout=self.launch_timeout,
            max_launch_timeout=self.max_launch_timeout,
            max_kernels=self.max_kernels,
            max_kernels_per_user=self.max_kernels_per_user,
        )

    def buffer_limits(self) -> BufferLimits:
        return BufferLimits(
            max_messages=self.iopub_buffer_messages,
            max_bytes=self.iopub_buffer_mb * 1024 * 1024,
            max_age_seconds=self.iopub_buffer_seconds,
        )

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

    def process_env(self) -> dict[str, str]:
        """The gateway's environment, from which only ``inherited_envs`` reach kernels."""
        return dict(os.environ)

    async def find(self, kernel_id: str, identity: Identity) -> KernelRecord:
        """Like :meth:`get`, but with a shared store a kernel another gateway started is
        adopted on first use."""
        if kernel_id not in self.records and self.shared_store:
            await adopt_one(self, kernel_id, self.reattach_timeout)
        return self.get(kernel_id, identity)

    async def refresh(self) -> None:
        """Bring the in-memory view up to date with a shared store (one read per listing;
        concurrent listings share it)."""
        if not self.shared_store:
            return
        if self._sync_lock.locked():
            async with self._sync_lock:
                return
        await self.sync()

    @property
    def shared_store(self) -> bool:
        return bool(getattr(self.persist.store, "shared", False))

    async def sync(self) -> None:
        async with self._sync_lock:
            await sync_shared(self, self.reattach_timeout)
            self._synced_at = time.monotonic()

    async def reattach(self) -> ReattachReport:
        """Take back the kernels an earlier gateway left in the store."""
        report = await reattach_all(self, self.reattach_timeout)
        self._synced_at = time.monotonic()
        return report

    def live_count(self, owner: str | None = None) -> int:
        return sum(
            1
            for r in self.records.values()
            if r.lifecycle is not Lifecycle.DEAD and (owner is None or r.owner == owner)
        )

    # -- start ----------------------------------------------------------------------------

    async def start_kernel(self, identity: Identity, body: dict[str, Any]) -> KernelRecord:
        """Validate, authorize, reserve a slot, launch and wait until the kernel is ready.

        A compatible kernel from the warm pool is handed over instead of a launch when there
        is one (see :mod:`kernelfleet.kernels.pool`).
        """
        if self.closing:
            raise PublicError(
                "The gateway is shutting down; start the kernel again in a moment.",
                status=503,
                reason="Gateway Stopping",
            )
        gw = self.policy()
        name = body.get("name") or await self.catalog.default_name()
        pol.check_kernelspec_name(name)
        pol.check_kernelspec_allowed(name, gw)
        entry = await self.catalog.get(name)
        req_env = pol.validate_request_env(body.get("env"))
        owner = pol.resolve_owner(identity.user, identity.admin, req_env)
        pol.check_user_allowed(owner, name, entry.policy, gw)
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

        # Check and reserve with no await in between: concurrent requests cannot overshoot.
        # A shared store counts at the write instead (our view of it may be stale).
        local = not self.shared_store
        if local and gw.max_kernels_per_user and self.live_count(owner) >= gw.max_kernels_per_user:
            raise pol.limit_reached("user", owner, gw, shared=False)
        if self.pool is not None:
            pooled = self.pool.take(entry, req_env)
            if pooled is not None:
                try:
                    return await self.pool.hand_over(pooled, owner=owner, env=env)
                except asyncio.CancelledError:
                    await asyncio.shield(self.destroy(pooled))
                    raise
                except LimitReached:  # counted over a shared store; the kernel stays pooled
                    raise
                except Exception as exc:  # fall through to a fresh kernel
                    self.log.warning("warm kernel %s discarded: %s", pooled.id, exc)
                    await self.destroy(pooled)
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

    async def launch_record(self, record: KernelRecord, entry: SpecEntry) -> KernelRecord:
        """Register *record* and launch its kernel within its launch timeout."""
        self.records[record.id] = record
        name, timeout = record.name, record.launch_timeout
        self.log.info("starting kernel %s (%s) for %s", record.id, name, record.owner or "pool")
        try:
            async with record.lock, asyncio.timeout(timeout):
                gw = self.policy()  # a shared store counts every gateway's kernels again
                limits = {"max_total": gw.max_kernels, "max_per_user": gw.max_kernels_per_user}
                if refused := await self.persist.reserve(record, "starting", **limits):
                    raise pol.limit_reached(refused, record.owner, gw, shared=True)
                await self._launch(record, entry)
                record.lifecycle = Lifecycle.RUNNING
                record.touch("idle")
                await self.persist.save(record, "running", pooled=record.pooled)
        except TimeoutError:
            await self.destroy(record)
            where = f" on {record.host}" if record.host else ""
            raise LaunchTimeout(
                f"Kernel '{name}'{where} did not become ready within {timeout:g} s. Its log "
                "may say why; raise KERNEL_LAUNCH_TIMEOUT or the kernelspec's launch_timeout "
                "if it is just slow."
            ) from None
        except asyncio.CancelledError:
            await asyncio.shield(self.destroy(record))
            raise
        except PublicError:
            await self.destroy(record)
            raise
        except Exception as exc:
            self.log.exception("kernel %s (%s) failed to start", record.id, name)
            await self.destroy(record)
            raise LaunchFailed(f"Kernel '{name}' failed to start: {describe(exc)}") from None
        self.log.info("kernel %s ready%s", record.id, f" on {record.host}" if record.host else "")
        return record

    async def _launch(self, record: KernelRecord, entry: SpecEntry) -> None:
        km = AsyncKernelManager(
            kernel_name=entry.name,
            kernel_spec_manager=self.catalog.kernel_spec_manager_for_launch(),
            parent=self,
        )
        record.manager = km
        km.kernel_id = record.id
        # Launch exactly the kernelspec that was authorized (no second read from disk).
        km._kernel_spec = spec_from_dict(entry.spec, entry.resource_dir)
        kwargs: dict[str, Any] = {"env": record.env, "kernel_id": record.id}
        if provisioner_name(entry.spec) in LOCAL_NAMES:
            km.provisioner = make_provisioner(km, km._kernel_spec, record.id)
            kwargs["cwd"] = await asyncio.to_thread(working_dir, record.env)
            log_file = await asyncio.to_thread(open_log, record, self.log_directory())
            if log_file is not None:
                kwargs["stdout"] = log_file
                kwargs["stderr"] = subprocess.STDOUT
        await km.start_kernel(**kwargs)
        await self.persist.save(record, "launched")
        await self.connect_record(record)

    def log_directory(self) -> str:
        return self.kernel_log_dir or os.path.join(self.data_dir, "logs")

    async def connect_record(self, record: KernelRecord) -> None:
        """Connect (or reconnect after a restart) the gateway's ZMQ side and handshake."""
        assert record.manager is not None
        info = dict(record.manager.get_connection_info())
        if record.channels is None:
            record.channels = KernelChannels(
                self.context, info, lambda msg: self._on_iopub(record, msg), self.buffer_limits()
            )
            record.channels.start()
        else:
            await record.channels.reset(info)
        await self._ready_or_dead(record)

    async def _ready_or_dead(self, record: KernelRecord) -> None:
        """The handshake, raced against the kernel's exit: a kernel that dies while starting
        fails the request at once, with its exit status and the end of its log, instead of
        after the whole launch timeout."""
        assert record.manager is not None and record.channels is not None
        prov = record.manager.provisioner
        ready = asyncio.ensure_future(record.channels.wait_ready())
        if prov is None:
            await ready
            return
        exited = asyncio.ensure_future(prov.wait())
        try:
            await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (ready, exited):
                if not task.done():
                    task.cancel()
            await asyncio.gather(ready, exited, return_exceptions=True)
        if ready.done() and not ready.cancelled() and ready.exception() is None:
            return
        if ready.done() and not ready.cancelled() and ready.exception() is not None:
            raise ready.exception()  # type: ignore[misc]
        code = exited.result() if exited.done() and not exited.cancelled() else None
        try:
            tail = (await kernel_log(record, 2000) or "").strip()
        except Exception:
            tail = ""
        where = f" on {record.host}" if record.host else ""
        raise LaunchFailed(
            f"Kernel '{record.name}'{where} exited (status {code}) before it was ready."
            + (f" The end of its log:\n{tail}" if tail else "")
        )

    async def destroy(self, record: KernelRecord) -> None:
        """Stop a kernel at once and remove its record; leave nothing running (failed
        launches, kernels found dead)."""
        await self._destroy(record, now=True)

    async def forget(self, record: KernelRecord) -> None:
        """Drop a kernel from this gateway without stopping it (another gateway did)."""
        self.records.pop(record.id, None)
        if record.channels is not None:
            await record.channels.close()
        if record.log_file is not None:
            record.log_file.close()
            record.log_file = None

    async def _destroy(self, record: KernelRecord, *, now: bool) -> None:
        record.lifecycle = Lifecycle.STOPPING
        km = record.manager
        try:
            if self.shared_store:
                # Other gateways must not take the coming exit for a crash and restart it.
                await self.persist.save(record, "stopping")
            if km is not None and km.provisioner is not None:
                if km.has_kernel:
                    # The gateway owns the clock: a host that does not answer is not waited
                    # for beyond shutdown_timeout (then the kill below).
                    async with asyncio.timeout(self.shutdown_timeout):
                        await km.shutdown_kernel(now=now)
                else:
                    await km.provisioner.cleanup(restart=False)
                    pending = km.cleanup_resources(restart=False)
                    if inspect.isawaitable(pending):
                        await pending
        except Exception:
            self.log.exception("error while stopping kernel %s", record.id)
            with contextlib.suppress(Exception):
                if km is not None and km.provisioner is not None:
                    await km.provisioner.kill()
        finally:
            if record.channels is not None:
                await record.channels.close()
            if record.log_file is not None:
                record.log_file.close()
                record.log_file = None
            record.lifecycle = Lifecycle.DEAD
            record.execution_state = "dead"
            self.records.pop(record.id, None)
            self.monitor.forget(record.id)
            try:
                await self.persist.delete(record.id)
            except Exception:
                self.log.exception("could not delete the stored record of kernel %s", record.id)
            for callback in self.on_kernel_removed:
                result = callback(record.id)
                if asyncio.iscoroutine(result):
                    await result

    # -- actions --------------------------------------------------------------------------

    async def shutdown_kernel(self, kernel_id: str, identity: Identity) -> None:
        """Shut a kernel down gracefully (idempotent: a second call waits for the first)."""
        record = await self.find(kernel_id, identity)
        task = self._stopping.get(kernel_id)
        if task is None:
            task = asyncio.create_task(self.shutdown_record(record))
            self._stopping[kernel_id] = task
            task.add_done_callback(lambda _t: self._stopping.pop(kernel_id, None))
        await asyncio.shield(task)

    async def shutdown_record(self, record: KernelRecord) -> None:
        self.log.info("shutting down kernel %s", record.id)
        async with record.lock:
            if self.records.get(record.id) is not record:
                return  # its launch failed meanwhile, and was cleaned up
            await self._destroy(record, now=record.lifecycle is Lifecycle.DEAD)

    async def interrupt_kernel(self, kernel_id: str, identity: Identity) -> None:
        record = await self.find(kernel_id, identity)
        if record.manager is None or not record.alive:
            raise Conflict(
                f"Kernel {kernel_id} is {record.lifecycle.value}; it cannot be interrupted."
            )
        await record.manager.interrupt_kernel()
        record.touch()

    async def restart_kernel(self, kernel_id: str, identity: Identity) -> KernelRecord:
        """Restart in place (same kernelspec, same host for remote provisioners), same id."""
        record = await self.find(kernel_id, identity)
        async with record.lock:
            if record.lifecycle in {Lifecycle.STOPPING, Lifecycle.STARTING} or not record.manager:
                raise Conflict(
                    f"Kernel {kernel_id} is {record.lifecycle.value}; it cannot be restarted now."
                )
            await self.restart_in_place(record, now=False)
        return record

    async def restart_in_place(
        self, record: KernelRecord, *, now: bool, automatic: bool = False
    ) -> None:
        """Restart *record*'s kernel (the caller holds ``record.lock``)."""
        assert record.manager is not None
        host_before = record.host
        record.lifecycle = Lifecycle.RESTARTING
        record.touch("restarting")
        if automatic and record.channels is not None:
            # Only for a kernel that died: on an iopub "restarting" status JupyterLab shows
            # "The kernel appears to have died" and reconnects (as jupyter_server's restarter
            # does). A requested restart is announced by the client itself.
            record.channels.broadcast(status_message("restarting"))
        try:
            async with asyncio.timeout(record.launch_timeout):
                await record.manager.restart_kernel(now=now)
                # The new process's checkpoint first: a crash now must not orphan it.
                await self.persist.save(record, "launched")
                await self.connect_record(record)
        except Exception as exc:
            prov = record.manager.provisioner
            with contextlib.suppress(Exception):
                if prov is not None and prov.has_process:
                    await prov.kill()  # nothing keeps running outside the limits
            record.lifecycle = Lifecycle.DEAD
            record.touch("dead")
            if isinstance(exc, HostsUnavailable):
                # Its host is unreachable: the kernel stays listed (dead) for its user to
                # restart once the host is back, instead of vanishing after the retention.
                # No "dead" status on iopub: JupyterLab and Notebook 7 then drop the kernel's
                # connection and their Restart does nothing; cells run meanwhile get the
                # reason as their error (gateway.bridge).
                record.reason = exc.message
                raise
            if record.channels is not None:
                record.channels.broadcast(status_message("dead"))
            self.monitor.schedule_removal(record)
            where = f" on {record.host}" if record.host else ""
            detail = (
                f"did not become ready within {record.launch_timeout:g} s"
                if isinstance(exc, TimeoutError)
                else f"failed: {describe(exc)}"
            )
            raise LaunchFailed(f"Restart of kernel {record.id}{where} {detail}.") from None
        record.restart_count += 1
        record.lifecycle = Lifecycle.RUNNING
        record.reason = None
        record.touch("idle")
        if host_before and record.host and record.host != host_before and record.channels:
            record.channels.broadcast(moved_notice(host_before, record.host))
        await self.persist.save(record, "running")

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

    def _on_iopub(self, record: KernelRecord, msg: KernelMessage) -> None:
        state = None
        if msg.msg_type == "status":
            with contextlib.suppress(ValueError):
                state = msg.content().get("execution_state")
        record.touch(state if record.lifecycle is Lifecycle.RUNNING else None)
        self.persist.touched(record)
