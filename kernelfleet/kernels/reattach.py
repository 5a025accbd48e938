"""Taking kernels back after a gateway restart, and sharing them between gateways.

The rule for what a store row means at start:
- ``running``/``launched`` (a provisioner checkpoint exists): rebuild the kernel manager from the
  checkpoint, ask the provisioner whether the kernel still runs (for remote kernels the host
  agent answers), handshake with it, and serve it again under the same id. If it is gone, its
  leftovers are cleaned up and the row deleted.
- ``starting`` (the gateway died between the start of a launch and its checkpoint): whatever
  the launch may have left is found by the kernel id and stopped — never adopted, since the
  client that asked for it got an error — and the row deleted.
- ``dead``: cleaned up and deleted.

With a shared store (PostgreSQL) several gateways serve the same kernels: each adopts the rows
it does not hold yet and drops the kernels whose rows another gateway deleted.
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kernelfleet.kernels.logs import reopen_log
from kernelfleet.kernels.persistence import LOCAL_NAMES, provisioner_name, rebuild_manager
from kernelfleet.kernels.record import KernelRecord, Lifecycle, utcnow
from kernelfleet.kernels.secrets import SecretBoxError
from kernelfleet.kernels.store import StoredKernel

if TYPE_CHECKING:
    from kernelfleet.kernels.registry import KernelRegistry


@dataclass
class ReattachReport:
    reattached: int = 0
    gone: int = 0
    orphans_stopped: int = 0
    failed: int = 0


def name_of(record: KernelRecord) -> str:
    return provisioner_name(record.spec)


async def stop_leftovers(row: StoredKernel, payload: dict[str, Any], parent: Any) -> int:
    """Stop what an unrecorded launch may have left, by kernel id."""
    name = provisioner_name(payload.get("kernel_spec") or {})
    if name in LOCAL_NAMES:
        from kernelfleet.provisioners.local import stop_orphans

        return await stop_orphans(row.id)
    # Remote provisioners may offer a class-level hook to find a kernel by id on their hosts.
    from jupyter_client.provisioning.factory import KernelProvisionerFactory

    factory = KernelProvisionerFactory.instance(parent=parent)
    klass = factory.provisioners.get(name)
    hook = getattr(klass.load() if klass is not None else None, "stop_orphans", None)
    if hook is None:
        return 0
    result = await hook(row.id, payload.get("kernel_spec") or {}, parent=parent)
    return int(result or 0)


async def adopt(
    registry: KernelRegistry, row: StoredKernel, *, claim: bool, answer_within: float
) -> str:
    """Serve the kernel of *row* from this gateway; returns 'reattached', 'gone', 'orphan',
    'pending' (a launch another gateway may still be running) or 'skipped'."""
    box = registry.persist.box
    assert box is not None
    if row.pooled and registry.shared_store:
        return "skipped"  # warm kernels are handed over only by the gateway that started them
    payload = row.unseal(box)
    if row.state == "starting" or "provisioner_info" not in payload:
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
    )
    record.manager = await rebuild_manager(row, payload, registry)
    launch_args: Any = record.manager._launch_args
    launch_args["env"] = record.env  # one env: a pool hand-over also applies to restarts
    if record.log_path and name_of(record) in LOCAL_NAMES:
        log_file = await asyncio.to_thread(reopen_log, record)
        if log_file is not None:
            launch_args.update(stdout=log_file, stderr=subprocess.STDOUT)
    prov = record.manager.provisioner
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


async def reattach_all(registry: KernelRegistry, answer_within: float) -> ReattachReport:
    """At gateway start: take back every kernel in the store (see the module docstring)."""
    report = ReattachReport()
    store = registry.persist.store
    if store is None:
        return report
    rows = await store.all()

    async def one(row: StoredKernel) -> None:
        try:
            outcome = await adopt(registry, row, claim=True, answer_within=answer_within)
        except SecretBoxError as exc:
            registry.log.error("kernel %s: %s", row.id, exc)
            report.failed += 1
            return
        except Exception:
            registry.log.exception("could not reattach kernel %s", row.id)
            report.failed += 1
            return
        if outcome == "reattached":
            report.reattached += 1
        elif outcome == "gone":
            report.gone += 1
        elif outcome == "orphan":
            report.orphans_stopped += 1

    await asyncio.gather(*(one(r) for r in rows if r.id not in registry.records))
    return report


async def adopt_one(registry: KernelRegistry, kernel_id: str, answer_within: float) -> None:
    """With a shared store: serve *kernel_id* if another gateway started it (one row read)."""
    store = registry.persist.store
    if store is None or kernel_id in registry.records:
        return
    row = await store.get(kernel_id)
    if row is not None and row.state == "running" and not row.pooled:
        await adopt(registry, row, claim=False, answer_within=answer_within)


async def sync_shared(registry: KernelRegistry, answer_within: float) -> None:
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
