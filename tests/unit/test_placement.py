"""Placement policies as pure functions: no hosts needed."""

from __future__ import annotations

from collections import Counter

import pytest

from kernelfleet.placement.policies import HostLoad, load_score, rank_hosts

HOSTS = ["h1", "h2", "h3"]


def simulate(algorithm: str, n: int, counts: dict[str, int] | None = None) -> list[str]:
    """Place *n* kernels one after the other the way the fleet does."""
    counts = dict(counts or {})
    last_pick: dict[str, int] = {}
    picks = []
    for seq in range(n):
        host = rank_hosts(algorithm, HOSTS, counts=counts, last_pick=last_pick)[0]
        counts[host] = counts.get(host, 0) + 1
        last_pick[host] = seq
        picks.append(host)
    return picks


def test_round_robin_cycles_in_list_order() -> None:
    assert simulate("round-robin", 6) == ["h1", "h2", "h3", "h1", "h2", "h3"]


def test_round_robin_ignores_counts() -> None:
    assert simulate("round-robin", 3, {"h1": 10}) == ["h1", "h2", "h3"]


def test_round_robin_stays_fair_across_overlapping_host_lists() -> None:
    last_pick = {"h1": 5, "h2": 1}
    assert rank_hosts("round-robin", ["h1", "h2"], counts={}, last_pick=last_pick)[0] == "h2"
    # a host never picked comes first
    assert rank_hosts("round-robin", HOSTS, counts={}, last_pick=last_pick)[0] == "h3"


def test_least_connection_fills_the_emptiest_host() -> None:
    picks = simulate("least-connection", 3, {"h1": 2, "h2": 1})
    assert picks[0] == "h3"
    assert Counter(picks) + Counter({"h1": 2, "h2": 1}) == {"h1": 2, "h2": 2, "h3": 2}


def test_least_connection_ties_go_round_robin() -> None:
    assert simulate("least-connection", 6) == ["h1", "h2", "h3", "h1", "h2", "h3"]


def test_load_prefers_idle_hosts_and_penalises_our_own_kernels() -> None:
    gib = 1 << 30
    loads = {
        "h1": HostLoad(loadavg1=3.8, cpus=2, mem_total=8 * gib, mem_available=4 * gib),
        "h2": HostLoad(loadavg1=0.1, cpus=2, mem_total=8 * gib, mem_available=7 * gib),
        "h3": HostLoad(loadavg1=0.1, cpus=2, mem_total=8 * gib, mem_available=1 * gib),
    }
    assert rank_hosts("load", HOSTS, counts={}, last_pick={}, loads=loads) == ["h2", "h3", "h1"]
    # kernels we just placed count before the load average catches up
    assert rank_hosts("load", HOSTS, counts={"h2": 4}, last_pick={}, loads=loads)[0] == "h3"


def test_load_puts_hosts_without_a_report_last() -> None:
    loads = {"h2": HostLoad(loadavg1=50, cpus=1, mem_total=1, mem_available=0)}
    assert rank_hosts("load", HOSTS, counts={}, last_pick={}, loads=loads)[0] == "h2"


def test_load_score_parts() -> None:
    idle = HostLoad(loadavg1=0.0, cpus=4, mem_total=100, mem_available=100)
    assert load_score(idle, 0) == 0.0
    busy = HostLoad(loadavg1=4.0, cpus=4, mem_total=100, mem_available=50)
    assert load_score(busy, 2) == pytest.approx(1.0 + 0.5 + 0.5)


def test_host_load_from_a_partial_or_odd_reply() -> None:
    load = HostLoad.from_reply({"loadavg": [1.5, 1, 1], "cpus": 0, "mem_total": "x"})
    assert load == HostLoad(loadavg1=1.5, cpus=1, mem_total=0, mem_available=0)


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="random"):
        rank_hosts("random", HOSTS, counts={}, last_pick={})
