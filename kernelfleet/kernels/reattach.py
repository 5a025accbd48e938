"""Taking kernels back after a gateway restart, and sharing them between gateways.

The rule for what a store row means at start:
- ``running``/``launched`` (a kernel its client knows: running, or restarted and checkpointed
  but not answering yet; ``launched`` is also a third-party provisioner's only checkpoint):
  rebuild the kernel manager from the checkpoint, ask the provisioner whether the kernel still
  runs (for remote kernels the host agent answers), handshake with it, and serve it again under
  the same id. If it is gone, its leftovers are cleaned up and the row deleted.
- ``launching`` (the gateway died after a launch checkpoint, before the kernel answered): the
  resource the checkpoint names is stopped by its id — never adopted, since the client that
  asked for it got an error — and the row deleted.
- ``starting`` (the gateway died before the launch's first checkpoint): whatever the launch may
  have left is looked for by the kernel id and stopped, and the row deleted.
- ``dead``: cleaned up and deleted.

With a shared store (PostgreSQL) several gateways serve the same kernels: each adopts the rows
it does not hold yet and drops the kernels whose rows another gateway deleted.
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass
from typing import Any

from kernelfleet.errors import describe
from kernelfleet.kernels.events import KernelEvent
from kernelfleet.kernels.lifecycle import KernelLifecycle
from kernelfleet.kernels.logs import reopen_log
from kernelfleet.kernels.persistence import jsonable, rebuild_manager
from kernelfleet.kernels.record import KernelRecord, Lifecycle
from kernelfleet.kernels.secrets import SecretBoxError
from kernelfleet.kernels.stores import StoredKernel
from kernelfleet.kernels.timestamps import utcnow
from kernelfleet.provisioners.base import KernelfleetProvisioner, gateway_keeps_log
from kernelfleet.provisioners.factory import provisioner_class


@dataclass
class ReattachReport:
    reattached: int = 0
    gone: int = 0
    orphans_stopped: int = 0
    failed: int = 0


async def stop_leftovers(row: StoredKernel, payload: dict[str, Any], parent: Any) -> int:
    """Stop what an unfinished launch may have left.

    With a checkpoint (state ``launching``), the provisioner is rebuilt from it and stops the
    resource it names (a host's process, an application id, a pod), by its id. Without one (the
    gateway died before the first checkpoint), the provisioner's backend looks for the kernel
    id wherever that kernelspec's kernels may run.
    """
    spec = payload.get("kernel_spec") or {}
    if row.state == "launching" and payload.get("provisioner_info"):
        km = await rebuild_manager(row, payload, parent)
        prov = km.provisioner
        if isinstance(prov, KernelfleetProvisioner):
            await prov.stop_launch()
            return 1
    klass = provisioner_class(spec, parent)
    if klass is None or not issubclass(klass, KernelfleetProvisioner):
        return 0
    return await klass.stop_orphans(row.id, spec, parent=parent)


async def adopt(
    registry: KernelLifecycle, row: StoredKernel, *, claim: bool, answer_within: float
) -> str:
    """Serve the kernel of *row* from this gateway; returns 'reattached', 'gone', 'orphan',
    'pending' (a launch another gateway may still be running) or 'skipped'."""
    box = registry.persist.box
    assert box is not None
    if row.pooled and registry.shared_store:
        return "skipped"  # warm kernels are handed over only by the gateway that started them
    payload = row.unseal(box)
    if row.state in {"starting", "launching"} or "provisioner_info" not in payload:
        if registry.shared_store:
            # Another gateway may be launching it right now: only a launch older than any
            # launch may last is unfinished.
            age = (utcnow() - row.created).total_seconds()
            if age < registry.max_launch_timeout + 30:
                return "pending"
        await stop_leftovers(row, payload, registry)
        await registry.persist.delete(row.id)
        return "orphan"
    record = KernelRecord(
        id=row.id,
        name=row.name,
        owner=row.owner,
        env=dict(payload.get("env") or {}),
        launch_timeout=float(payload.get("launch_timeout") or registry.launch_timeout),
        created=row.created,
        last_activity=row.last_activity,
        restart_count=row.restart_count,
        spec=dict(payload.get("kernel_spec") or {}),
        resource_dir=str(payload.get("resource_dir") or ""),
        pooled=row.pooled,
        log_path=payload.get("log_path"),
        replica="" if claim else row.gateway,
    )
    record.manager = await rebuild_manager(row, payload, registry, registry.context)
    launch_args: Any = record.manager._launch_args
    launch_args["env"] = record.env  # one env: a pool hand-over also applies to restarts
    prov = record.manager.provisioner
    if record.log_path and prov is not None and gateway_keeps_log(type(prov)):
        log_file = await asyncio.to_thread(reopen_log, record)
        if log_file is not None:
            launch_args.update(stdout=log_file, stderr=subprocess.STDOUT)
    alive = False
    if row.state != "dead" and prov is not None:
        try:
            alive = prov.has_process and await prov.poll() is None
        except Exception as exc:
            registry.log.warning("kernel %s: cannot tell whether it runs: %s", row.id, exc)
        if not alive:
            registry.log.info("kernel %s (%s) no longer runs", row.id, row.host or "local")
    if alive:
        registry.records[row.id] = record
        try:
            async with asyncio.timeout(answer_within):
                await registry.connect_record(record)
        except Exception as exc:
            registry.log.warning("kernel %s runs but does not answer: %s", row.id, exc)
            alive = False
    if not alive:
        if not claim:
            # Not ours to judge (another gateway serves it, maybe from another machine):
            # drop our view, never stop it or touch its row.
            if registry.records.get(row.id) is record:
                await registry.forget(record)
            return "skipped"
        registry.records.setdefault(row.id, record)
        await registry.destroy(record)
        return "gone"
    record.lifecycle = Lifecycle.RUNNING
    record.execution_state = "idle"
    if claim:
        await registry.persist.save(record, "running", pooled=record.pooled)
    return "reattached"


async def refresh_standby(
    registry: KernelLifecycle, record: KernelRecord, row: StoredKernel
) -> None:
    """Bring a kernel another replica owns up to date with its row after that replica
    restarted it: the provisioner's new checkpoint (the new process), and the channels if the
    connection changed (a restart that had to take other ports)."""
    box = registry.persist.box
    km = record.manager
    if box is None or km is None or km.provisioner is None or row.state != "running":
        return
    payload = row.unseal(box)
    info = payload.get("provisioner_info")
    if isinstance(info, dict):
        await km.provisioner.load_provisioner_info(info)
    record.restart_count = row.restart_count
    record.replica = row.gateway
    conn = payload.get("connection_info")
    if isinstance(conn, dict) and conn and conn != jsonable(dict(km.get_connection_info())):
        km.load_connection_info(conn)  # type: ignore[arg-type]
        if record.channels is not None:
            await registry.connect_record(record)
    if record.lifecycle is Lifecycle.RESTARTING:
        record.lifecycle = Lifecycle.RUNNING


async def reattach_all(registry: KernelLifecycle, answer_within: float) -> ReattachReport:
    """At gateway start: take back every kernel in the store (see the module docstring)."""
    report = ReattachReport()
    store = registry.persist.store
    if store is None:
        return report
    rows = await store.all()

    def tell(row: StoredKernel, outcome: str, cause: str = "", message: str = "") -> None:
        registry.events.publish(
            KernelEvent(
                "reattach",
                outcome,
                kernel_id=row.id,
                kernelspec=row.name,
                owner=row.owner,
                host=row.host or "",
                cause=cause,
                message=message,
                source="gateway",
            )
        )

    async def one(row: StoredKernel) -> None:
        try:
            # With a shared store, another replica's kernel stays its own (kernels.replicas
            # takes a dead replica's rows over); this replica claims its own and unowned ones.
            mine = not registry.shared_store or row.gateway in ("", registry.persist.gateway_id)
            outcome = await adopt(registry, row, claim=mine, answer_within=answer_within)
        except SecretBoxError as exc:
            registry.log.error("kernel %s: %s", row.id, exc)
            report.failed += 1
            tell(row, "failed", "secret", str(exc))
            return
        except Exception as exc:
            registry.log.exception("could not reattach kernel %s", row.id)
            report.failed += 1
            tell(row, "failed", "error", describe(exc))
            return
        if outcome == "reattached":
            report.reattached += 1
            tell(row, "ok")
        elif outcome == "gone":
            report.gone += 1
            tell(row, "failed", "gone")
        elif outcome == "orphan":
            report.orphans_stopped += 1
            tell(row, "failed", "orphan")

    await asyncio.gather(*(one(r) for r in rows if r.id not in registry.records))
    return report


async def adopt_one(registry: KernelLifecycle, kernel_id: str, answer_within: float) -> None:
    """With a shared store: serve *kernel_id* if another gateway started it (one row read)."""
    store = registry.persist.store
    if store is None or kernel_id in registry.records:
        return
    row = await store.get(kernel_id)
    if row is not None and row.state == "running" and not row.pooled:
        await adopt(registry, row, claim=False, answer_within=answer_within)


async def sync_shared(registry: KernelLifecycle, answer_within: float) -> None:
    """With a shared store: adopt new running rows, drop kernels whose rows are gone."""
    store = registry.persist.store
    if store is None:
        return
    rows = {r.id: r for r in await store.all()}
    for kid, record in list(registry.records.items()):
        if kid not in rows and record.lifecycle is Lifecycle.RUNNING and not record.lock.locked():
            registry.log.info("kernel %s was shut down by another gateway", kid)
            await registry.forget(record)

    async def one(kid: str, row: StoredKernel) -> None:
        try:
            await adopt(registry, row, claim=False, answer_within=answer_within)
        except Exception:
            registry.log.exception("could not adopt kernel %s", kid)

    # Pooled kernels are handed over only by the gateway that started them.
    await asyncio.gather(
        *(
            one(kid, row)
            for kid, row in rows.items()
            if kid not in registry.records and row.state == "running" and not row.pooled
        )
    )
