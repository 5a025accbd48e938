"""The one log per kernel that away sessions share (kernels.replay): each session gets back
exactly what a buffer of its own would have kept, and nothing is kept for nobody."""

from __future__ import annotations

import collections
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from kernelfleet.kernels.replay import BufferLimits, ReplayLog
from kernelfleet.kernels.wire import KernelMessage


def msg(n: int, size: int = 10) -> KernelMessage:
    header = {"msg_id": f"m{n}", "msg_type": "stream"}
    parts = [json.dumps(header).encode(), b"{}", b"{}", b"x" * size]
    return KernelMessage("iopub", parts, header)


class OwnBuffers:
    """The reference: a buffer per away session, each message appended to every one."""

    def __init__(self, limits: BufferLimits) -> None:
        self.limits = limits
        self.buffers: dict[str, tuple[collections.deque[KernelMessage], list[int]]] = {}

    def leave(self, sid: str, unsent: list[KernelMessage]) -> None:
        self.buffers[sid] = (collections.deque(), [0, 0])
        for m in unsent[-self.limits.max_messages :]:
            self.buffers[sid][0].append(m)

    def append(self, m: KernelMessage) -> None:
        for kept, dropped in self.buffers.values():
            kept.append(m)
            while len(kept) > self.limits.max_messages or (
                sum(x.size for x in kept) > self.limits.max_bytes
            ):
                old = kept.popleft()
                dropped[0] += 1
                dropped[1] += old.size

    def back(self, sid: str) -> tuple[list[str], int, int] | None:
        got = self.buffers.pop(sid, None)
        if got is None:
            return None
        return [m.msg_id for m in got[0]], got[1][0], got[1][1]


steps = st.lists(
    st.one_of(
        st.tuples(st.just("leave"), st.sampled_from("abc"), st.just(0)),
        st.tuples(st.just("msg"), st.integers(1, 60), st.just(0)),
        st.tuples(st.just("back"), st.sampled_from("abc"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps, st.integers(1, 6), st.integers(20, 200))
def test_every_session_gets_back_exactly_what_a_buffer_of_its_own_would_have_kept(
    plan: list[tuple[str, object, int]], max_messages: int, max_bytes: int
) -> None:
    limits = BufferLimits(max_messages=max_messages, max_bytes=max_bytes)
    log, ref = ReplayLog(limits), OwnBuffers(limits)
    n = 0
    for op, arg, extra in plan:
        if op == "leave":
            sid = str(arg)
            if sid in ref.buffers:
                continue  # a session leaves once before it is back
            unsent = [msg(1000 + n + i) for i in range(extra)]
            n += extra
            log.leave(sid, unsent)
            ref.leave(sid, unsent)
        elif op == "msg":
            n += 1
            m = msg(n, int(str(arg)))
            log.append(m)
            ref.append(m)
        else:
            sid = str(arg)
            got, want = log.back(sid), ref.back(sid)
            if want is None:
                assert got is None
                continue
            assert got is not None
            ids, dropped, dropped_bytes = want
            assert [m.msg_id for m in got.messages] == ids
            assert (got.dropped_messages, got.dropped_bytes) == (dropped, dropped_bytes)
    if not log.sessions:
        assert not log.entries and log.nbytes == 0


def test_nothing_is_kept_while_no_session_is_away() -> None:
    log = ReplayLog(BufferLimits())
    for n in range(100):
        log.append(msg(n))
    assert not log.entries
    log.leave("s", [])
    log.append(msg(200))
    assert len(log.entries) == 1
    back = log.back("s")
    assert back is not None and [m.msg_id for m in back.messages] == ["m200"]
    assert not log.entries


def test_a_message_is_stored_once_however_many_sessions_are_away() -> None:
    log = ReplayLog(BufferLimits())
    for sid in range(500):
        log.leave(f"s{sid}", [])
    for n in range(10):
        log.append(msg(n))
    assert len(log.entries) == 10
    back = log.back("s7")
    assert back is not None and len(back.messages) == 10


def test_a_session_back_after_drops_learns_how_many_messages_and_bytes_it_lost() -> None:
    log = ReplayLog(BufferLimits(max_messages=3))
    log.leave("s", [msg(0)])
    for n in range(1, 11):
        log.append(msg(n, size=100))
    back = log.back("s")
    assert back is not None
    assert [m.msg_id for m in back.messages] == ["m8", "m9", "m10"]
    assert back.dropped_messages == 8  # the unsent one went first
    assert back.dropped_bytes == msg(0).size + 7 * msg(1, size=100).size


def test_a_session_away_too_long_is_forgotten() -> None:
    log = ReplayLog(BufferLimits(max_age_seconds=0.0))
    log.leave("s", [])
    log.append(msg(1))
    assert log.back("s") is None
    assert not log.entries
