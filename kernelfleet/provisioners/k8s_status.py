"""What a kernel pod's status means for its launch and its liveness (pure; no I/O).

:func:`pod_view` reduces a pod (its JSON) to the facts the provisioner acts on;
:func:`launch_failure` says when a start cannot succeed — unschedulable, an image that cannot
be pulled, a container that cannot start or exited — in the cluster's own words;
:func:`phase_text` names what a start waits for (``pending``, ``pulling its image``, …).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kernelfleet.provisioners.k8s_pod import CONTAINER

#: Waiting reasons after which a start cannot succeed without someone changing something.
FATAL_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
    }
)


@dataclass(frozen=True)
class PodView:
    """The few facts of a pod a launch and the monitor act on."""

    phase: str = ""
    ip: str = ""
    node: str = ""
    waiting: str = ""
    waiting_message: str = ""
    exit_code: int | None = None
    terminated_reason: str = ""
    terminated_message: str = ""
    unschedulable: str = ""
    deleting: bool = False

    @property
    def ended(self) -> bool:
        return self.phase in ("Succeeded", "Failed") or self.exit_code is not None


def pod_view(pod: Mapping[str, Any]) -> PodView:
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    waiting = waiting_message = reason = message = ""
    code: int | None = None
    for cs in status.get("containerStatuses") or []:
        if not isinstance(cs, dict) or cs.get("name") not in (CONTAINER, None):
            continue
        state = cs.get("state") or {}
        if isinstance(state.get("waiting"), dict):
            waiting = str(state["waiting"].get("reason") or "")
            waiting_message = str(state["waiting"].get("message") or "")
        if isinstance(state.get("terminated"), dict):
            term = state["terminated"]
            code = int(term.get("exitCode", 0) or 0)
            reason = str(term.get("reason") or "")
            message = str(term.get("message") or "")
    unschedulable = ""
    for cond in status.get("conditions") or []:
        if (
            isinstance(cond, dict)
            and cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            unschedulable = str(cond.get("message") or "no node fits")
    return PodView(
        phase=str(status.get("phase") or ""),
        ip=str(status.get("podIP") or ""),
        node=str(spec.get("nodeName") or ""),
        waiting=waiting,
        waiting_message=waiting_message,
        exit_code=code,
        terminated_reason=reason,
        terminated_message=message,
        unschedulable=unschedulable,
        deleting=bool(meta.get("deletionTimestamp")),
    )


#: Parts of a waiting message that mean the kubelet will try again by itself: a slow kubelet's
#: secret or config-map cache not synced yet (the secret exists; it is only late).
TRANSIENT_MESSAGES = ("failed to sync secret cache", "failed to sync configmap cache")


def transient(view: PodView) -> bool:
    """Whether the pod's waiting reason passes by itself (the kubelet retries it)."""
    return view.waiting == "CreateContainerConfigError" and any(
        m in view.waiting_message for m in TRANSIENT_MESSAGES
    )


def launch_failure(view: PodView) -> str | None:
    """The cluster's reason why this pod's start cannot succeed, else None."""
    if view.unschedulable:
        return f"the pod cannot be scheduled: {view.unschedulable}"
    if view.waiting in FATAL_WAITING and not transient(view):
        return f"{view.waiting}: {view.waiting_message or 'no message'}"
    if view.ended:
        why = view.terminated_message or view.terminated_reason or view.phase
        return f"the kernel's container exited with status {view.exit_code} ({why})"
    return None


def phase_text(view: PodView, events: Sequence[str] = ()) -> str:
    """What the launch is waiting for, for errors and the model (``pulling image …``)."""
    if view.deleting:
        return "being deleted"
    if not view.node:
        return "pending (not yet scheduled)"
    for text in reversed(events):
        if text.startswith("Pulling"):
            return f"pulling its image on {view.node} ({text})"
    if view.waiting:
        return f"{view.waiting} on {view.node}"
    if view.phase == "Running":
        return f"running on {view.node} (the kernel has not answered yet)"
    return f"{view.phase.lower() or 'pending'} on {view.node}"
