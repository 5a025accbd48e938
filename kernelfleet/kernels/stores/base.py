"""What every kernel store shares: the :class:`KernelStore` interface, the :class:`StoredKernel`
and :class:`ReplicaInfo` rows, and the SQL both SQL stores speak (the ``kf_kernels`` columns,
``SELECT``, ``INSERT``).

The implementations (:mod:`.sqlite`, :mod:`.postgres`) import this module and the pure siblings
(:mod:`.migrations`, :mod:`.pgwatch`), nothing else of the package;
:func:`kernelfleet.kernels.stores.open_store` picks one of them by URL.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import datetime as dt
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from kernelfleet.kernels.secrets import SecretBox
from kernelfleet.kernels.stores.migrations import SCHEMA_VERSION, SchemaVersionError

__all__ = [
    "COLUMNS",
    "RETURNING",
    "SCHEMA_VERSION",
    "SELECT",
    "ChangeCallback",
    "KernelStore",
    "LeaseHeldError",
    "ReplicaInfo",
    "SchemaVersionError",
    "StopWatching",
    "StoredKernel",
    "insert_sql",
    "to_utc",
]

#: Called with each change of ``kf_kernels`` (see :meth:`KernelStore.watch`).
ChangeCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
#: Returned by :meth:`KernelStore.watch`: stops the watch (idempotent).
StopWatching = Callable[[], Awaitable[None]]

#: The columns of the ``kf_kernels`` table, in the order every store reads and writes them.
COLUMNS = (
    "id",
    "name",
    "owner",
    "state",
    "provisioner",
    "created",
    "last_activity",
    "host",
    "gateway",
    "restart_count",
    "pooled",
    "secret",
)
#: ``SELECT`` of all columns; column names are constants, never input.
SELECT = "SELECT " + ", ".join(COLUMNS) + " FROM kf_kernels"  # noqa: S608
#: The ``RETURNING`` clause giving a changed row's columns (PostgreSQL, SQLite ≥ 3.35).
RETURNING = " RETURNING " + ", ".join(COLUMNS)


def insert_sql(placeholder: str, verb: str = "INSERT") -> str:
    """``INSERT`` of one row with the driver's *placeholder* (``?`` or ``%s``)."""
    marks = ", ".join([placeholder] * len(COLUMNS))
    return f"{verb} INTO kf_kernels ({', '.join(COLUMNS)}) VALUES ({marks})"


@dataclasses.dataclass
class StoredKernel:
    """One kernel as persisted. ``secret`` holds sealed JSON (see :meth:`seal`)."""

    id: str
    name: str
    owner: str
    state: str
    provisioner: str
    created: dt.datetime
    last_activity: dt.datetime
    host: str | None = None
    gateway: str = ""
    restart_count: int = 0
    pooled: bool = False
    secret: str = ""

    def seal(self, box: SecretBox, payload: dict[str, Any]) -> None:
        self.secret = box.seal(payload, context=self.id)

    def unseal(self, box: SecretBox) -> dict[str, Any]:
        if not self.secret:
            return {}
        value = box.open(self.secret, context=self.id)
        return value if isinstance(value, dict) else {}


@dataclasses.dataclass(frozen=True)
class ReplicaInfo:
    """A gateway replica's lease (a ``kf_replicas`` row). Times are the database's clock, so
    replicas' clocks never matter; ``age_seconds`` is the database's ``now - heartbeat``."""

    id: str
    url: str
    version: str
    schema_version: int
    started: dt.datetime
    heartbeat: dt.datetime
    age_seconds: float


class LeaseHeldError(RuntimeError):
    """Another live database session holds the lease of this replica id."""


class KernelStore(abc.ABC):
    """Persistence of kernel records. Every method is safe to call concurrently."""

    #: True when several gateways may use the store at once (they then adopt each other's
    #: kernels and notice each other's shutdowns).
    shared: bool = False

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and create or migrate the schema to :data:`SCHEMA_VERSION` (see
        :mod:`.migrations`). Raises :class:`SchemaVersionError` if a newer gateway changed the
        schema in a way this one cannot use."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def put(self, kernel: StoredKernel) -> None:
        """Insert or replace the row of ``kernel.id``; returns once it is durable."""

    @abc.abstractmethod
    async def get(self, kernel_id: str) -> StoredKernel | None: ...

    @abc.abstractmethod
    async def delete(self, kernel_id: str) -> None: ...

    @abc.abstractmethod
    async def all(self) -> list[StoredKernel]: ...

    @abc.abstractmethod
    async def touch(self, activity: dict[str, dt.datetime]) -> None:
        """Update ``last_activity`` of several kernels at once (batched, not per message)."""

    async def reserve(self, kernel: StoredKernel, max_total: int, max_per_user: int) -> str | None:
        """Write *kernel* unless the live kernels of the store (other than *kernel* itself)
        already reach ``max_total``, or those of ``kernel.owner`` reach ``max_per_user``
        (0: no limit). Returns None once written, else ``"total"`` or ``"user"``.

        A store only one gateway uses needs no count here: that gateway's own count, checked
        before, is exact. Shared stores count and write in one atomic step.
        """
        await self.put(kernel)
        return None

    # The schema, replica leases, take-overs and change notifications. The defaults below fit
    # a store one gateway process uses alone: no leases, no notifications, and the
    # compare-and-set steps atomic among that process's coroutines.

    async def schema_version(self) -> int:
        """The schema version recorded in the store (:data:`SCHEMA_VERSION` after
        :meth:`open`, or higher if a newer gateway migrated it additively)."""
        return SCHEMA_VERSION

    async def heartbeat(self, replica_id: str, url: str, version: str) -> None:
        """Write the lease of gateway *replica_id* (its *url* and software *version*, with
        this code's schema version): created with ``started`` = ``heartbeat`` = the database's
        now, or renewed (``heartbeat`` = now, ``started`` kept). A gateway calls it
        periodically; others consider it dead once the heartbeat is older than their lease
        (:meth:`take_over`)."""
        return None

    async def hold_lease(self, replica_id: str, *, wait: float = 10.0) -> None:
        """Hold the session lease of *replica_id* for as long as this store is open (and its
        database session lives), so :meth:`await_death` in other gateways returns the moment
        this process dies. Idempotent. Raises :class:`LeaseHeldError` if another session
        still holds it after *wait* seconds (the same id used twice, or a previous process of
        this gateway that is still alive). The default (one gateway) holds nothing."""
        return None

    async def await_death(self, replica_id: str) -> None:
        """Return once no database session holds the lease of *replica_id* (at once if none
        does): the holder's process died, lost its connection, or closed its store. Raises
        if this gateway's own connection is lost meanwhile. The default (one gateway, no
        other replicas) never returns; cancel it."""
        await asyncio.get_running_loop().create_future()

    async def leases_held(self, replica_ids: list[str]) -> set[str]:
        """Which of *replica_ids* hold their lease now (:meth:`hold_lease`): a check that does
        not wait, for the moment a client arrives from a replica that may just have died.
        The default (no leases) says all of them."""
        return set(replica_ids)

    async def replicas(self) -> list[ReplicaInfo]:
        """The leases of all replicas, by id (an empty list without replica leases)."""
        return []

    async def forget_replica(self, replica_id: str) -> None:
        """Delete the lease of *replica_id* (a gateway shutting down cleanly); its kernels'
        rows are not touched."""
        return None

    async def take_over(
        self, dead_replica_id: str, new_replica_id: str, *, older_than: float
    ) -> list[StoredKernel]:
        """Give every kernel of gateway *dead_replica_id* to *new_replica_id*, in one
        transaction, if that gateway's lease is older than *older_than* seconds or it has none;
        its lease is deleted too. Returns the rows taken, with their new ``gateway`` (empty if
        the lease is fresh, or another caller took them first: concurrent callers never take
        the same row)."""
        async with self._local_lock:
            taken = [row for row in await self.all() if row.gateway == dead_replica_id]
            for row in taken:
                row.gateway = new_replica_id
                await self.put(row)
            return taken

    async def claim(
        self, kernel_id: str, expected_gateway: str, new_gateway: str
    ) -> StoredKernel | None:
        """Compare-and-set of one row's ``gateway``: set it to *new_gateway* if it is
        *expected_gateway*. Returns the updated row, or None (no such row, or another gateway
        holds it)."""
        async with self._local_lock:
            row = await self.get(kernel_id)
            if row is None or row.gateway != expected_gateway:
                return None
            row.gateway = new_gateway
            await self.put(row)
            return row

    async def take_pooled(self, kernel_id: str, gateway: str) -> StoredKernel | None:
        """Take a warm kernel: if its row is still ``pooled``, mark it not pooled and held by
        *gateway*, atomically (of concurrent callers exactly one gets it). Returns the updated
        row, or None. The caller then writes the row with its new owner (:meth:`put`)."""
        async with self._local_lock:
            row = await self.get(kernel_id)
            if row is None or not row.pooled:
                return None
            row.pooled = False
            row.gateway = gateway
            await self.put(row)
            return row

    async def watch(self, callback: ChangeCallback) -> StopWatching:
        """Call *callback* with each change other gateways (or this one) make to the kernel
        rows: ``{"op": "insert"|"update"|"delete", "id", "state", "owner", "gateway",
        "pooled"}`` (updates of ``last_activity`` alone are not reported), and with
        ``{"op": "resync"}`` when changes may have been missed (re-read the store then).
        Returns a coroutine function that stops watching.

        Only a shared store reports anything; the default returns at once and never calls
        *callback*.
        """

        async def stop() -> None:
            return None

        return stop

    @functools.cached_property
    def _local_lock(self) -> asyncio.Lock:
        return asyncio.Lock()


def kernel_from_row(row: tuple[Any, ...]) -> StoredKernel:
    """A :class:`StoredKernel` from a ``SELECT`` of :data:`COLUMNS` (either driver)."""
    values = dict(zip(COLUMNS, row, strict=True))
    values["created"] = to_utc(values["created"])
    values["last_activity"] = to_utc(values["last_activity"])
    values["pooled"] = bool(values["pooled"])  # SQLite keeps an integer
    return StoredKernel(**values)


def replica_from_row(row: tuple[Any, ...]) -> ReplicaInfo:
    """A :class:`ReplicaInfo` from ``id, url, version, schema_version, started, heartbeat,
    age`` (either driver)."""
    rid, url, version, schema_version, started, heartbeat, age = row
    return ReplicaInfo(
        id=rid,
        url=url,
        version=version,
        schema_version=int(schema_version),
        started=to_utc(started).astimezone(dt.UTC),
        heartbeat=to_utc(heartbeat).astimezone(dt.UTC),
        age_seconds=max(0.0, float(age)),
    )


def to_utc(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(str(value)).astimezone(dt.UTC)
