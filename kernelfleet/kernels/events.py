"""What happened to kernels, told to whoever listens: the audit log and the metrics.

The registry, the culler and the liveness monitor publish a :class:`KernelEvent` for each start,
refusal, failed start, restart, death, cull, stop and reattach; the gateway's audit log and
Prometheus metrics subscribe (:class:`EventBus`). Publishing is synchronous and cheap (no
``await``: a start's refusal is published before its answer is sent), and a subscriber that
raises is logged and skipped, never the publisher's problem.

Every field that becomes a metric label takes few values: ``backend`` is one of
:data:`BACKENDS`, ``outcome`` and ``cause`` are short fixed words (:func:`cause_of`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kernelfleet.errors import (
    Forbidden,
    HostsUnavailable,
    LaunchFailed,
    LaunchTimeout,
    LimitReached,
    PublicError,
    ResourcesUnavailable,
)
from kernelfleet.kernels.timestamps import utcnow

log = logging.getLogger("kernelfleet.events")

#: The backend label of a kernelspec's provisioner; any other provisioner is "other".
BACKENDS = {
    "kernelfleet-local": "local",
    "local-provisioner": "local",
    "kernelfleet-ssh": "ssh",
    "kernelfleet-yarn": "yarn",
    "kernelfleet-k8s": "k8s",
    "kernelfleet-docker": "docker",
}

#: Actions and their outcomes (metric label values and audit-log words).
ACTIONS = (
    "start",
    "restart",
    "interrupt",
    "shutdown",
    "cull",
    "death",
    "auto_restart",
    "reattach",
    "takeover",  # a replica took the kernel over from one that died (kernels.replicas)
)
OUTCOMES = ("ok", "refused", "failed")


def backend_of(spec: Mapping[str, Any]) -> str:
    """The backend label of a kernelspec (its ``metadata.kernel_provisioner``)."""
    meta = spec.get("metadata")
    prov = meta.get("kernel_provisioner") if isinstance(meta, Mapping) else None
    name = prov.get("provisioner_name") if isinstance(prov, Mapping) else None
    if not name:
        return "local"  # jupyter_client's default provisioner
    return BACKENDS.get(str(name), "other")


def cause_of(exc: BaseException) -> str:
    """A short, fixed word for why an action was refused or failed (a metric label)."""
    if isinstance(exc, LaunchTimeout | TimeoutError):
        return "timeout"
    if isinstance(exc, LimitReached):
        return "limit"
    if isinstance(exc, HostsUnavailable):
        return "hosts_unavailable"
    if isinstance(exc, ResourcesUnavailable):
        return "resources_unavailable"
    if isinstance(exc, LaunchFailed):
        return "launch_failed"
    if isinstance(exc, Forbidden):
        return "forbidden"
    if isinstance(exc, PublicError):
        if exc.status == 404:
            return "not_found"
        if exc.status == 409:
            return "conflict"
        if exc.status == 503:
            return "unavailable"
        return "bad_request" if exc.status < 500 else "error"
    return "error"


def outcome_of(exc: BaseException | None) -> str:
    """'ok', 'refused' (the request was wrong or not allowed: a 4xx) or 'failed'."""
    if exc is None:
        return "ok"
    return "refused" if isinstance(exc, PublicError) and exc.status < 500 else "failed"


@dataclasses.dataclass(frozen=True)
class KernelEvent:
    """One thing that happened to a kernel (or to a request for one)."""

    action: str  # one of ACTIONS
    outcome: str = "ok"  # one of OUTCOMES
    actor: str = ""  # who asked ("" for the gateway itself: culls, deaths, reattach)
    admin: bool = False  # whether the actor acted as an admin
    kernel_id: str = ""
    kernelspec: str = ""
    owner: str = ""
    backend: str = ""
    host: str = ""
    cause: str = ""  # why it was refused or failed (cause_of), or why it happened (culls)
    message: str = ""  # the whole reason, in words (audit log only)
    seconds: float | None = None  # how long a start or restart took
    pooled: bool = False  # a start served by a warm-pool kernel
    profile: str = ""  # the kernel profile it runs with
    source: str = "api"  # "api", "dashboard" or "gateway"
    at: dt.datetime = dataclasses.field(default_factory=utcnow)

    def as_json(self) -> dict[str, Any]:
        """The event as one audit-log line's object (empty fields left out)."""
        out: dict[str, Any] = {"time": self.at.isoformat(timespec="milliseconds")}
        for field in dataclasses.fields(self):
            if field.name == "at":
                continue
            value = getattr(self, field.name)
            if value in ("", None) or (field.name in {"pooled", "admin"} and not value):
                continue
            out[field.name] = round(value, 4) if isinstance(value, float) else value
        return out


Subscriber = Callable[[KernelEvent], None]


class EventBus:
    """Hands each published event to every subscriber, in order of subscription."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add *subscriber*; returns a function that removes it."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: KernelEvent) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                log.exception("an event subscriber failed on %s", event.action)
