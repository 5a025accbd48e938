"""What a replica keeps of each kernel's recent output, so the clients of a replica that died
get what they missed.

With a shared store every gateway replica subscribes to the iopub of every running kernel, not
only of the kernels its own clients use (``sync_shared`` adopts them all). A replica that is
not serving a kernel's clients only appends each message to that kernel's
:class:`RecentOutput`: a bounded ring of the last messages with the time they arrived
(``failover_seconds``, ``failover_buffer_mb``, ``failover_messages``).

When a replica dies (its database session ends: :mod:`kernelfleet.kernels.replicas`), every
other replica notes the moment. A client of the dead replica reconnects through the proxy to
a survivor with its session id; that session is new to the survivor, so it gets:

* every message that arrived after the death: the dead replica cannot have delivered it;
* a loss notice (:func:`~kernelfleet.kernels.notices.loss_notice`) naming the requests whose
  output or replies may be incomplete: those with messages in the last
  ``failover_uncertainty`` seconds before the death (the dead replica may or may not have
  written them to the client), and those running at the death (their ``execute_reply``
  went to the dead replica's socket and is gone).

Nothing is sent twice: a message from before the death is never replayed. Why here and not on
the kernel's host: the host agent dies with its gateway's SSH connection and uses the standard
library only (no ZMQ, no CurveZMQ), and this way kernels of every backend (local, SSH, YARN,
Kubernetes, Docker) are covered alike. The cost is one iopub subscription per kernel per
replica, which ``benchmarks/`` measures.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

from kernelfleet.kernels.wire import KernelMessage


class Budget:
    """The bytes all of a replica's rings may hold together (``failover_total_mb``): past it,
    a ring that grows keeps only its fair share, so the busiest kernels keep less history
    and the replica's memory stays bounded however many kernels print at once."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.rings = 0


@dataclass(frozen=True)
class RecentLimits:
    seconds: float = 60.0
    max_bytes: int = 8 * 1024 * 1024
    max_messages: int = 5000
    budget: Budget | None = None


class RecentOutput:
    """A kernel's last iopub messages, each with its arrival time (``time.monotonic()``)."""

    __slots__ = ("budget", "limits", "messages", "nbytes")

    def __init__(self, limits: RecentLimits) -> None:
        self.limits = limits
        self.messages: collections.deque[tuple[float, KernelMessage]] = collections.deque()
        self.nbytes = 0
        self.budget = limits.budget
        if self.budget is not None:
            self.budget.rings += 1

    def close(self) -> None:
        """The kernel is gone: its ring's bytes return to the budget."""
        while self.messages:
            self._pop()
        if self.budget is not None:
            self.budget.rings -= 1
            self.budget = None

    def add(self, msg: KernelMessage, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.messages.append((now, msg))
        self.nbytes += msg.size
        if self.budget is not None:
            self.budget.used += msg.size
        self._trim(now)

    def _pop(self) -> None:
        _, old = self.messages.popleft()
        self.nbytes -= old.size
        if self.budget is not None:
            self.budget.used -= old.size

    def _trim(self, now: float) -> None:
        limits, messages = self.limits, self.messages
        while messages and (
            len(messages) > limits.max_messages
            or self.nbytes > limits.max_bytes
            or now - messages[0][0] > limits.seconds
        ):
            self._pop()
        budget = self.budget
        if budget is not None and budget.used > budget.max_bytes:
            share = budget.max_bytes // max(1, budget.rings)
            while messages and self.nbytes > share:
                self._pop()

    def since(self, when: float) -> list[KernelMessage]:
        """The messages that arrived after *when*, oldest first."""
        return [msg for t, msg in self.messages if t > when]

    def covers(self, when: float) -> bool:
        """Whether nothing that arrived after *when* was dropped from the ring yet."""
        if not self.messages:
            return True
        return self.messages[0][0] <= when or len(self.messages) < self.limits.max_messages

    def affected_requests(self, died: float, uncertainty: float) -> list[str]:
        """Parent message ids of the requests a client of a replica that died at *died* may
        miss output or replies of: a message in ``[died - uncertainty, …)``, or busy at
        *died* (a ``busy`` status without its ``idle`` before *died*)."""
        affected: dict[str, None] = {}
        busy: dict[str, None] = {}
        for t, msg in self.messages:
            parent = msg.parent_msg_id()
            if not parent:
                continue
            if t >= died - uncertainty:
                affected[parent] = None
                continue
            if msg.msg_type == "status":
                state = msg.execution_state
                if state == "busy":
                    busy[parent] = None
                elif state == "idle":
                    busy.pop(parent, None)
        affected.update(busy)
        return list(affected)


@dataclass
class Failover:
    """The replay a session new to this replica gets after a peer replica died."""

    replica: str
    died: float  # time.monotonic() on this replica
    died_wall: str  # the same moment, ISO 8601 (UTC)
    messages: list[KernelMessage]
    requests: list[str]
    complete: bool  # False when the ring dropped messages that arrived after the death
