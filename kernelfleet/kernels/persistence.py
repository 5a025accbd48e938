"""Bridging live kernel records and the store: checkpoints out, managers rebuilt in.

:class:`Persister` writes a record's row at each step of its life (the registry awaits it before
acknowledging the step) and batches ``last_activity`` updates. :func:`rebuild_manager` turns a
row back into a jupyter_client ``AsyncKernelManager`` whose provisioner was re-loaded from its
checkpoint (``load_provisioner_info``), so the registry can poll, signal, restart and shut down a
kernel that an earlier gateway process started.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager

from kernelfleet.kernels.record import KernelRecord
from kernelfleet.kernels.secrets import SecretBox
from kernelfleet.kernels.stores import KernelStore, StoredKernel
from kernelfleet.provisioners.base import provisioner_name
from kernelfleet.provisioners.factory import make_provisioner

log = logging.getLogger("kernelfleet.persistence")


def spec_from_dict(spec: dict[str, Any], resource_dir: str) -> KernelSpec:
    """A ``KernelSpec`` from a kernel.json dict (as the catalog read it, or as stored)."""
    return KernelSpec(resource_dir=resource_dir, **_spec_fields(spec))


class Persister:
    """Writes kernel records to a store (a no-op without one)."""

    def __init__(self, store: KernelStore | None, box: SecretBox | None, gateway_id: str) -> None:
        self.store = store
        self.box = box
        self.gateway_id = gateway_id
        self._dirty: dict[str, dt.datetime] = {}

    @property
    def enabled(self) -> bool:
        return self.store is not None

    async def save(self, record: KernelRecord, state: str, *, pooled: bool | None = None) -> None:
        if self.store is None or self.box is None:
            return
        await self.store.put(await self._row(record, state, pooled=pooled))

    async def reserve(
        self,
        record: KernelRecord,
        state: str,
        *,
        max_total: int,
        max_per_user: int,
    ) -> str | None:
        """:meth:`save`, unless the store's kernels (all its gateways') reach a limit: then
        nothing is written and ``"total"`` or ``"user"`` says which (see
        :meth:`KernelStore.reserve`)."""
        if self.store is None or self.box is None:
            return None
        row = await self._row(record, state)
        return await self.store.reserve(row, max_total, max_per_user)

    async def _row(
        self, record: KernelRecord, state: str, *, pooled: bool | None = None
    ) -> StoredKernel:
        assert self.box is not None
        km = record.manager
        payload: dict[str, Any] = {
            "env": record.env,
            "launch_timeout": record.launch_timeout,
            "kernel_spec": record.spec,
            "resource_dir": record.resource_dir,
            "log_path": record.log_path,
        }
        # "launching": the checkpoints so far (what was created, before it answers)
        if km is not None and km.provisioner is not None and state != "starting":
            payload["provisioner_info"] = jsonable(await km.provisioner.get_provisioner_info())
            payload["connection_info"] = jsonable(km.get_connection_info())
        row = StoredKernel(
            id=record.id,
            name=record.name,
            owner=record.owner,
            state=state,
            provisioner=provisioner_name(record.spec) or "kernelfleet-local",
            created=record.created,
            last_activity=record.last_activity,
            host=record.host,
            gateway=self.gateway_id,
            restart_count=record.restart_count,
            pooled=record.pooled if pooled is None else pooled,
        )
        row.seal(self.box, payload)
        return row

    async def delete(self, kernel_id: str) -> None:
        self._dirty.pop(kernel_id, None)
        if self.store is not None:
            await self.store.delete(kernel_id)

    def touched(self, record: KernelRecord) -> None:
        if self.store is not None:
            self._dirty[record.id] = record.last_activity

    async def flush(self) -> None:
        if self.store is not None and self._dirty:
            batch, self._dirty = self._dirty, {}
            try:
                await self.store.touch(batch)
            except BaseException:
                for kid, when in batch.items():  # keep what was not written for next time
                    self._dirty.setdefault(kid, when)
                raise


def jsonable(value: Any) -> Any:
    """JSON-ready copy: bytes (HMAC and CurveZMQ keys) become str, mappings and lists recurse."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


async def rebuild_manager(
    row: StoredKernel, payload: dict[str, Any], parent: Any, context: Any = None
) -> AsyncKernelManager:
    """An ``AsyncKernelManager`` attached to the kernel a stored row describes (its ZMQ
    sockets in *context*, the gateway's, when given)."""
    spec = spec_from_dict(payload.get("kernel_spec") or {}, payload.get("resource_dir") or "")
    extra: dict[str, Any] = {} if context is None else {"context": context}
    km = AsyncKernelManager(kernel_name=row.name, parent=parent, **extra)
    km._kernel_spec = spec  # the kernelspec as it was at launch, even if since removed
    km.kernel_id = row.id
    info: Any = payload.get("connection_info") or {}
    km.load_connection_info(info)
    provisioner = make_provisioner(km, spec, row.id)
    await provisioner.load_provisioner_info(payload.get("provisioner_info") or {})
    km.provisioner = provisioner
    launch_args: Any = {"env": payload.get("env") or {}, "kernel_id": row.id}
    km._launch_args = launch_args
    return km


def _spec_fields(spec: dict[str, Any]) -> dict[str, Any]:
    allowed = {"argv", "display_name", "language", "interrupt_mode", "env", "metadata"}
    return {k: v for k, v in spec.items() if k in allowed}
