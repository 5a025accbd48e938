"""One host as the gateway sees it: its agent connection, its health, its kernels' liveness.

A :class:`HostLink` opens its connection on first use (one attempt at a time, shared by all
callers), marks the host down with exponential backoff when that fails, and keeps a
:class:`KernelWatch` per kernel that agent ``exit`` events update. Polling a kernel therefore
costs no I/O.

When the connection drops (the agent's channel closes, or asyncssh's keepalive gives up on a
silent host), the link tries one reconnect within :attr:`HostLink.reconnect_grace` seconds:
if the host is back, the new agent reports which kernels still run and those stay alive;
otherwise every kernel on the host is marked dead. With the default keepalive (every 2 s, two
missed) plus the grace, a dead host's kernels poll dead after about 7 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from kernelfleet.transport.agent_client import AgentClient, AgentRequestError, HostDown, SSHTarget

log = logging.getLogger(__name__)

#: Exit code reported for a kernel whose end was not observed (host lost, adopted process).
UNKNOWN_EXIT = -1

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class KernelWatch:
    """Liveness of one kernel process, fed by agent events (no I/O to read it)."""

    def __init__(self, kernel_id: str, pid: int | None = None):
        self.kernel_id = kernel_id
        self.pid = pid
        self.exit_code: int | None = None
        #: Why it ended when the agent knows more than the code ("oom": its cgroup's memory
        #: limit killed it).
        self.exit_reason = ""
        self.exited = asyncio.Event()
        self._early: dict[int, int | None] = {}

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    def started(self, pid: int) -> None:
        """The launch reply named the process: apply an exit event that overtook it."""
        self.pid = pid
        if pid in self._early:
            self.mark_exited(self._early.pop(pid))
        self._early.clear()

    def on_exit(self, pid: int | None, code: int | None) -> None:
        if self.pid is None:
            if pid is not None:
                self._early[pid] = code
        elif pid is None or pid == self.pid:
            self.mark_exited(code)

    def mark_exited(self, code: int | None) -> None:
        if not self.exited.is_set():
            self.exit_code = UNKNOWN_EXIT if code is None else int(code)
            self.exited.set()


class HostLink:
    """The gateway's connection to one host (one :class:`SSHTarget`)."""

    reconnect_grace = 1.0

    def __init__(self, target: SSHTarget):
        self.target = target
        self.state = "unknown"  # "up", "down" or "unknown" (never tried)
        self.reason = ""
        self.retry_at = 0.0
        self._backoff = 0.0
        self._agent: AgentClient | None = None
        self._connecting: asyncio.Task[AgentClient] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.watches: dict[str, KernelWatch] = {}
        self.orphans: set[str] = set()
        self._retry: asyncio.Task[None] | None = None

    @property
    def host(self) -> str:
        return self.target.host

    def available(self, now: float | None = None) -> bool:
        """False while the host is down and its backoff has not expired."""
        if self.state != "down":
            return True
        return (time.monotonic() if now is None else now) >= self.retry_at

    def try_now(self) -> None:
        """Let the next placement try this host at once, backoff or not: for a request that
        can only go to this host (a restart in place), once per request, not per kernel."""
        self.retry_at = min(self.retry_at, time.monotonic())

    def down_reason(self, now: float | None = None) -> str:
        wait = self.retry_at - (time.monotonic() if now is None else now)
        return f"{self.reason} (down; next attempt in {max(wait, 0):.0f} s)"

    @property
    def current_agent(self) -> AgentClient | None:
        """The open agent, if any (never connects)."""
        agent = self._agent
        return agent if agent is not None and agent.is_open else None

    async def agent(self) -> AgentClient:
        """The host's agent, connecting if needed. Raises :class:`HostDown`."""
        agent = self.current_agent
        if agent is not None:
            return agent
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect())
        # shielded: one caller giving up must not abort the attempt the others share
        return await asyncio.shield(self._connecting)

    def prewarm(self) -> None:
        """Start connecting in the background if nothing is known about the host yet, so
        the first kernel placed there does not pay for the SSH login."""
        if self.state != "unknown" or self._connecting is not None or self.current_agent:
            return
        self._connecting = asyncio.create_task(self._connect())
        # the outcome is recorded in the link's state; nobody awaits this attempt
        self._connecting.add_done_callback(_consume)

    async def _connect(self) -> AgentClient:
        try:
            agent = await AgentClient.open(self.target, self._on_event)
        except HostDown as exc:
            self._mark_down(exc.reason)
            raise
        finally:
            self._connecting = None
        self._agent = agent
        self.state, self.reason, self._backoff = "up", "", 0.0
        self._reconcile(agent.hello.get("kernels") or {})
        self._spawn(self._monitor(agent))
        if self.orphans:
            self._spawn(self._abort_orphans(agent))
        log.info("connected to %s (agent on %s)", self.target.describe(), agent.hostname)
        return agent

    def _mark_down(self, reason: str) -> None:
        self.state, self.reason = "down", reason
        self._backoff = min(max(BACKOFF_FIRST, self._backoff * 2), BACKOFF_MAX)
        self.retry_at = time.monotonic() + self._backoff
        log.warning("host %s is down: %s", self.host, reason)
        self._ensure_retry()

    def _ensure_retry(self) -> None:
        """While kernels wait to be stopped on this down host, keep trying to reach it (with
        the backoff), so they are stopped even if no new kernel is ever placed here."""
        if self.orphans and self.state == "down" and self._retry is None:
            self._retry = asyncio.create_task(self._retry_loop())

    async def _retry_loop(self) -> None:
        try:
            while self.orphans and self.state == "down":
                # no event says "the host is back": wait out the backoff, then try
                await asyncio.sleep(max(self.retry_at - time.monotonic(), 0))
                with contextlib.suppress(HostDown):
                    await self.agent()
        finally:
            self._retry = None

    def _reconcile(self, kernels: Mapping[str, Any]) -> None:
        for kid, watch in self.watches.items():
            info = kernels.get(kid)
            if watch.pid is None:
                continue  # launching through this very connection
            if not isinstance(info, dict) or not info.get("alive") or info.get("pid") != watch.pid:
                watch.mark_exited(info.get("code") if isinstance(info, dict) else None)

    async def _monitor(self, agent: AgentClient) -> None:
        reason = await agent.closed
        if self._agent is not agent:
            return
        self._agent = None
        log.warning("lost the agent on %s: %s", self.host, reason)
        if not any(w.alive for w in self.watches.values()):
            self.state, self.reason = "unknown", reason
            return
        try:
            async with asyncio.timeout(self.reconnect_grace):
                await self.agent()
            return
        except (HostDown, TimeoutError):
            pass
        if self.state != "down":
            self._mark_down(reason)
        for watch in self.watches.values():
            watch.mark_exited(None)

    async def _abort_orphans(self, agent: AgentClient) -> None:
        for kid in list(self.orphans):
            if kid not in self.orphans:
                continue  # settled meanwhile by a launch of the same id (settle_abort)
            with contextlib.suppress(HostDown, AgentRequestError):
                await agent.request("abort", kernel_id=kid)
                self.orphans.discard(kid)

    async def settle_abort(self, kernel_id: str, agent: AgentClient) -> None:
        """Before *kernel_id* is launched here again (a restart once the host is back): stop
        what an earlier run left, now, so the pending abort cannot hit the new kernel."""
        if kernel_id in self.orphans:
            self.orphans.discard(kernel_id)
            with contextlib.suppress(AgentRequestError):
                await agent.request("abort", kernel_id=kernel_id)

    def _on_event(self, message: dict[str, Any]) -> None:
        if message.get("event") == "exit":
            watch = self.watches.get(str(message.get("kernel_id")))
            if watch is not None:
                pid = message.get("pid")
                code = message.get("code")
                reason = message.get("reason")
                if isinstance(reason, str) and (watch.pid is None or pid == watch.pid):
                    watch.exit_reason = reason
                watch.on_exit(pid if isinstance(pid, int) else None, code)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def watch(self, kernel_id: str, pid: int | None = None) -> KernelWatch:
        """Start following *kernel_id* (a fresh watch replaces an older one)."""
        watch = KernelWatch(kernel_id, pid)
        self.watches[kernel_id] = watch
        return watch

    def unwatch(self, kernel_id: str) -> None:
        self.watches.pop(kernel_id, None)

    def abort_later(self, kernel_id: str) -> None:
        """Remember to stop *kernel_id* when the host is reachable again."""
        self.orphans.add(kernel_id)
        self._ensure_retry()

    async def abort(self, kernel_id: str, answer_within: float) -> bool:
        """Stop whatever runs for *kernel_id* on this host now, or (host down, in backoff or
        not answering within *answer_within* seconds) when it is reachable again. True when the
        agent stopped a process now."""
        if not self.available():
            self.abort_later(kernel_id)
            return False
        try:
            async with asyncio.timeout(answer_within):
                agent = await self.agent()
                reply = await agent.request("abort", kernel_id=kernel_id)
        except (HostDown, AgentRequestError, TimeoutError) as exc:
            log.warning("could not stop kernel %s on %s now: %s", kernel_id, self.host, exc)
            self.abort_later(kernel_id)
            return False
        return bool(reply.get("stopped"))

    async def close(self) -> None:
        agent, self._agent = self._agent, None
        for task in list(self._tasks):
            task.cancel()
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        if self._connecting is not None:
            self._connecting.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if agent is not None:
            await agent.close()
