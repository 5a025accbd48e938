"""Gateway replicas on one shared store: who owns which kernel, who is alive, who takes over.

Every kernel row names the replica that owns it (``gateway``): the one that started it, last
restarted it, or took it over. All replicas serve every kernel's clients (websockets, REST), but
only the owner acts on its own: it restarts the kernel when it dies, culls it, and finishes
what it began. So a death is never repaired twice and no kernel is started twice.

Liveness of replicas:

* each replica holds a lease in the database for as long as its database session lives
  (PostgreSQL: a session advisory lock) and writes a heartbeat row every
  ``replica_heartbeat`` seconds (``kf_replicas``: its URL and version, for admins);
* every replica waits on each peer's lease; the database hands it over the moment the peer's
  session ends (a SIGKILL closes the socket), so the death is known within milliseconds —
  and it is the instant from which :mod:`kernelfleet.kernels.failover` replays output;
* a peer whose heartbeat is older than ``replica_timeout`` seconds is dead too (a hung
  process, a partition);
* the rows of a dead replica are taken over in one transaction (exactly one survivor gets
  each): running kernels are adopted and owned, unfinished launches stopped and their rows
  deleted, warm pool kernels and kernels being stopped are stopped.

Changes other replicas make reach this one at once through the store's notifications
(PostgreSQL ``LISTEN``/``NOTIFY``, sent by a trigger, so a replica of the previous version
notifies too): a new kernel is adopted, a deleted one forgotten, a new owner or user noted.
The periodic full sync of :class:`~kernelfleet.kernels.liveness.KernelMonitor` remains the
safety net for notifications lost during a reconnect (then a full sync runs at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from traitlets import Float, Int
from traitlets.config import LoggingConfigurable

from kernelfleet.aio import cancel_and_wait
from kernelfleet.config import option
from kernelfleet.kernels.events import KernelEvent
from kernelfleet.kernels.failover import Budget, Failover, RecentLimits
from kernelfleet.kernels.reattach import adopt, adopt_one, refresh_standby, stop_leftovers
from kernelfleet.kernels.record import Lifecycle
from kernelfleet.kernels.stores import StoredKernel
from kernelfleet.kernels.timestamps import format_timestamp, utcnow

if TYPE_CHECKING:
    from kernelfleet.kernels.channels import KernelChannels
    from kernelfleet.kernels.registry import KernelRegistry


class ReplicaSettings(LoggingConfigurable):
    """Options of gateway replicas on a shared store (PostgreSQL)."""

    replica_heartbeat = option(
        Float(
            2.0,
            help="""Seconds between this replica's heartbeats in the store (and its checks of
            the other replicas' heartbeats). Default: 2.""",
        ),
        "KF_REPLICA_HEARTBEAT",
    )
    replica_timeout = option(
        Float(
            15.0,
            help="""Seconds without a heartbeat after which a replica counts as dead and its
            kernels are taken over, even if its database session still exists (a replica
            whose session ends is known dead at once). Default: 15.""",
        ),
        "KF_REPLICA_TIMEOUT",
    )
    failover_seconds = option(
        Float(
            60.0,
            help="""Seconds of each kernel's recent output every replica keeps, and for which
            clients of a replica that died get the output it could not deliver when they
            reconnect to another replica. Default: 60.""",
        ),
        "KF_FAILOVER_SECONDS",
    )
    failover_buffer_mb = option(
        Int(
            8,
            help="""Megabytes of recent output kept per kernel for a failover (see
            failover_seconds). Default: 8.""",
        ),
        "KF_FAILOVER_BUFFER_MB",
    )
    failover_messages = option(
        Int(
            5000,
            help="""Messages of recent output kept per kernel for a failover. Default: 5000.""",
        ),
        "KF_FAILOVER_MESSAGES",
    )
    failover_total_mb = option(
        Int(
            1024,
            help="""Megabytes of recent output all kernels' failover buffers may hold together
            on this replica; past it the busiest kernels keep less. Default: 1024.""",
        ),
        "KF_FAILOVER_TOTAL_MB",
    )
    failover_uncertainty = option(
        Float(
            1.0,
            help="""Seconds before a replica's death during which the output it relayed may
            or may not have reached its clients: the requests with output then are reported
            to them as possibly incomplete, and not replayed (never twice). Default: 1.""",
        ),
        "KF_FAILOVER_UNCERTAINTY",
    )


@dataclasses.dataclass
class Death:
    replica: str
    at: float  # time.monotonic()
    wall: str


class Replicas:
    """This replica's lease, heartbeat, peer watch and take-overs (see module docstring)."""

    def __init__(
        self, registry: KernelRegistry, settings: ReplicaSettings, url: str, version: str
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.url = url
        self.version = version
        self.me = registry.persist.gateway_id
        self.deaths: list[Death] = []
        self._budget = Budget(0)  # every ring's bytes together (failover_total_mb)
        self._dead: set[str] = set()  # peers whose death is noted, until a new lease
        self._rounds = 0  # heartbeats since the last look for kernels of unleased replicas
        self._checking: asyncio.Future[None] | None = None  # the lease query in flight
        self._watching: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stop_watch: Any = None
        self.log = registry.log

    @property
    def store(self) -> Any:
        return self.registry.persist.store

    def recent_limits(self) -> RecentLimits:
        s = self.settings
        self._budget.max_bytes = int(s.failover_total_mb) * 1024 * 1024
        return RecentLimits(
            seconds=float(s.failover_seconds),
            max_bytes=int(s.failover_buffer_mb) * 1024 * 1024,
            max_messages=int(s.failover_messages),
            budget=self._budget,
        )

    async def start(self) -> None:
        """Take the lease, write the first heartbeat, watch peers and notifications."""
        self.registry.recent_limits = self.recent_limits()
        self.registry.failover_source = self.failover_for
        self.registry.failover_check = self.check_now
        await self.store.hold_lease(self.me)
        await self.store.heartbeat(self.me, self.url, self.version)
        self._stop_watch = await self.store.watch(self._on_change)
        self.registry.notified = True
        await self._check_peers()
        self._loop_task = asyncio.create_task(self._loop(), name="replicas")

    async def stop(self) -> None:
        self.registry.notified = False
        await cancel_and_wait(self._loop_task)
        self._loop_task = None
        for task in [*self._watching.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._watching.values(), *self._tasks, return_exceptions=True)
        self._watching.clear()
        if self._stop_watch is not None:
            await self._stop_watch()
            self._stop_watch = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- peers ----------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.2, float(self.settings.replica_heartbeat)))
            try:
                # a lost lease connection made the others take this replica's kernels over;
                # it holds its lease again (a no-op while the lease is held) and carries on
                await self.store.hold_lease(self.me, wait=0.5)
                await self.store.heartbeat(self.me, self.url, self.version)
                await self._check_peers()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("replica heartbeat failed")

    async def _check_peers(self) -> None:
        timeout = float(self.settings.replica_timeout)
        peers = await self.store.replicas()
        self._rounds += 1
        if self._rounds * float(self.settings.replica_heartbeat) >= timeout:
            self._rounds = 0
            await self._adopt_unleased({p.id for p in peers})
        for peer in peers:
            if peer.id == self.me:
                continue
            if peer.age_seconds > timeout:
                self.log.warning(
                    "replica %s sent no heartbeat for %.0f s: taking its kernels over",
                    peer.id,
                    peer.age_seconds,
                )
                await self._take_over(peer.id, older_than=timeout)
            elif peer.id not in self._watching:
                if peer.id in self._dead:
                    # its row outlives it until a take-over deletes it: only a lease held
                    # again means it restarted
                    if peer.id not in await self.store.leases_held([peer.id]):
                        continue
                    self._dead.discard(peer.id)
                self._watching[peer.id] = asyncio.create_task(self._watch(peer.id))

    async def _adopt_unleased(self, leased: set[str]) -> None:
        """Kernels whose replica holds no lease at all: one of a version without leases
        (during a rolling upgrade), stopped since, or gone before it wrote one. They are
        taken over like a dead replica's, so that every kernel has a live owner. (While an
        old replica still runs, it keeps acting on its kernels the old way.)"""
        owners = {row.gateway for row in await self.store.all()}
        for gateway in owners - leased - {self.me}:
            await self._take_over(gateway, older_than=float(self.settings.replica_timeout))

    async def _watch(self, peer: str) -> None:
        try:
            await self.store.await_death(peer)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("watching replica %s failed", peer)
            self._watching.pop(peer, None)  # the next check watches again
            return
        self._watching.pop(peer, None)
        if self._died(peer):
            await self._take_over(peer, older_than=0.0)

    def _died(self, peer: str) -> bool:
        """Note *peer*'s death now, once per lease; False if it was noted already."""
        if peer in self._dead:
            return False
        self._dead.add(peer)
        death = Death(peer, time.monotonic(), format_timestamp(utcnow()))
        self.deaths.append(death)
        self.log.warning("replica %s stopped (its database session ended)", peer)
        uncertainty = float(self.settings.failover_uncertainty)
        for record in list(self.registry.records.values()):
            if record.channels is not None:
                record.channels.late_failover(peer, death.at, death.wall, uncertainty)
        return True

    async def check_now(self) -> None:
        """Whether a watched peer died this very moment: asked when a session new to this
        replica arrives, since its client may come from that peer, and a proxy can bring it
        here before the death is noticed otherwise. One query at a time: sessions arriving
        together (a dead peer's clients, all at once) share the next one."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.ensure_future(self._check_leases())
        try:
            await asyncio.shield(self._checking)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store is away: the watches still notice deaths
            self.log.warning("could not check the other replicas' leases: %s", exc)

    async def _check_leases(self) -> None:
        peers = [p for p in self._watching if p not in self._dead]
        if not peers:
            return
        held = await self.store.leases_held(peers)
        for peer in peers:
            if peer not in held and self._died(peer):
                self._spawn(self._take_over(peer, older_than=0.0))

    async def _take_over(self, peer: str, *, older_than: float) -> None:
        rows = await self.store.take_over(peer, self.me, older_than=older_than)
        if not rows:
            return
        self.log.warning("took over %d kernel(s) of replica %s", len(rows), peer)
        results = await asyncio.gather(
            *(self._take_row(row) for row in rows), return_exceptions=True
        )
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException):
                self.log.error("taking over kernel %s failed: %s", row.id, result)

    async def _take_row(self, row: StoredKernel) -> None:
        registry = self.registry
        record = registry.records.get(row.id)
        outcome = "ok"
        if row.state in {"starting", "launching"}:
            # the replica that was launching it is gone: its launch cannot finish
            box = registry.persist.box
            payload = row.unseal(box) if box is not None else {}
            if record is not None:
                await registry.destroy(record)
            else:
                await stop_leftovers(row, payload, registry)
                await registry.persist.delete(row.id)
            outcome = "failed"
        elif row.pooled or row.state in {"stopping", "dead"}:
            # a warm kernel nobody asked for, or one its replica was stopping: stop it
            if record is None:
                await adopt(
                    registry,
                    dataclasses.replace(row, pooled=False),
                    claim=True,
                    answer_within=registry.reattach_timeout,
                )
                record = registry.records.get(row.id)
            if record is not None:
                await registry.destroy(record)
            else:
                await registry.persist.delete(row.id)
        elif record is not None:
            record.replica = self.me
            if record.lifecycle is Lifecycle.RESTARTING:
                record.lifecycle = Lifecycle.RUNNING  # the monitor checks it again, as owner
        else:
            await adopt(registry, row, claim=True, answer_within=registry.reattach_timeout)
        registry.events.publish(
            KernelEvent(
                "takeover",
                outcome,
                kernel_id=row.id,
                kernelspec=row.name,
                owner=row.owner,
                host=row.host or "",
                cause="replica",
                message=f"from replica {row.gateway or '?'}",
                source="gateway",
            )
        )

    # -- failover replay -------------------------------------------------------------------

    def failover_for(self, channels: KernelChannels) -> Failover | None:
        """The replay for a session new to this replica: after the latest peer death still
        covered by the kernel's recent output."""
        recent = channels.recent
        if recent is None or not self.deaths:
            return None
        horizon = time.monotonic() - float(self.settings.failover_seconds)
        self.deaths = [d for d in self.deaths if d.at >= horizon]
        if not self.deaths:
            return None
        death = self.deaths[-1]
        return Failover(
            replica=death.replica,
            died=death.at,
            died_wall=death.wall,
            messages=recent.since(death.at),
            requests=recent.affected_requests(death.at, float(self.settings.failover_uncertainty)),
            complete=recent.covers(death.at),
        )

    # -- notifications ----------------------------------------------------------------------

    async def _on_change(self, change: dict[str, Any]) -> None:
        op = change.get("op")
        if op == "resync":
            self._spawn(self.registry.sync(force=True))
            return
        kid = change.get("id")
        if not isinstance(kid, str):
            return
        registry = self.registry
        record = registry.records.get(kid)
        if op == "delete":
            if (
                record is not None
                and record.lifecycle is Lifecycle.RUNNING
                and not record.lock.locked()
            ):
                self.log.info("kernel %s was shut down by another replica", kid)
                self._spawn(registry.forget(record))
            return
        gateway = change.get("gateway")
        if record is None:
            if change.get("state") == "running" and not change.get("pooled"):
                self._spawn(adopt_one(registry, kid, registry.reattach_timeout))
            return
        if isinstance(change.get("owner"), str) and change["owner"] != record.owner:
            record.owner = change["owner"]
        if isinstance(gateway, str) and gateway != record.replica:
            record.replica = gateway
        if record.pooled and not change.get("pooled") and gateway != self.me:
            if registry.pool is not None:  # another replica handed our warm kernel over
                registry.pool.discard(record)
            record.pooled = False
        if gateway != self.me and change.get("state") == "running" and not record.lock.locked():
            self._spawn(self._refresh(kid))

    async def _refresh(self, kid: str) -> None:
        registry = self.registry
        record = registry.records.get(kid)
        row = await self.store.get(kid)
        if record is None or row is None or row.gateway == self.me:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await refresh_standby(registry, record, row)
