"""What every kernel store shares: the :class:`KernelStore` interface, the :class:`StoredKernel`
row, and the SQL both SQL stores speak (the ``kf_kernels`` columns, ``SELECT``, ``INSERT``).

The implementations (:mod:`.sqlite`, :mod:`.postgres`) import this module and nothing else of the
package; :func:`kernelfleet.kernels.stores.open_store` picks one of them by URL.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
from typing import Any

from kernelfleet.kernels.secrets import SecretBox

SCHEMA_VERSION = 1

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


class KernelStore(abc.ABC):
    """Persistence of kernel records. Every method is safe to call concurrently."""

    #: True when several gateways may use the store at once (they then adopt each other's
    #: kernels and notice each other's shutdowns).
    shared: bool = False

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create the schema if needed."""

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


def to_utc(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(str(value)).astimezone(dt.UTC)
