"""The load generator's verifier counts exactly what went wrong on a client's websocket.

A fake kernel answers the verifier's own requests (it runs their code for the output), the way
ipykernel does on a kernel shared by several clients: iopub goes to every client, a shell reply
only to the client that asked. Properties: clean traffic verifies clean however the output is
chunked and the clients interleave; every dropped, repeated or misrouted message is counted once
as lost, duplicated or cross-talk; a loss report turns "lost" into "reported lost". The last
tests drive a real :class:`LoadClient` against a tiny websocket server that drops the connection,
for reconnect mode.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application
from tornado.websocket import WebSocketHandler

from benchmarks.loadgen.client import V1, ClientSettings, Codec, LoadClient
from benchmarks.loadgen.runner import LoadConfig, run_load
from benchmarks.loadgen.verify import ClientVerifier, Request, SeenIds, loss_report

PROPS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

Msg = dict[str, Any]


def run_output(code: str) -> str:
    """What the request's code prints (it is our own generated code: prints only)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {})
    return out.getvalue()


class FakeKernel:
    """Messages as ipykernel sends them: ``<session>_<pid>_<n>`` ids, parent = the request."""

    def __init__(self) -> None:
        self.session = uuid.uuid4().hex
        self.count = 0

    def msg(
        self,
        channel: str,
        msg_type: str,
        parent: str,
        content: dict[str, Any],
        session: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Msg:
        self.count += 1
        header = {
            "msg_id": f"{self.session}_4242_{self.count}",
            "msg_type": msg_type,
            "session": session or self.session,
        }
        return {
            "header": header,
            "parent_header": {"msg_id": parent} if parent else {},
            "metadata": metadata or {},
            "content": content,
            "channel": channel,
        }

    def execute(
        self, parent: str, code: str, cuts: list[int] | None = None
    ) -> tuple[list[Msg], Msg]:
        """(iopub messages in order, the shell reply). *cuts*: where the output is split into
        stream messages (default: one per line)."""
        text = run_output(code)
        if cuts is None:
            chunks = text.splitlines(keepends=True)
        else:
            bounds = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
            chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
        iopub = [
            self.msg("iopub", "status", parent, {"execution_state": "busy"}),
            self.msg("iopub", "execute_input", parent, {"code": code}),
            *(self.msg("iopub", "stream", parent, {"name": "stdout", "text": c}) for c in chunks),
            self.msg("iopub", "status", parent, {"execution_state": "idle"}),
        ]
        return iopub, self.msg("shell", "execute_reply", parent, {"status": "ok"})


def feed(v: ClientVerifier, messages: list[Msg]) -> None:
    for m in messages:
        v.observe(m, time.monotonic())


def one_request(v: ClientVerifier, kernel: FakeKernel) -> tuple[Request, list[Msg], Msg]:
    req, code = v.new_execute(time.monotonic())
    iopub, reply = kernel.execute(req.msg_id, code)
    return req, iopub, reply


# -- clean traffic ------------------------------------------------------------------------------


@PROPS
@given(
    clients=st.integers(1, 4),
    requests=st.integers(1, 4),
    lines=st.integers(0, 4),
    data=st.data(),
)
def test_shared_kernel_traffic_is_clean_however_output_is_chunked_and_replies_interleave(
    clients: int, requests: int, lines: int, data: st.DataObject
) -> None:
    kernel = FakeKernel()
    verifiers = [ClientVerifier(c, lines) for c in range(clients)]
    broadcast: list[Msg] = []  # the kernel's iopub, in order, seen by every client
    replies: list[list[Msg]] = [[] for _ in range(clients)]
    order = data.draw(st.permutations([c for c in range(clients) for _ in range(requests)]))
    for c in order:
        req, code = verifiers[c].new_execute(time.monotonic())
        cuts = data.draw(st.lists(st.integers(0, 200), max_size=6))
        iopub, reply = kernel.execute(req.msg_id, code, cuts)
        broadcast += iopub
        replies[c].append(reply)
    for c, v in enumerate(verifiers):
        received = list(broadcast)
        for reply in replies[c]:  # shell and iopub are separate sockets: any position
            received.insert(data.draw(st.integers(0, len(received))), reply)
        feed(v, received)
        assert all(r.round_trip_done for r in v.pending.values())
        counts = v.finish()
        mine = sum(1 for m in broadcast if m["parent_header"]["msg_id"].startswith(v.prefix))
        assert counts.round_trips == requests
        assert counts.foreign_iopub == len(broadcast) - mine
        assert (counts.lost_messages, counts.duplicated, counts.cross_talk, counts.errors) == (
            0,
            0,
            0,
            0,
        ), v.problems


# -- loss, duplicates, cross-talk --------------------------------------------------------------


@PROPS
@given(lines=st.integers(0, 4), drops=st.lists(st.booleans(), min_size=8, max_size=8))
def test_each_dropped_message_of_a_request_is_counted_lost_once(
    lines: int, drops: list[bool]
) -> None:
    kernel = FakeKernel()
    v = ClientVerifier(3, lines)
    _, iopub, reply = one_request(v, kernel)
    messages = [*iopub, reply]
    kept = [m for m, drop in zip(messages, drops + [False] * 8, strict=False) if not drop]
    dropped = [m for m in messages if m not in kept]
    expected = sum(1 for m in dropped if m["header"]["msg_type"] != "execute_input")
    feed(v, kept)
    counts = v.finish()
    assert counts.lost_messages == expected
    assert counts.lost_requests == (1 if expected else 0)
    assert (counts.duplicated, counts.cross_talk, counts.reported_lost_messages) == (0, 0, 0)


@PROPS
@given(lines=st.integers(0, 3), repeats=st.lists(st.integers(0, 20), max_size=6))
def test_a_message_received_again_is_one_duplicate_and_loses_nothing(
    lines: int, repeats: list[int]
) -> None:
    kernel = FakeKernel()
    v = ClientVerifier(0, lines)
    _, iopub, reply = one_request(v, kernel)
    messages = [*iopub, reply]
    again = [messages[i % len(messages)] for i in repeats]
    feed(v, messages + again)
    counts = v.finish()
    assert counts.duplicated == len(again)
    assert (counts.lost_messages, counts.cross_talk) == (0, 0)


def test_output_repeated_under_a_new_msg_id_after_the_request_completed_is_a_duplicate() -> None:
    kernel = FakeKernel()
    v = ClientVerifier(0, 2)
    req, iopub, reply = one_request(v, kernel)
    feed(v, [*iopub, reply])
    assert req.number not in v.pending  # complete
    stream = kernel.msg("iopub", "stream", req.msg_id, {"name": "stdout", "text": "c0 r0 1\n"})
    feed(v, [stream, kernel.msg("shell", "execute_reply", req.msg_id, {"status": "ok"})])
    assert v.finish().duplicated == 2


def test_another_clients_shell_reply_is_cross_talk_but_its_iopub_is_expected() -> None:
    kernel = FakeKernel()
    me, other = ClientVerifier(1, 2), ClientVerifier(2, 2)
    _, iopub, reply = one_request(other, kernel)
    feed(me, iopub)
    assert me.counts.cross_talk == 0
    assert me.counts.foreign_iopub == len(iopub)
    feed(me, [reply])
    assert me.finish().cross_talk == 1
    assert "another client's request" in me.problems[0]


def test_output_of_my_request_with_another_clients_tag_is_cross_talk() -> None:
    kernel = FakeKernel()
    v = ClientVerifier(1, 1)
    req, iopub, reply = one_request(v, kernel)
    wrong = kernel.msg("iopub", "stream", req.msg_id, {"name": "stdout", "text": "c2 r0 0\n"})
    feed(v, [*iopub, wrong, reply])
    assert v.finish().cross_talk == 1


def test_my_tagged_output_under_another_request_is_cross_talk() -> None:
    kernel = FakeKernel()
    v, other = ClientVerifier(1, 1), ClientVerifier(11, 1)
    theirs, _ = other.new_execute(0.0)
    stolen = kernel.msg("iopub", "stream", theirs.msg_id, {"name": "stdout", "text": "c1 r5 0\n"})
    fine = kernel.msg("iopub", "stream", theirs.msg_id, {"name": "stdout", "text": "c11 r0 0\n"})
    feed(v, [fine, stolen])
    assert v.finish().cross_talk == 1


def test_a_reply_for_a_request_never_sent_is_cross_talk() -> None:
    kernel = FakeKernel()
    v = ClientVerifier(4, 1)
    feed(v, [kernel.msg("shell", "execute_reply", f"{v.prefix}99", {"status": "ok"})])
    assert v.finish().cross_talk == 1


def test_an_error_reply_is_counted_as_an_error() -> None:
    kernel = FakeKernel()
    v = ClientVerifier(0, 0)
    req, iopub, _ = one_request(v, kernel)
    bad = kernel.msg("shell", "execute_reply", req.msg_id, {"status": "error", "evalue": "boom"})
    feed(v, [*iopub, bad])
    assert v.finish().errors == 1


# -- loss reports -------------------------------------------------------------------------------


def report(kernel: FakeKernel, requests: list[str], messages: int = 3) -> Msg:
    meta = {"kernelfleet": {"lost": {"messages": messages, "requests": requests}}}
    content = {"name": "stderr", "text": "[kernelfleet] output was lost\n"}
    return kernel.msg("iopub", "stream", "", content, session="kernelfleet", metadata=meta)


@PROPS
@given(lines=st.integers(0, 3), cut=st.integers(0, 8), report_first=st.booleans())
def test_missing_messages_of_a_reported_request_count_as_reported_not_lost(
    lines: int, cut: int, report_first: bool
) -> None:
    kernel = FakeKernel()
    v = ClientVerifier(0, lines)
    req, iopub, reply = one_request(v, kernel)
    messages = [*iopub, reply]
    kept = messages[: min(cut, len(messages) - 1)]  # at least the reply is missing
    missing = sum(1 for m in messages[len(kept) :] if m["header"]["msg_type"] != "execute_input")
    notice = report(kernel, [req.msg_id])
    feed(v, [notice, *kept] if report_first else [*kept, notice])
    counts = v.finish()
    assert counts.loss_reports == 1
    assert counts.loss_reported_messages == 3
    assert (counts.reported_lost_messages, counts.reported_lost_requests) == (missing, 1)
    assert (counts.lost_messages, counts.lost_requests) == (0, 0)


def test_a_loss_report_of_an_unknown_number_of_messages_adds_no_count() -> None:
    kernel = FakeKernel()
    v = ClientVerifier(0, 1)
    feed(v, [report(kernel, [], messages=-1)])
    counts = v.finish()
    assert (counts.loss_reports, counts.loss_reported_messages) == (1, 0)


@pytest.mark.parametrize("protocol", ["", V1])
def test_the_gateways_own_loss_notice_is_recognised_on_both_protocols(protocol: str) -> None:
    from kernelfleet.kernels import notices

    if not hasattr(notices, "loss_notice"):
        pytest.skip("this kernelfleet has no loss notice yet")
    kernel = FakeKernel()
    v = ClientVerifier(0, 1)
    req, iopub, _ = one_request(v, kernel)
    notice = notices.loss_notice("replica-a", "12:00:00", [req.msg_id], complete=True)
    frame = notice.v1() if protocol else notice.legacy_json().decode()
    feed(v, [Codec("s", protocol).decode(frame), *iopub])  # the reply never came
    counts = v.finish()
    assert counts.loss_reports == 1
    assert (counts.reported_lost_requests, counts.lost_requests) == (1, 0)


def test_a_loss_report_for_other_requests_leaves_my_losses_lost() -> None:
    kernel = FakeKernel()
    v = ClientVerifier(0, 1)
    _, iopub, _ = one_request(v, kernel)
    feed(v, [report(kernel, ["someone-else-1"]), *iopub])  # no reply
    counts = v.finish()
    assert (counts.lost_messages, counts.reported_lost_messages) == (1, 0)


def test_loss_report_is_recognised_only_as_a_gateway_stream_with_the_lost_metadata() -> None:
    kernel = FakeKernel()
    assert loss_report(report(kernel, ["a"], 2)) == {"messages": 2, "requests": ["a"]}
    plain = kernel.msg("iopub", "stream", "", {"name": "stderr", "text": "x"}, "kernelfleet")
    assert loss_report(plain) is None
    from_kernel = report(kernel, ["a"])
    from_kernel["header"]["session"] = kernel.session
    assert loss_report(from_kernel) is None
    bad = report(kernel, ["a"])
    bad["metadata"] = {"kernelfleet": {"lost": "everything"}}
    assert loss_report(bad) is None


def test_a_gateway_notice_that_is_not_a_loss_report_is_only_counted() -> None:
    kernel = FakeKernel()
    v = ClientVerifier(0, 1)
    notice = kernel.msg("iopub", "stream", "", {"name": "stderr", "text": "[kf] x"}, "kernelfleet")
    feed(v, [notice])
    counts = v.finish()
    assert (counts.notices, counts.cross_talk, counts.errors) == (1, 0, 0)


# -- the seen-ids set ---------------------------------------------------------------------------

jupyter_ids = st.builds(
    "{}_{}_{}".format,
    st.sampled_from(["a1b2", "c3d4", "x_y"]),
    st.sampled_from([17, 4242]),
    st.one_of(st.integers(0, 3000), st.integers(0, 10**12)),
)
odd_ids = st.one_of(
    st.text(max_size=12),
    st.builds("{}_{}".format, st.sampled_from(["a1b2_17", "q"]), st.sampled_from(["007", "٣"])),
)


@PROPS
@given(st.lists(st.one_of(jupyter_ids, odd_ids), max_size=60))
def test_seen_ids_answers_exactly_like_a_set(ids: list[str]) -> None:
    seen, model = SeenIds(), set()
    for msg_id in ids:
        assert seen.add(msg_id) == (msg_id not in model), msg_id
        model.add(msg_id)


# -- the codec ----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["", V1])
def test_codec_frames_decode_to_the_request_they_carry(protocol: str) -> None:
    codec = Codec("sess", protocol)
    frame = codec.request("lg-1-c0-0", "execute_request", {"code": "1"})
    assert isinstance(frame, bytes if protocol else str)
    msg = codec.decode(frame)
    assert msg["header"]["msg_id"] == "lg-1-c0-0"
    assert msg["header"]["session"] == "sess"
    assert msg["channel"] == "shell"
    assert msg["content"] == {"code": "1"}


# -- reconnect mode, against a server that drops the websocket ----------------------------------


class FakeGatewaySocket(WebSocketHandler):
    """Answers kernel_info and execute like a kernel (no iopub broadcast); drops the websocket
    instead of answering the ``drop_at``-th execute request of each session (once); on that
    session's reconnect, reports the dropped request lost when ``report`` is set."""

    state: dict[str, Any]

    def initialize(self, state: dict[str, Any]) -> None:
        self.state = state

    def open(self, kernel_id: str) -> None:
        self.kernel: FakeKernel = self.state["kernels"].setdefault(kernel_id, FakeKernel())
        self.sid = self.get_argument("session_id")
        self.state["sessions"].append(self.sid)
        lost = self.state["lost"].get(self.sid)
        if lost and self.state["report"]:
            self.send(report(self.kernel, [lost]))

    def send(self, msg: Msg) -> None:
        self.write_message(json.dumps(msg))

    def on_message(self, message: str | bytes) -> None:
        req = json.loads(message)
        parent = req["header"]["msg_id"]
        if req["header"]["msg_type"] == "kernel_info_request":
            self.send(self.kernel.msg("iopub", "status", parent, {"execution_state": "busy"}))
            self.send(self.kernel.msg("shell", "kernel_info_reply", parent, {"status": "ok"}))
            self.send(self.kernel.msg("iopub", "status", parent, {"execution_state": "idle"}))
            return
        executes = self.state["executes"]
        executes[self.sid] = executes.get(self.sid, 0) + 1
        if executes[self.sid] == self.state["drop_at"]:
            self.state["lost"][self.sid] = parent
            self.close(1011, "replica gone")
            return
        iopub, reply = self.kernel.execute(parent, req["content"]["code"])
        for m in [*iopub[:-1], reply, iopub[-1]]:
            self.send(m)


@contextlib.asynccontextmanager
async def fake_gateway(drop_at: int, report_it: bool) -> AsyncIterator[tuple[str, dict]]:
    sock, port = bind_unused_port()
    state: dict[str, Any] = {
        "kernels": {},
        "sessions": [],
        "executes": {},
        "lost": {},
        "drop_at": drop_at,
        "report": report_it,
    }
    app = Application([(r"/api/kernels/([^/]+)/channels", FakeGatewaySocket, {"state": state})])
    server = HTTPServer(app)
    server.add_sockets([sock])
    try:
        yield f"http://127.0.0.1:{port}/", state
    finally:
        server.stop()
        await server.close_all_connections()


def reconnecting(url: str, reconnect: bool = True) -> ClientSettings:
    return ClientSettings(
        url,
        token="t",
        reconnect=reconnect,
        reconnect_deadline=5.0,
        outstanding_timeout=0.3,
        final_grace=0.1,
    )


async def drive_through_a_drop(report_it: bool, reconnect: bool) -> tuple[LoadClient, dict]:
    async with fake_gateway(drop_at=3, report_it=report_it) as (url, state):
        client = LoadClient(0, "k1", reconnecting(url, reconnect))
        try:
            await client.connect()
            start = time.monotonic()
            await client.run(start, start + 0.8)
        finally:
            client.close()
    return client, state


async def test_reconnect_mode_keeps_the_session_and_counts_the_unanswered_request_lost() -> None:
    client, state = await drive_through_a_drop(report_it=False, reconnect=True)
    counts = client.verifier.counts
    assert state["sessions"] == [client.session_id, client.session_id]
    assert (client.drops, client.reconnects, client.reconnect_failures) == (1, 1, 0)
    assert len(client.gaps) == 1 and client.gaps[0] < 2.0
    assert counts.timeouts == 1  # given up on outstanding_timeout after the reconnect
    assert (counts.lost_requests, counts.lost_messages) == (1, 5)  # reply, busy, idle, 2 lines
    assert counts.round_trips >= 4  # carried on after the reconnect
    assert (counts.duplicated, counts.cross_talk) == (0, 0)


async def test_reconnect_mode_counts_a_reported_request_as_reported_lost() -> None:
    client, _ = await drive_through_a_drop(report_it=True, reconnect=True)
    counts = client.verifier.counts
    assert counts.loss_reports == 1
    assert (counts.reported_lost_requests, counts.reported_lost_messages) == (1, 5)
    assert counts.lost_messages == 0


async def test_without_reconnect_mode_a_drop_stops_the_client_and_loses_its_request() -> None:
    client, state = await drive_through_a_drop(report_it=False, reconnect=False)
    assert client.stopped is not None and "1011" in client.stopped
    assert len(state["sessions"]) == 1
    assert client.verifier.counts.lost_requests == 1


async def test_the_multi_process_runner_merges_every_workers_verdicts_into_json() -> None:
    async with fake_gateway(drop_at=3, report_it=False) as (url, state):
        cfg = LoadConfig(
            reconnecting(url),
            ["k1", "k2"],
            clients=6,
            seconds=1.0,
            workers=2,
            watch={"test process": [os.getpid()]},
        )
        summary = await run_load(cfg)
    json.dumps(summary)  # JSON-able
    counts = summary["counts"]
    assert summary["workers"] == 2
    assert sorted(state["kernels"]) == ["k1", "k2"]
    assert len(set(state["sessions"])) == 6  # one session per client, kept over the reconnect
    assert (counts["drops"], counts["reconnects"], counts["lost_requests"]) == (6, 6, 6)
    assert (counts["duplicated"], counts["cross_talk"]) == (0, 0)
    assert summary["ok"] is False  # something was lost
    assert summary["round_trips"] > 0 and summary["latency_ms"]["n"] == summary["round_trips"]
    assert summary["reconnect"]["gap_seconds"]["n"] == 6
    assert "test process" in summary["cpu"]["watched_seconds"]
    assert "token" not in summary["config"]["settings"]
