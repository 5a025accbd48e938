"""Output kept for websocket sessions whose clients are away, replayed when they come back.

One log per kernel, shared by all its away sessions: each message is appended once, whatever
the number of sessions, and a session only remembers where the log stood when it left. (A
buffer per session, appended to for every message, made memory and CPU per message grow with
the number of sessions that came and went: 200 notebooks reconnecting ten times left 2000
buffers.) The limits (``iopub_buffer_messages``, ``iopub_buffer_mb``,
``iopub_buffer_seconds``) are what one session may get back: the log keeps at most that many
of the newest messages, and a session away for longer than the age limit is forgotten.
Nothing is kept while no session is away.

What a session gets back: the messages its connection had not written to its client when it
closed (``unsent``), then every message logged since — the newest of them within the limits
— behind a notice of how much was dropped (:func:`dropped_notice`).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

from kernelfleet.kernels.notices import notice_message
from kernelfleet.kernels.wire import KernelMessage


@dataclass(frozen=True)
class BufferLimits:
    max_messages: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    max_age_seconds: float = 600.0


@dataclass
class Away:
    """Where the log stood when a session's last connection closed."""

    start: int  # the log's sequence number then: the session needs every later one
    bytes_at: int  # the log's byte count then
    since: float  # time.monotonic()
    unsent: list[KernelMessage]


@dataclass
class Return:
    """What a returning session gets, and what it lost over the limits."""

    messages: list[KernelMessage]
    dropped_messages: int
    dropped_bytes: int


class ReplayLog:
    """A kernel's output log for its away sessions (see the module docstring)."""

    def __init__(self, limits: BufferLimits) -> None:
        self.limits = limits
        #: (sequence number, bytes logged before it, message)
        self.entries: collections.deque[tuple[int, int, KernelMessage]] = collections.deque()
        self.sessions: dict[str, Away] = {}
        self.seq = 0
        self.total = 0  # bytes ever logged
        self.nbytes = 0  # bytes in the log now
        self._oldest_start = 0
        self._expiry_checked = 0.0

    def leave(self, sid: str, unsent: list[KernelMessage]) -> None:
        """Session *sid*'s last connection closed; *unsent* it never got (oldest first)."""
        kept = unsent[-self.limits.max_messages :] if unsent else []
        if not self.sessions:
            self._oldest_start = self.seq
        self.sessions[sid] = Away(self.seq, self.total, time.monotonic(), kept)

    def forget(self, sid: str) -> None:
        if self.sessions.pop(sid, None) is not None:
            self._after_change()

    def clear(self) -> None:
        self.sessions.clear()
        self._after_change()

    def append(self, msg: KernelMessage) -> None:
        """Log *msg* for the away sessions (nothing to do without one)."""
        if not self.sessions:
            return
        now = time.monotonic()
        if now - self._expiry_checked > 1.0:
            self._expire(now)
            if not self.sessions:
                return
        self.seq += 1
        self.entries.append((self.seq, self.total, msg))
        self.total += msg.size
        self.nbytes += msg.size
        limits = self.limits
        while self.entries and (
            len(self.entries) > limits.max_messages or self.nbytes > limits.max_bytes
        ):
            self._pop()

    def back(self, sid: str) -> Return | None:
        """What session *sid* gets on its return, or None if it is not away (any more)."""
        away = self.sessions.pop(sid, None)
        if away is None:
            return None
        if time.monotonic() - away.since > self.limits.max_age_seconds:
            self._after_change()
            return None
        messages = [msg for seq, _, msg in self.entries if seq > away.start]
        first = self.entries[0] if self.entries else None
        if first is not None and first[0] > away.start + 1:
            dropped, dropped_bytes = first[0] - away.start - 1, first[1] - away.bytes_at
        elif first is None and self.seq > away.start:
            dropped, dropped_bytes = self.seq - away.start, self.total - away.bytes_at
        else:
            dropped, dropped_bytes = 0, 0
        self._after_change()
        # the unsent messages come first, and go first over the limits, as in one buffer
        out = collections.deque([*away.unsent, *messages])
        size = sum(m.size for m in out)
        while out and (len(out) > self.limits.max_messages or size > self.limits.max_bytes):
            old = out.popleft()
            size -= old.size
            dropped += 1
            dropped_bytes += old.size
        return Return(list(out), dropped, dropped_bytes)

    # -- keeping it small -----------------------------------------------------------------

    def _pop(self) -> None:
        _, _, msg = self.entries.popleft()
        self.nbytes -= msg.size

    def sweep(self) -> None:
        """Forget the sessions away too long: also when the kernel prints nothing (an idle
        kernel's log would otherwise be kept until its next message)."""
        if self.sessions:
            self._expire(time.monotonic())

    def _expire(self, now: float) -> None:
        self._expiry_checked = now
        old = [s for s, a in self.sessions.items() if now - a.since > self.limits.max_age_seconds]
        for sid in old:
            del self.sessions[sid]
        if old:
            self._after_change()

    def _after_change(self) -> None:
        """Drop what no away session needs any more (everything once none is away)."""
        if not self.sessions:
            self.entries.clear()
            self.nbytes = 0
            return
        self._oldest_start = min(a.start for a in self.sessions.values())
        while self.entries and self.entries[0][0] <= self._oldest_start:
            self._pop()


def dropped_notice(back: Return, limits: BufferLimits) -> KernelMessage:
    """The stream message that tells a reconnecting client how much output it will not get."""
    mb = back.dropped_bytes / (1024 * 1024)
    return notice_message(
        f"{mb:.1f} MB of output ({back.dropped_messages} messages) was dropped while this "
        "client was away or not reading: at most "
        f"{limits.max_bytes / (1024 * 1024):g} MB and {limits.max_messages} messages are kept "
        "per session for a reconnect (KF_IOPUB_BUFFER_MB, KF_IOPUB_BUFFER_MESSAGES)."
    )
