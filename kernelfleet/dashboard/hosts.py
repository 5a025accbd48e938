"""Health of the SSH hosts, as the overview shows it: reachable or not (and why), agent
version, load, free memory and the kernels placed there.

The hosts are those the gateway's fleet has links to (every host of an SSH kernelspec once the
gateway warmed it up at start, and every host a kernel was placed on). A check asks each
connected host's agent for its load over the existing connection (one request per host, all
at once); with ``probe`` on, a host that is not connected is tried again once its backoff has
passed (:meth:`~kernelfleet.transport.host.HostLink.available`), as a placement would, so the
dashboard sees a host come back without waiting for a kernel start. Nothing here opens a login
per check.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any

from kernelfleet.placement.fleet import Fleet
from kernelfleet.placement.policies import HostLoad
from kernelfleet.transport.agent_client import AgentRequestError, HostDown
from kernelfleet.transport.host import HostLink

#: Seconds a host's agent may take to report its load.
LOAD_TIMEOUT = 2.0


@dataclass(frozen=True)
class HostHealth:
    host: str
    port: int
    user: str
    health: str  # "healthy", "down" or "not connected"
    reason: str
    kernels: int
    agent_version: str = ""
    hostname: str = ""
    load1: float | None = None
    cpus: int | None = None
    mem_available: int | None = None
    mem_total: int | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def health_of(link: HostLink) -> tuple[str, str]:
    """("healthy" | "down" | "not connected", why) from what the link knows, without I/O."""
    if link.current_agent is not None:
        return "healthy", ""
    if link.state == "down":
        return "down", link.reason
    if link.reason:  # the connection was lost and no kernel there needed it back yet
        return "down", link.reason
    return "not connected", ""


async def _load(link: HostLink) -> HostLoad | None:
    agent = link.current_agent
    if agent is None:
        return None
    try:
        async with asyncio.timeout(LOAD_TIMEOUT):
            return HostLoad.from_reply(await agent.request("host"))
    except (HostDown, AgentRequestError, TimeoutError):
        return None


async def _probe(link: HostLink) -> None:
    if link.current_agent is not None or not link.available():
        return
    try:
        async with asyncio.timeout(link.target.connect_timeout * 2 + 1):
            await link.agent()
    except (HostDown, TimeoutError):
        pass  # the link recorded why


async def check_hosts(fleet: Fleet, *, probe: bool) -> list[HostHealth]:
    """The health of every host of *fleet* (see the module docstring)."""
    links = fleet.links()
    if probe:
        await asyncio.gather(*(_probe(link) for link in links))
    loads = await asyncio.gather(*(_load(link) for link in links))
    counts = fleet.counts()
    out = []
    for link, load in zip(links, loads, strict=True):
        health, reason = health_of(link)
        agent = link.current_agent
        out.append(
            HostHealth(
                host=link.host,
                port=link.target.port,
                user=link.target.user or "",
                health=health,
                reason=reason,
                kernels=counts.get(link.host, 0),
                agent_version=str(agent.hello.get("version", "")) if agent else "",
                hostname=agent.hostname if agent else "",
                load1=load.loadavg1 if load else None,
                cpus=load.cpus if load else None,
                mem_available=load.mem_available if load else None,
                mem_total=load.mem_total if load else None,
            )
        )
    return sorted(out, key=lambda h: (h.host, h.port))
