"""What the dashboard shows of kernels, pools and failed starts, as JSON-ready dicts (pure but
for :func:`kernel_rss`, which reads ``/proc``).

A kernel row holds timestamps, not ages: the browser counts age and idle time itself, so a row
changes (and is pushed, :mod:`kernelfleet.dashboard.live`) only when the kernel does.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from jupyter_client.provisioning.local_provisioner import LocalProvisioner as JupyterLocal

from kernelfleet.kernels.events import KernelEvent, backend_of
from kernelfleet.kernels.record import KernelRecord, Lifecycle

#: The "owner" of warm-pool kernels, as shown.
POOL = "(warm pool)"
#: Memory is reported in whole MiB, so a few pages more or less push no update.
MIB = 1024 * 1024


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


def state_of(record: KernelRecord) -> str:
    """``execution_state`` while the kernel runs, else where it is in its life."""
    if record.lifecycle is Lifecycle.RUNNING:
        return str(record.execution_state)
    return str(record.lifecycle.value)


def host_of(record: KernelRecord, backend: str) -> str:
    if record.host:
        return record.host
    return "local" if backend == "local" else ""


def kernel_row(record: KernelRecord, memory: int | None) -> dict[str, Any]:
    """One row of the kernels table. *memory*: the kernel process's resident memory in bytes,
    when the backend can tell (:func:`kernel_rss`)."""
    backend = backend_of(record.spec)
    return {
        "id": record.id,
        "owner": record.owner if not record.pooled else POOL,
        "spec": record.name,
        "display_name": str(record.spec.get("display_name") or record.name),
        "profile": record.profile,
        "backend": backend,
        "host": host_of(record, backend),
        "state": state_of(record),
        "reason": record.reason or "",
        "created": _ms(record.created),
        "last_activity": _ms(record.last_activity),
        "connections": record.connections,
        "memory": None if memory is None else memory // MIB * MIB,
        "restarts": record.restart_count,
    }


def kernel_pid(record: KernelRecord) -> int | None:
    """The pid of the kernel process on this machine, when it runs here: jupyter_client's
    local provisioner (and ours, a subclass) starts it as a child or adopts it by pid. Remote
    provisioners' kernels run elsewhere: None."""
    prov = record.manager.provisioner if record.manager is not None else None
    if isinstance(prov, JupyterLocal):
        pid = getattr(prov, "pid", None)
        return pid if isinstance(pid, int) and pid > 0 else None
    return None


def kernel_rss(record: KernelRecord) -> int | None:
    """Resident memory (bytes) of the kernel's process from ``/proc/<pid>/status``, or None
    when the backend cannot tell (remote kernels) or the process is gone."""
    pid = kernel_pid(record)
    if pid is None or not record.alive:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def diff_rows(
    before: Mapping[str, dict[str, Any]], after: Mapping[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of *after* that are new or changed, and the ids gone since *before*."""
    changed = [row for kid, row in after.items() if before.get(kid) != row]
    gone = [kid for kid in before if kid not in after]
    return changed, gone


def counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Kernels by state, by kernelspec and by host (sorted by name)."""
    by_state: Counter[str] = Counter()
    by_spec: Counter[str] = Counter()
    by_host: Counter[str] = Counter()
    for row in rows:
        by_state[row["state"]] += 1
        by_spec[row["spec"]] += 1
        by_host[row["host"] or "(not placed)"] += 1
    return {
        "by_state": dict(sorted(by_state.items())),
        "by_spec": dict(sorted(by_spec.items())),
        "by_host": dict(sorted(by_host.items())),
    }


def pool_row(name: str, size: int, members: Iterable[KernelRecord]) -> dict[str, Any]:
    """A warm pool: its size, the kernels ready in it and those still starting."""
    ready = starting = 0
    for record in members:
        if record.lifecycle is Lifecycle.RUNNING:
            ready += 1
        elif record.lifecycle is Lifecycle.STARTING:
            starting += 1
    return {"spec": name, "size": size, "ready": ready, "starting": starting}


def failure_row(event: KernelEvent) -> dict[str, Any] | None:
    """A failed or refused start or restart, as the overview lists it; None for others."""
    if event.action not in {"start", "restart"} or event.outcome == "ok":
        return None
    return {
        "time": _ms(event.at),
        "action": event.action,
        "outcome": event.outcome,
        "actor": event.actor,
        "owner": event.owner,
        "kernelspec": event.kernelspec,
        "host": event.host,
        "cause": event.cause,
        "message": event.message,
    }


def event_row(event: KernelEvent) -> dict[str, Any]:
    """A kernel event as the dashboard's live feed tells it (for notices)."""
    return {
        "time": _ms(event.at),
        "action": event.action,
        "outcome": event.outcome,
        "actor": event.actor,
        "kernel_id": event.kernel_id,
        "source": event.source,
        "message": event.message,
    }
