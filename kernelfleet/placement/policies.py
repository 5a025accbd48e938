"""Host selection policies: pure functions of the candidates and what the fleet knows.

``round-robin`` takes the candidate picked least recently (never-picked hosts first, in list
order), which is plain round-robin for one host list and stays fair when kernelspecs with
overlapping host lists share the fleet. ``least-connection`` takes the host with the fewest
kernels of this gateway (all kernelspecs), ties broken round-robin. ``load`` ranks by the
host's load per CPU and memory use as reported by its agent, plus the kernels this gateway
placed there, so that a burst of starts does not pile onto one host before its load average
moves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ALGORITHMS = ("round-robin", "least-connection", "load")

#: Weight of one kernel of ours in the ``load`` score (in units of "one busy CPU per CPU").
KERNEL_WEIGHT = 0.25


@dataclass(frozen=True)
class HostLoad:
    """What an agent reports about its host."""

    loadavg1: float
    cpus: int
    mem_total: int
    mem_available: int

    @classmethod
    def from_reply(cls, reply: Mapping[str, object]) -> HostLoad:
        loadavg = reply.get("loadavg")
        first = loadavg[0] if isinstance(loadavg, list) and loadavg else 0.0
        return cls(
            loadavg1=_number(first, 0.0),
            cpus=max(int(_number(reply.get("cpus"), 1)), 1),
            mem_total=int(_number(reply.get("mem_total"), 0)),
            mem_available=int(_number(reply.get("mem_available"), 0)),
        )


def _number(value: object, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) else default


def load_score(load: HostLoad, our_kernels: int) -> float:
    """Lower is better: CPU load per core + fraction of memory in use + our kernels there."""
    mem_used = 0.0
    if load.mem_total > 0:
        mem_used = 1.0 - min(load.mem_available, load.mem_total) / load.mem_total
    return load.loadavg1 / load.cpus + mem_used + KERNEL_WEIGHT * our_kernels


def rank_hosts(
    algorithm: str,
    candidates: Sequence[str],
    *,
    counts: Mapping[str, int],
    last_pick: Mapping[str, int],
    loads: Mapping[str, HostLoad] | None = None,
) -> list[str]:
    """Order *candidates* best first for *algorithm* (see the module docstring)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown load_balancing_algorithm {algorithm!r}")
    position = {host: i for i, host in enumerate(candidates)}

    def rr_key(host: str) -> tuple[int, int]:
        return (last_pick.get(host, -1), position[host])

    if algorithm == "round-robin":
        return sorted(candidates, key=rr_key)
    if algorithm == "least-connection":
        return sorted(candidates, key=lambda h: (counts.get(h, 0), *rr_key(h)))
    loads = loads or {}

    def load_key(host: str) -> tuple[int, float, int, int]:
        load = loads.get(host)
        if load is None:  # no report: after every host that has one
            return (1, 0.0, *rr_key(host))
        return (0, load_score(load, counts.get(host, 0)), *rr_key(host))

    return sorted(candidates, key=load_key)
