"""What the cluster looked like when a Kubernetes test failed: kernel pods (phase, container
states, IP, node), the latest events, each kernel pod's log tail, this machine's TCP
connections to pods and the daemons' log tails.
Added to the failing test's report (tests/conftest.py), so that a CI failure can be read
without the machine."""

from __future__ import annotations

import contextlib
import subprocess
from typing import Any

from tests.k8s.cluster import K8sCluster

#: The cluster of the session once it is up (set by tests/k8s/fixture.py).
CURRENT: list[K8sCluster] = []


def _states(pod: dict[str, Any]) -> str:
    out = []
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        state = cs.get("state") or {}
        for kind, detail in state.items():
            why = detail.get("reason") or ""
            code = detail.get("exitCode")
            out.append(f"{cs.get('name')}={kind}{f'({why})' if why else ''}"
                       f"{f' exit {code}' if code is not None else ''}")  # fmt: skip
    return ", ".join(out) or "-"


def report(cluster: K8sCluster, log_chars: int = 1500) -> str:
    """The whole report (never raises: a broken cluster says so)."""
    lines: list[str] = []
    try:
        pods = cluster.api("GET", "/api/v1/pods", timeout=5).get("items") or []
    except Exception as exc:  # the report of a broken cluster is that it is broken
        return f"(cluster unreadable: {exc})\n{cluster.log_tails(log_chars)}"
    lines.append(f"pods ({len(pods)}):")
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        lines.append(
            f"  {meta.get('namespace')}/{meta.get('name')} {status.get('phase')} "
            f"ip={status.get('podIP')} deleting={bool(meta.get('deletionTimestamp'))} "
            f"[{_states(pod)}]"
        )
    with contextlib.suppress(Exception):
        events = cluster.api("GET", "/api/v1/events", timeout=5).get("items") or []
        events.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        lines.append("latest events:")
        for e in events[-25:]:
            obj = e.get("involvedObject") or {}
            lines.append(
                f"  {e.get('lastTimestamp') or e.get('eventTime')} {obj.get('namespace')}/"
                f"{obj.get('name')} {e.get('reason')}: {str(e.get('message'))[:200]}"
            )
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get("app.kubernetes.io/component") != "kernel":
            continue
        path = f"/api/v1/namespaces/{meta.get('namespace')}/pods/{meta.get('name')}/log"
        with contextlib.suppress(Exception):
            text = cluster.api("GET", path + "?tailLines=30", timeout=5)
            lines.append(f"--- log of {meta.get('name')}:\n{str(text)[-log_chars:]}")
    with contextlib.suppress(Exception):  # the gateway's TCP connections to pods (ZMQ, ws)
        ss = subprocess.run(
            ["ss", "-tn", "dst", "10.98.0.0/24"], capture_output=True, text=True, timeout=10
        )
        lines.append(f"--- TCP connections to pods (ss -tn):\n{ss.stdout[-6000:]}")
    lines.append(cluster.log_tails(log_chars))
    return "\n".join(lines)
