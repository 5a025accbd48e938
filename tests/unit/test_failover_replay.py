"""What a replica replays to the clients of a replica that died (kernels.failover), and the
notice that tells them what may be missing: pure parts, no kernel."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from kernelfleet.kernels.failover import Budget, RecentLimits, RecentOutput
from kernelfleet.kernels.notices import loss_notice
from kernelfleet.kernels.wire import KernelMessage


def message(msg_type: str, parent: str, content: dict[str, object], n: int) -> KernelMessage:
    header = {"msg_id": f"m{n}", "msg_type": msg_type, "session": "k"}
    parts = [json.dumps(p).encode() for p in (header, {"msg_id": parent}, {}, content)]
    return KernelMessage("iopub", parts, header)


def status(parent: str, state: str, n: int) -> KernelMessage:
    return message("status", parent, {"execution_state": state}, n)


def stream(parent: str, text: str, n: int) -> KernelMessage:
    return message("stream", parent, {"name": "stdout", "text": text}, n)


def test_only_messages_that_arrived_after_the_death_are_replayed() -> None:
    ring = RecentOutput(RecentLimits())
    ring.add(stream("a", "before", 1), now=10.0)
    ring.add(stream("a", "after", 2), now=12.0)
    assert [m.msg_id for m in ring.since(11.0)] == ["m2"]


def test_requests_running_at_the_death_or_just_before_it_are_reported() -> None:
    ring = RecentOutput(RecentLimits())
    # request "done" ended long before the death; "running" was busy at it; "late" printed in
    # the uncertain second before it; "next" started after it
    ring.add(status("done", "busy", 1), now=1.0)
    ring.add(status("done", "idle", 2), now=1.5)
    ring.add(status("running", "busy", 3), now=5.0)
    ring.add(stream("late", "x", 4), now=9.5)
    ring.add(status("next", "busy", 5), now=11.0)
    affected = ring.affected_requests(died=10.0, uncertainty=1.0)
    assert set(affected) == {"running", "late", "next"}


def test_the_ring_forgets_by_age_count_and_size_and_says_when_a_replay_is_incomplete() -> None:
    ring = RecentOutput(RecentLimits(seconds=5.0, max_messages=3, max_bytes=10_000))
    for n in range(5):
        ring.add(stream("a", "x", n), now=float(n))
    assert len(ring.messages) == 3
    assert not ring.covers(0.5)  # messages after 0.5 were dropped
    assert ring.covers(2.0)
    ring.add(stream("a", "x", 9), now=100.0)
    assert [m.msg_id for m in ring.since(0)] == ["m9"]  # older than 5 s: gone
    small = RecentOutput(RecentLimits(max_bytes=1))
    small.add(stream("a", "x" * 100, 1), now=0.0)
    assert small.nbytes == 0 and not small.messages


def test_the_loss_notice_names_the_replica_the_time_and_the_requests_for_people_and_programs() -> (
    None
):
    notice = loss_notice("gw-2", "2026-12-04T12:00:01.5Z", ["r1", "r2"], complete=True)
    header, _parent, metadata, content = (json.loads(p) for p in notice.parts)
    assert header["msg_type"] == "stream" and header["session"] == "kernelfleet"
    assert content["name"] == "stderr"
    assert "gw-2" in content["text"] and "12:00:01 UTC" in content["text"]
    assert "2 request(s)" in content["text"]
    lost = {"messages": -1, "requests": ["r1", "r2"], "sent_before": "2026-12-04T12:00:01.5Z"}
    assert metadata == {"kernelfleet": {"lost": lost}}
    quiet = loss_notice("gw-2", "2026-12-04T12:00:01.5Z", [], complete=False)
    text = json.loads(quiet.parts[3])["text"]
    assert "no request was running" in text and "too old or too large" in text


events = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=100, allow_nan=False),
        st.sampled_from(["busy", "idle", "out"]),
        st.sampled_from(["r1", "r2", "r3", ""]),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(events, st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=5))
def test_replay_and_report_never_overlap_with_what_was_surely_delivered(
    raw: list[tuple[float, str, str]], died: float, uncertainty: float
) -> None:
    """Whatever arrives: a message is replayed iff it arrived after the death, and every
    request with output in the uncertain window or after the death is reported."""
    ring = RecentOutput(RecentLimits(seconds=1e9))
    times = sorted(t for t, _, _ in raw)
    for n, (t, (_, kind, parent)) in enumerate(zip(times, raw, strict=True)):
        msg = stream(parent, "x", n) if kind == "out" else status(parent, kind, n)
        ring.add(msg, now=t)
    replayed = {m.msg_id for m in ring.since(died)}
    assert replayed == {m.msg_id for t, m in ring.messages if t > died}
    affected = set(ring.affected_requests(died, uncertainty))
    for t, m in ring.messages:
        if t >= died - uncertainty and m.parent_msg_id():
            assert m.parent_msg_id() in affected


def test_all_rings_together_stay_within_the_replicas_budget() -> None:
    budget = Budget(max_bytes=10 * stream("a", "x", 0).size)
    limits = RecentLimits(budget=budget)
    busy, quiet = RecentOutput(limits), RecentOutput(limits)
    quiet.add(stream("q", "x", 0), now=0.0)
    for n in range(100):
        busy.add(stream("b", "x", n), now=1.0)
        assert budget.used <= budget.max_bytes
    assert len(quiet.messages) == 1  # the busy kernel gave up its history, not the quiet one
    assert busy.messages  # and still keeps some
    busy.close()
    quiet.close()
    assert budget.used == 0 and budget.rings == 0
