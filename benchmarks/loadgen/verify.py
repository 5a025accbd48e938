"""What one load client expects of its websocket, checked on every message it receives (pure).

A client (one websocket, one ``session_id``, on a kernel it may share with other clients) sends
requests whose msg_ids it can recognise (``<prefix><n>``, :meth:`ClientVerifier.new_execute`)
and whose code prints numbered lines tagged with the client and request
(``print("c17 r42 0")``). :meth:`ClientVerifier.observe` classifies each message:

- **duplicate**: a ``header.msg_id`` seen before on this client (across reconnects: one session),
  or a second reply, status or output line for one of its requests under another msg_id;
- **cross-talk**: a shell reply (``channel == "shell"``) for a request that is not this client's,
  or output for this client's request that carries another tag. Iopub messages of *other*
  clients' requests are expected (a kernel broadcasts iopub to every client) and only counted;
- **loss**: what an own request still misses when the run ends (its reply, ``busy``, ``idle``,
  an output line) — "reported lost" instead when the gateway named the request in a loss report:
  an iopub ``stream`` from session ``kernelfleet`` whose
  ``metadata["kernelfleet"]["lost"] == {"messages": int, "requests": [msg_id, ...]}``
  (``messages`` -1: unknown), as :func:`kernelfleet.kernels.notices.loss_notice` makes it.

A request's round trip is over once its reply and ``idle`` arrived (:meth:`round_trip_done`);
it stays pending until everything it should produce has arrived, and :meth:`finish` counts what
the pending ones still miss.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

#: Counted in :class:`Counts`; shown in the summary in this order.
COUNT_FIELDS = (
    "requests",
    "round_trips",
    "messages",
    "foreign_iopub",
    "lost_messages",
    "lost_requests",
    "duplicated",
    "cross_talk",
    "reported_lost_messages",
    "reported_lost_requests",
    "loss_reports",
    "loss_reported_messages",
    "notices",
    "errors",
    "late",
    "timeouts",
)

PROBLEM_SAMPLES = 20  # descriptions kept per client, for the report


@dataclass
class Counts:
    """Totals of one client (or, merged, of a whole run)."""

    requests: int = 0  # requests sent (execute and kernel_info)
    round_trips: int = 0  # requests whose reply and idle arrived
    messages: int = 0  # messages received
    foreign_iopub: int = 0  # iopub messages of other clients' requests (expected, shared kernel)
    lost_messages: int = 0  # expected messages (reply, busy, idle, output lines) never received
    lost_requests: int = 0  # requests missing any of them
    duplicated: int = 0  # msg_ids seen twice, or a second reply/status/line for a request
    cross_talk: int = 0  # someone else's shell reply, or output of ours with another tag
    reported_lost_messages: int = 0  # missing, but of a request named in a loss report
    reported_lost_requests: int = 0
    loss_reports: int = 0  # loss-report messages received
    loss_reported_messages: int = 0  # sum of their "messages" figures (-1, unknown, adds 0)
    notices: int = 0  # other messages the gateway wrote itself (session "kernelfleet")
    errors: int = 0  # execute_reply status != ok, error output, unexpected output
    late: int = 0  # requests given up on (timeout) that completed later after all
    timeouts: int = 0  # round trips given up on after the request timeout

    def add(self, other: Counts) -> None:
        for name in COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Counts:
        return cls(**{k: int(data.get(k, 0)) for k in COUNT_FIELDS})


def _canonical_int(text: str) -> bool:
    """Whether *text* is how ``str()`` writes an int >= 0 ("7"; not "07", not non-ASCII)."""
    return text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")


def line_text(client: int, request: int, index: int) -> str:
    """The output line *index* of request *request* of client *client*."""
    return f"c{client} r{request} {index}"


def execute_code(client: int, request: int, lines: int) -> str:
    """Code printing :func:`line_text` lines 0..lines-1 (one ``print`` each)."""
    return "; ".join(f'print("{line_text(client, request, i)}")' for i in range(lines))


def loss_report(msg: dict[str, Any]) -> dict[str, Any] | None:
    """The ``lost`` dict of a gateway loss report, or None when *msg* is not one."""
    header = msg.get("header") or {}
    if header.get("session") != "kernelfleet" or header.get("msg_type") != "stream":
        return None
    meta = msg.get("metadata") or {}
    ours = meta.get("kernelfleet") if isinstance(meta, dict) else None
    lost = ours.get("lost") if isinstance(ours, dict) else None
    return lost if isinstance(lost, dict) else None


class SeenIds:
    """The set of msg_ids seen, compact for the ``<session>_<pid>_<counter>`` ids of Jupyter.

    jupyter_client numbers the messages of a session, so the ids of one kernel are one prefix
    and a counter: kept as a bitmap per prefix (a few KB for hours of traffic, where a set of
    strings would take hundreds of MB over a long run). Other ids go to a plain set.
    """

    MAX_SPAN = 1 << 26  # counters beyond base + this go to the plain set (64 Mi bits = 8 MiB)

    def __init__(self) -> None:
        self._bitmaps: dict[str, tuple[int, bytearray]] = {}
        self._others: set[str] = set()

    def add(self, msg_id: str) -> bool:
        """Record *msg_id*; False when it was seen before."""
        prefix, sep, counter = msg_id.rpartition("_")
        if sep and _canonical_int(counter):
            n = int(counter)
            entry = self._bitmaps.get(prefix)
            if entry is None:
                entry = (max(0, n - 1024), bytearray(256))
                self._bitmaps[prefix] = entry
            base, bits = entry
            off = n - base
            if 0 <= off < self.MAX_SPAN:
                byte, bit = divmod(off, 8)
                if byte >= len(bits):
                    bits.extend(bytes(max(byte + 1 - len(bits), len(bits))))
                if bits[byte] >> bit & 1:
                    return False
                bits[byte] |= 1 << bit
                return True
        if msg_id in self._others:
            return False
        self._others.add(msg_id)
        return True


@dataclass
class Request:
    """One request of the client, until everything it should produce has arrived."""

    msg_id: str
    number: int
    kind: str  # "execute" or "kernel_info"
    lines: int  # output lines expected
    sent: float
    reply: bool = False
    busy: bool = False
    idle: bool = False
    seen_lines: set[int] = field(default_factory=set)
    partial: str = ""  # the start of an output line whose rest has not arrived yet
    done_at: float | None = None  # when the round trip (reply and idle) completed
    abandoned: bool = False  # the client stopped waiting (timeout or a failed reconnect)

    @property
    def round_trip_done(self) -> bool:
        return self.reply and self.idle

    @property
    def missing(self) -> int:
        return (
            (not self.reply)
            + (not self.busy)
            + (not self.idle)
            + (self.lines - len(self.seen_lines))
        )


class ClientVerifier:
    """The expectations of one client; feed it every message received (see module doc)."""

    def __init__(self, client: int, lines: int = 2, nonce: str | None = None) -> None:
        self.client = client
        self.lines = lines
        self.prefix = f"lg-{nonce or uuid.uuid4().hex[:10]}-c{client}-"
        self.counts = Counts()
        self.pending: dict[int, Request] = {}
        self.next_number = 0
        self.seen = SeenIds()
        self.reported: set[str] = set()
        self.problems: list[str] = []
        self._tag = f"c{client} r"

    # -- requests -------------------------------------------------------------------------

    def _new(self, kind: str, lines: int, now: float) -> Request:
        n = self.next_number
        self.next_number += 1
        req = Request(f"{self.prefix}{n}", n, kind, lines, now)
        self.pending[n] = req
        self.counts.requests += 1
        return req

    def new_execute(self, now: float) -> tuple[Request, str]:
        """A new execute request: (its record, the code to send with its msg_id)."""
        req = self._new("execute", self.lines, now)
        return req, execute_code(self.client, req.number, self.lines)

    def new_kernel_info(self, now: float) -> Request:
        return self._new("kernel_info", 0, now)

    def round_trip_done(self, req: Request) -> bool:
        return req.round_trip_done

    def abandon(self, req: Request) -> None:
        """The client stops waiting for *req* (timeout): a later completion counts as late."""
        if not req.abandoned and not req.round_trip_done:
            req.abandoned = True
            self.counts.timeouts += 1

    # -- messages -------------------------------------------------------------------------

    def _problem(self, text: str) -> None:
        if len(self.problems) < PROBLEM_SAMPLES:
            self.problems.append(f"c{self.client}: {text}")

    def _own(self, parent_id: str) -> int | None:
        """The number of this client's request *parent_id*, None for anyone else's."""
        if not parent_id.startswith(self.prefix):
            return None
        rest = parent_id[len(self.prefix) :]
        return int(rest) if _canonical_int(rest) else -1

    def observe(self, msg: dict[str, Any], now: float) -> Request | None:
        """Check one received message; returns the own request it concerned, if any."""
        self.counts.messages += 1
        header = msg.get("header") or {}
        msg_id = str(header.get("msg_id") or msg.get("msg_id") or "")
        if msg_id and not self.seen.add(msg_id):
            self.counts.duplicated += 1
            self._problem(f"duplicate msg_id {msg_id} ({header.get('msg_type')})")
            return None
        channel = msg.get("channel")
        msg_type = str(header.get("msg_type") or msg.get("msg_type") or "")
        parent_id = str((msg.get("parent_header") or {}).get("msg_id") or "")
        n = self._own(parent_id)
        if header.get("session") == "kernelfleet" and channel == "iopub":
            lost = loss_report(msg)
            if lost is not None:
                self._loss_report(lost)
                return None
            if n is None:  # a gateway notice not about one of our requests
                self.counts.notices += 1
                return None
        if n is None:
            if channel == "shell":
                self.counts.cross_talk += 1
                self._problem(f"shell {msg_type} for another client's request {parent_id!r}")
            elif channel == "iopub":
                self.counts.foreign_iopub += 1
                if msg_type == "stream" and self._carries_our_tag(msg):
                    self.counts.cross_talk += 1
                    self._problem(f"our output in another request's stream ({parent_id})")
            return None
        req = self.pending.get(n)
        if req is None:
            if 0 <= n < self.next_number:  # a request already complete: this repeats something
                if channel in ("shell", "iopub"):
                    self.counts.duplicated += 1
                    self._problem(f"{channel} {msg_type} after request {n} completed")
            else:
                self.counts.cross_talk += 1
                self._problem(f"{channel} {msg_type} for a request never sent: {parent_id}")
            return None
        if channel == "shell":
            self._on_reply(req, msg_type, msg.get("content") or {})
        elif channel == "iopub":
            self._on_iopub(req, msg_type, msg.get("content") or {})
        else:
            return req
        if req.round_trip_done and req.done_at is None:
            req.done_at = now
            self.counts.round_trips += 1
            if req.abandoned:
                self.counts.late += 1
        if req.missing == 0 and not req.partial:
            del self.pending[n]
        return req

    def _carries_our_tag(self, msg: dict[str, Any]) -> bool:
        text = str((msg.get("content") or {}).get("text") or "")
        return text.startswith(self._tag) or ("\n" + self._tag) in text

    def _on_reply(self, req: Request, msg_type: str, content: dict[str, Any]) -> None:
        expected = f"{req.kind}_reply"
        if msg_type != expected:
            self.counts.cross_talk += 1
            self._problem(f"{msg_type} for {req.kind} request {req.number}")
            return
        if req.reply:
            self.counts.duplicated += 1
            self._problem(f"second {msg_type} for request {req.number}")
            return
        req.reply = True
        if content.get("status") != "ok":
            self.counts.errors += 1
            self._problem(f"{msg_type} status {content.get('status')!r} ({content.get('evalue')})")

    def _on_iopub(self, req: Request, msg_type: str, content: dict[str, Any]) -> None:
        if msg_type == "status":
            state = content.get("execution_state")
            if state in ("busy", "idle"):
                flag = str(state)
                if getattr(req, flag):
                    self.counts.duplicated += 1
                    self._problem(f"second {state} for request {req.number}")
                else:
                    setattr(req, flag, True)
        elif msg_type == "stream":
            self._on_stream(req, content)
        elif msg_type == "error":
            self.counts.errors += 1
            self._problem(f"error output for request {req.number}: {content.get('evalue')}")

    def _on_stream(self, req: Request, content: dict[str, Any]) -> None:
        if content.get("name") != "stdout":
            self.counts.errors += 1
            self._problem(f"{content.get('name')} output for request {req.number}")
            return
        text = req.partial + str(content.get("text") or "")
        *lines, req.partial = text.split("\n")
        head = f"{self._tag}{req.number} "
        for line in lines:
            index = line[len(head) :] if line.startswith(head) else ""
            if not (_canonical_int(index) and int(index) < req.lines):
                self.counts.cross_talk += 1
                self._problem(f"request {req.number} printed {line[:60]!r}")
            elif int(index) in req.seen_lines:
                self.counts.duplicated += 1
                self._problem(f"line {line!r} twice")
            else:
                req.seen_lines.add(int(index))

    def _loss_report(self, lost: dict[str, Any]) -> None:
        self.counts.loss_reports += 1
        messages = lost.get("messages")
        if isinstance(messages, int) and messages >= 0:  # -1: the gateway does not know
            self.counts.loss_reported_messages += messages
        requests = lost.get("requests")
        if isinstance(requests, list):
            self.reported.update(r for r in requests if isinstance(r, str))
        if lost.get("sent_before"):
            # "a request you sent before then, not answered yet, may never have reached the
            # kernel": the report comes right after a reconnect, before new requests go out,
            # so those are the requests pending now
            self.reported.update(req.msg_id for req in self.pending.values())

    # -- the end --------------------------------------------------------------------------

    def finish(self) -> Counts:
        """Count what the pending requests still miss (lost, or reported lost); returns the
        client's totals. Call once, when the client has stopped reading."""
        for req in self.pending.values():
            missing = req.missing  # an unterminated line (req.partial) is one of them
            if missing == 0:
                continue
            if req.msg_id in self.reported:
                self.counts.reported_lost_messages += missing
                self.counts.reported_lost_requests += 1
            else:
                self.counts.lost_messages += missing
                self.counts.lost_requests += 1
                self._problem(
                    f"request {req.number} ({req.kind}) lost: reply={req.reply} busy={req.busy}"
                    f" idle={req.idle} lines={sorted(req.seen_lines)} of {req.lines}"
                )
        self.pending.clear()
        return self.counts
