"""Where kernel records persist, so kernels outlive the gateway.

:class:`KernelStore` (in :mod:`.base`) is the interface; :mod:`.sqlite` (the default: one file in
the data directory, nothing to install) and :mod:`.postgres` (several gateways on one database)
implement it, and :func:`open_store` chooses one by URL. A store keeps :class:`StoredKernel`
rows; the secret parts (connection info with the kernel's keys, provisioner state, the kernel's
env) are sealed by a :class:`~kernelfleet.kernels.secrets.SecretBox` before they reach the store.

Rows are written before the step they describe is acknowledged: ``starting`` before the launch,
the provisioner's checkpoint as soon as the launch returns, ``running`` before the client gets
its 201. A gateway that dies at any point leaves a row that says what may exist.

The schema is versioned (:mod:`.migrations`): :meth:`KernelStore.open` migrates it, and refuses
a store a newer gateway changed incompatibly (:class:`SchemaVersionError`). Gateways sharing a
store keep leases in it (:meth:`KernelStore.heartbeat`, :meth:`KernelStore.hold_lease`; a
peer's death is seen with :meth:`KernelStore.await_death`), take over a dead gateway's kernels
atomically (:meth:`KernelStore.take_over`, :meth:`KernelStore.claim`,
:meth:`KernelStore.take_pooled`) and hear of each other's changes (:meth:`KernelStore.watch`).

The factory sits here, above the implementations, which import only :mod:`.base` and the pure
:mod:`.migrations` and :mod:`.pgwatch`: no module of the package imports one above it. An
implementation is imported only once it is chosen.
"""

from __future__ import annotations

import os

from kernelfleet.kernels.stores.base import (
    SCHEMA_VERSION,
    ChangeCallback,
    KernelStore,
    LeaseHeldError,
    ReplicaInfo,
    SchemaVersionError,
    StopWatching,
    StoredKernel,
)

__all__ = [
    "SCHEMA_VERSION",
    "ChangeCallback",
    "KernelStore",
    "LeaseHeldError",
    "ReplicaInfo",
    "SchemaVersionError",
    "StopWatching",
    "StoredKernel",
    "open_store",
]


def open_store(url: str, data_dir: str) -> KernelStore:
    """The store for *url*: ``sqlite:///abs/path.sqlite`` or ``postgresql://…``; empty means
    SQLite in *data_dir*."""
    if not url or url.startswith("sqlite://"):
        from kernelfleet.kernels.stores.sqlite import SQLiteStore

        path = url[len("sqlite://") :] if url else os.path.join(data_dir, "kernels.sqlite")
        return SQLiteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        from kernelfleet.kernels.stores.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(
        f"Unsupported kernel store URL {url!r}: use sqlite:///<path> or postgresql://…"
    )
