"""The fleet: every host link and every placed kernel of this process, one per event loop.

Why a registry and not an injected object: jupyter_client's provisioner factory builds each
provisioner from ``(kernel_id, kernel_spec, parent, **kernelspec config)`` and offers no way
to hand it a shared object, yet ``least-connection`` must count the kernels of *all*
kernelspecs and all kernel managers, and a host's SSH connection must be shared by all its
kernels. asyncssh connections belong to the loop that opened them, hence one :class:`Fleet`
per event loop (:func:`get_fleet`). :func:`reset_fleets` is the named seam tests use to start
from scratch and to close every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from kernelfleet.errors import HostsUnavailable
from kernelfleet.placement.policies import HostLoad, rank_hosts
from kernelfleet.transport.agent_client import (
    AgentClient,
    AgentRequestError,
    HostDown,
    SSHTarget,
)
from kernelfleet.transport.host import HostLink

log = logging.getLogger(__name__)

LOAD_QUERY_TIMEOUT = 2.0
#: Seconds a host's load report is reused by later placements.
LOAD_REPORT_TTL = 2.0


class Fleet:
    """Host links, kernel → host assignments and pick history for one event loop."""

    def __init__(self) -> None:
        self._links: dict[SSHTarget, HostLink] = {}
        self._kernel_host: dict[str, str] = {}
        self._last_pick: dict[str, int] = {}
        self._seq = 0
        self._loads: dict[str, tuple[float, asyncio.Future[HostLoad | None]]] = {}

    # -- links ---------------------------------------------------------------------------
    def link(self, target: SSHTarget) -> HostLink:
        link = self._links.get(target)
        if link is None:
            link = self._links[target] = HostLink(target)
        return link

    def links(self) -> list[HostLink]:
        return list(self._links.values())

    def host_status(self) -> list[dict[str, Any]]:
        """Every host this process has tried: state (up/down/unknown), why it is down, and
        the number of kernels placed there (for dashboards and ``hosts check``)."""
        counts = self.counts()
        out = []
        for link in self._links.values():
            agent = link.current_agent
            out.append(
                {
                    "host": link.host,
                    "port": link.target.port,
                    "user": link.target.user,
                    "state": link.state,
                    "reason": link.reason,
                    "kernels": counts.get(link.host, 0),
                    "hostname": agent.hostname if agent else None,
                }
            )
        return out

    # -- assignments ---------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for host in self._kernel_host.values():
            out[host] = out.get(host, 0) + 1
        return out

    def host_of(self, kernel_id: str) -> str | None:
        return self._kernel_host.get(kernel_id)

    def assign(self, kernel_id: str, host: str) -> None:
        self._kernel_host[kernel_id] = host
        self._seq += 1
        self._last_pick[host] = self._seq

    def release(self, kernel_id: str) -> None:
        self._kernel_host.pop(kernel_id, None)

    # -- placement -----------------------------------------------------------------------
    async def place(
        self,
        *,
        kernel_id: str,
        candidates: Sequence[str],
        algorithm: str,
        target_for: Callable[[str], SSHTarget],
        what: str,
    ) -> tuple[str, HostLink, AgentClient]:
        """Pick a host for *kernel_id* among *candidates*, connected and ready.

        The choice and the assignment happen without an ``await`` in between, so concurrent
        starts spread as the algorithm says. A host that cannot be reached is marked down
        (backoff) and the next best is tried. Raises :class:`HostsUnavailable` naming every
        candidate and why it is out when none is left. *what* is the kernelspec's name.
        """
        failures: dict[str, str] = {}
        loads: dict[str, HostLoad] = {}
        if algorithm == "load":
            loads = await self._query_loads(candidates, target_for, failures)
        while True:
            now = time.monotonic()
            eligible = []
            for host in candidates:
                if host in failures:
                    continue
                link = self.link(target_for(host))
                if link.available(now):
                    eligible.append(host)
                else:
                    failures[host] = link.down_reason(now)
            if not eligible:
                detail = "; ".join(f"{host}: {failures[host]}" for host in candidates)
                raise HostsUnavailable(
                    f"No host is reachable for kernel '{what}': try again in a minute, or "
                    f"tell your admin if it persists. Hosts: {detail}",
                    hosts={host: failures[host] for host in candidates},
                )
            host = rank_hosts(
                algorithm, eligible, counts=self.counts(), last_pick=self._last_pick, loads=loads
            )[0]
            self.assign(kernel_id, host)
            link = self.link(target_for(host))
            try:
                agent = await link.agent()
            except HostDown as exc:
                self.release(kernel_id)
                failures[host] = exc.reason
                continue
            except BaseException:
                self.release(kernel_id)
                raise
            return host, link, agent

    def prewarm(self, hosts: Sequence[str], target_for: Callable[[str], SSHTarget]) -> None:
        """Open connections to *hosts* in the background (called after a launch, so the
        logins do not compete with that kernel's start for CPU)."""
        for host in hosts:
            self.link(target_for(host)).prewarm()

    async def _query_loads(
        self,
        candidates: Sequence[str],
        target_for: Callable[[str], SSHTarget],
        failures: dict[str, str],
    ) -> dict[str, HostLoad]:
        """Load reports of *candidates*. A report serves every placement for
        :data:`LOAD_REPORT_TTL` seconds (one query per host however many kernels start at
        once), so a burst is ranked on one snapshot plus the kernels placed since."""

        async def query(host: str, link: HostLink) -> HostLoad | None:
            try:
                async with asyncio.timeout(LOAD_QUERY_TIMEOUT):
                    agent = await link.agent()
                    reply = await agent.request("host")
            except HostDown as exc:
                failures[host] = exc.reason
                return None
            except (AgentRequestError, TimeoutError):
                return None
            return HostLoad.from_reply(reply)

        async def one(host: str) -> tuple[str, HostLoad | None]:
            link = self.link(target_for(host))
            if not link.available():
                return host, None
            now = time.monotonic()
            cached = self._loads.get(host)
            if cached is None or now - cached[0] > LOAD_REPORT_TTL:
                cached = (now, asyncio.ensure_future(query(host, link)))
                self._loads[host] = cached
            return host, await asyncio.shield(cached[1])

        results = await asyncio.gather(*(one(h) for h in candidates))
        return {host: load for host, load in results if load is not None}

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        self._kernel_host.clear()
        for _, pending in self._loads.values():
            pending.cancel()
        self._loads.clear()
        for link in links:
            with contextlib.suppress(Exception):
                await link.close()


_FLEETS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Fleet] = weakref.WeakKeyDictionary()


def get_fleet() -> Fleet:
    """The fleet of the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    fleet = _FLEETS.get(loop)
    if fleet is None:
        fleet = _FLEETS[loop] = Fleet()
    return fleet


async def reset_fleets() -> None:
    """Close the running loop's fleet and forget every fleet (test seam)."""
    loop = asyncio.get_running_loop()
    fleet = _FLEETS.pop(loop, None)
    _FLEETS.clear()
    if fleet is not None:
        await fleet.close()
