"""The lifecycle core under the registry: records, launch, handshake, restart in place, stop.

:class:`KernelLifecycle` owns every kernel record and drives each kernel's life with a
jupyter_client ``AsyncKernelManager`` whose provisioner the kernelspec chooses. It enforces
the launch clock (the deadline is handed to kernelfleet provisioners through
:class:`~kernelfleet.provisioners.base.LaunchTerms`, so no provisioner keeps a clock of its
own) and persists each step — each launch checkpoint too — before the step completes.

The warm pool, the liveness monitor and reattach (:mod:`.pool`, :mod:`.liveness`,
:mod:`.reattach`) build on this core; the registry (:mod:`.registry`) adds the user-facing
API (ownership, authorization, limits) on top of it and wires them together. Callbacks that
point up (a kernel was removed, a kernel is dead for good) are registered at run time, so no
import runs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager
from traitlets import Float, Int, Unicode
from traitlets import List as TList
from traitlets import Set as TSet
from traitlets.config import LoggingConfigurable

from kernelfleet.config import option
from kernelfleet.errors import (
    HostsUnavailable,
    LaunchFailed,
    LaunchTimeout,
    PublicError,
    describe,
)
from kernelfleet.kernels import policy as pol
from kernelfleet.kernels.catalog import KernelSpecCatalog, SpecEntry
from kernelfleet.kernels.channels import KernelChannels
from kernelfleet.kernels.events import EventBus
from kernelfleet.kernels.failover import Failover, RecentLimits
from kernelfleet.kernels.logs import kernel_log, open_log, working_dir
from kernelfleet.kernels.notices import moved_notice, status_message
from kernelfleet.kernels.persistence import Persister, spec_from_dict
from kernelfleet.kernels.profiles import KernelProfiles
from kernelfleet.kernels.record import KernelRecord, Lifecycle
from kernelfleet.kernels.replay import BufferLimits
from kernelfleet.kernels.wire import KernelMessage
from kernelfleet.provisioners.base import KernelfleetProvisioner, LaunchTerms, gateway_keeps_log
from kernelfleet.provisioners.factory import make_provisioner


class KernelLifecycle(LoggingConfigurable):
    """Kernel records and their life; see the module docstring. Its options are set as
    ``KernelRegistry.<name>`` (the registry is this class's only subclass)."""

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
        self.closing = False
        self.records: dict[str, KernelRecord] = {}
        self.context = zmq.asyncio.Context()
        #: Called with a kernel's id once its record is removed (the monitor forgets it).
        self.on_kernel_removed: list[Callable[[str], Awaitable[None] | None]] = []
        #: Called with a kernel that is dead for good (the monitor removes it after the
        #: dead-kernel retention); default: nothing.
        self.on_kernel_dead: Callable[[KernelRecord], None] = lambda record: None
        #: What happens to kernels, for the audit log and the metrics (kernels.events).
        self.events = EventBus()
        self.profiles = KernelProfiles(parent=self)
        #: With replicas (kernels.replicas): each kernel's recent output is kept within these
        #: limits, and a session new to this replica after a peer died gets its replay.
        self.recent_limits: RecentLimits | None = None
        self.failover_source: Callable[[KernelChannels], Failover | None] | None = None
        self.failover_check: Callable[[], Awaitable[None]] | None = None
        #: iopub messages received from all kernels (the monitor trims memory after bursts)
        self.iopub_count = 0

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

    def process_env(self) -> dict[str, str]:
        """The gateway's environment, from which only ``inherited_envs`` reach kernels."""
        return dict(os.environ)

    @property
    def shared_store(self) -> bool:
        return bool(getattr(self.persist.store, "shared", False))

    def owns(self, record: KernelRecord) -> bool:
        """Whether this replica acts on *record* on its own (restart on death, cull): always
        without a shared store; with one, if the kernel's row names this replica."""
        return record.replica in ("", self.persist.gateway_id)

    def live_count(self, owner: str | None = None) -> int:
        return sum(
            1
            for r in self.records.values()
            if r.lifecycle is not Lifecycle.DEAD and (owner is None or r.owner == owner)
        )

    # -- launch -------------------------------------------------------------------------

    async def launch_record(self, record: KernelRecord, entry: SpecEntry) -> KernelRecord:
        """Register *record* and launch its kernel within its launch timeout."""
        self.records[record.id] = record
        name, timeout = record.name, record.launch_timeout
        self.log.info("starting kernel %s (%s) for %s", record.id, name, record.owner or "pool")
        try:
            async with record.lock, asyncio.timeout(timeout) as clock:
                gw = self.policy()  # a shared store counts every gateway's kernels again
                limits = {"max_total": gw.max_kernels, "max_per_user": gw.max_kernels_per_user}
                if refused := await self.persist.reserve(record, "starting", **limits):
                    raise pol.limit_reached(refused, record.owner, gw, shared=True)
                await self._launch(record, entry, clock.when())
                record.lifecycle = Lifecycle.RUNNING
                record.touch("idle")
                await self.persist.save(record, "running", pooled=record.pooled)
        except TimeoutError:
            stage = launch_stage(record)
            await self.destroy(record)
            where = f" on {record.host}" if record.host else ""
            raise LaunchTimeout(
                f"Kernel '{name}'{where} did not become ready within {timeout:g} s{stage}. Its "
                "log may say why; raise KERNEL_LAUNCH_TIMEOUT or the kernelspec's "
                "launch_timeout if it is just slow."
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

    async def _launch(self, record: KernelRecord, entry: SpecEntry, deadline: float | None) -> None:
        km = AsyncKernelManager(
            kernel_name=entry.name,
            kernel_spec_manager=self.catalog.kernel_spec_manager_for_launch(),
            parent=self,
            # the gateway's one context: its control sockets close with the gateway even for
            # kernels left running for the next gateway (whose managers are never shut down)
            context=self.context,
        )
        record.manager = km
        km.kernel_id = record.id
        # Launch exactly the kernelspec that was authorized (no second read from disk).
        km._kernel_spec = spec_from_dict(entry.spec, entry.resource_dir)
        km.provisioner = prov = make_provisioner(km, km._kernel_spec, record.id)
        self.hand_launch_terms(record, deadline)
        kwargs: dict[str, Any] = {"env": record.env, "kernel_id": record.id}
        if gateway_keeps_log(type(prov)):
            kwargs["cwd"] = await asyncio.to_thread(working_dir, record.env)
            log_file = await asyncio.to_thread(open_log, record, self.log_directory())
            if log_file is not None:
                kwargs["stdout"] = log_file
                kwargs["stderr"] = subprocess.STDOUT
        await km.start_kernel(**kwargs)
        if not isinstance(prov, KernelfleetProvisioner):
            # the only checkpoint a third-party provisioner gives: reattach may try it
            await self.persist.save(record, "launched")
        await self.connect_record(record)

    def hand_launch_terms(self, record: KernelRecord, deadline: float | None) -> None:
        """Give a kernelfleet provisioner the launch clock (the time left until *deadline*,
        loop time) and a way to persist its checkpoints before its launch goes on."""
        prov = record.manager.provisioner if record.manager is not None else None
        if not isinstance(prov, KernelfleetProvisioner):
            return
        left = record.launch_timeout
        if deadline is not None:
            left = max(0.0, deadline - asyncio.get_running_loop().time())

        # A first launch is "launching" until the kernel answers: a gateway that dies before
        # then has the next one stop what the checkpoint names (the client got an error). A
        # restart's kernel is "launched": its client knows the id, the next gateway reattaches.
        state = "launching" if record.lifecycle is Lifecycle.STARTING else "launched"

        async def checkpoint() -> None:
            await self.persist.save(record, state)

        profile = self.profiles.table().profiles.get(record.profile) if record.profile else None
        limits = profile.limits() if profile is not None else None
        prov.set_launch_terms(LaunchTerms(timeout=left, on_checkpoint=checkpoint, limits=limits))

    def log_directory(self) -> str:
        return self.kernel_log_dir or os.path.join(self.data_dir, "logs")

    async def connect_record(self, record: KernelRecord) -> None:
        """Connect (or reconnect after a restart) the gateway's ZMQ side and handshake."""
        assert record.manager is not None
        info = dict(record.manager.get_connection_info())
        if record.channels is None:
            record.channels = KernelChannels(
                self.context,
                info,
                lambda msg: self._on_iopub(record, msg),
                self.buffer_limits(),
                recent=self.recent_limits,
                failover=self.failover_source,
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
            try:
                await self.persist.delete(record.id)
            except Exception:
                self.log.exception("could not delete the stored record of kernel %s", record.id)
            for callback in self.on_kernel_removed:
                result = callback(record.id)
                if asyncio.iscoroutine(result):
                    await result

    async def shutdown_record(self, record: KernelRecord) -> None:
        self.log.info("shutting down kernel %s", record.id)
        async with record.lock:
            if self.records.get(record.id) is not record:
                return  # its launch failed meanwhile, and was cleaned up
            await self._destroy(record, now=record.lifecycle is Lifecycle.DEAD)

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
            async with asyncio.timeout(record.launch_timeout) as clock:
                self.hand_launch_terms(record, clock.when())
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
            self.on_kernel_dead(record)
            where = f" on {record.host}" if record.host else ""
            detail = (
                f"did not become ready within {record.launch_timeout:g} s{launch_stage(record)}"
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

    def _on_iopub(self, record: KernelRecord, msg: KernelMessage) -> None:
        state = msg.execution_state or None
        record.touch(state if record.lifecycle is Lifecycle.RUNNING else None)
        self.persist.touched(record)
        self.iopub_count += 1


def launch_stage(record: KernelRecord) -> str:
    """Where a launch that ran out of time was, for its error ("" when unknown)."""
    prov = record.manager.provisioner if record.manager is not None else None
    phase = getattr(prov, "phase", "") if isinstance(prov, KernelfleetProvisioner) else ""
    if phase == "answered":
        return (
            " (it sent its connection info, then never answered kernel_info: can the "
            "gateway reach its ports?)"
        )
    return f" (its launch was {phase})" if phase and phase != "not started" else ""
