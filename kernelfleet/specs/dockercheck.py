"""``kernelfleet hosts check`` for a Docker kernelspec: can its engine run it? One row.

No SSH: the engine is asked through its API with the provisioner's client
(:class:`~kernelfleet.transport.docker_api.DockerApi`) and settings (address, TLS files, image,
network, Swarm: app config < ``KF_DOCKER_*`` < the kernelspec's config, as a kernel gets them),
as the gateway's user:

- ``engine``: ``GET /_ping`` answers (the socket is there and this user may use it, or the TCP
  address answers and its TLS is accepted);
- ``version``: the Engine API is 1.41 or later (``GET /version``), the one kernelfleet speaks;
- ``image``: the image and each allowed image is on the engine (``GET /images/<ref>/json``),
  built for its OS and architecture: kernelfleet never pulls, so a missing one fails launches;
- ``network``: it exists (``GET /networks/<name>``), and plain containers can join it;
- ``swarm`` (Swarm specs): the engine is an active manager (``GET /info``), with how many nodes
  are ready (``GET /nodes``; placement constraints are not matched here);
- ``socket``: a *warning* (:data:`WARN`, which leaves the engine ready) that the gateway's user
  can use the engine's socket, or that a TCP engine takes requests without a client
  certificate: either is root on the engine's machine. A rootless engine, or TLS, is ``ok``.

What the answers mean is decided by the pure ``record_*`` functions: each fault one row, cause
first, then its fix; :func:`summary_rows` and :func:`report_lines` show warnings beside faults.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import ssl
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kernelfleet.specs.installer import SpecRow
from kernelfleet.specs.verdicts import FAIL, OK, SKIP, HostReport, failure_lines
from kernelfleet.specs.verdicts import summary_rows as plain_summary_rows
from kernelfleet.transport.docker_api import DockerApi, DockerError, Endpoint, parse_host, path_id

DOCKER_CHECK_NAMES = ("engine", "version", "image", "network", "swarm", "socket")
#: A row that leaves the engine ready but that the admin should read.
WARN = "warn"
#: The oldest Engine API kernelfleet speaks (its requests name /v1.41).
MIN_API = (1, 41)
#: Seconds for all the questions to the engine together.
CHECK_TIMEOUT = 30.0


@dataclass(frozen=True)
class DockerTarget:
    """What to check for one Docker kernelspec: its provisioner's settings, resolved."""

    spec: str
    endpoint: Endpoint
    image: str
    allowed_images: tuple[str, ...] = ()
    network: str = "bridge"
    swarm: bool = False
    placement: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The engine as the report's first column names it."""
        return self.endpoint.url

    @property
    def socket_path(self) -> str:
        """The engine's unix socket, or '' for a TCP engine (or an address that is neither)."""
        try:
            scheme, where = parse_host(self.endpoint.url)
        except ValueError:
            return ""
        return where if scheme == "unix" else ""

    @property
    def images(self) -> list[str]:
        return list(dict.fromkeys(r for r in (self.image, *self.allowed_images) if r))


def target_for(row: SpecRow, settings: Any) -> DockerTarget:
    """The target of *row* from the Docker provisioner's *settings*."""
    return DockerTarget(
        spec=row.name,
        endpoint=settings.endpoint(),
        image=str(settings.image),
        allowed_images=tuple(str(i) for i in settings.allowed_images),
        network=str(settings.network),
        swarm=bool(settings.swarm),
        placement=tuple(str(c) for c in settings.placement),
    )


# -- what this machine and the engine say ---------------------------------------------------------


@dataclass(frozen=True)
class SocketFacts:
    """The engine's unix socket as the gateway's user sees it (read here, not asked)."""

    path: str
    exists: bool
    is_socket: bool = False
    mode: int = 0
    owner: str = ""
    group: str = ""
    usable: bool = False  # readable and writable by this process
    user: str = ""  # this process's user


def _name(lookup: Any, ident: int) -> str:
    try:
        return str(lookup(ident)[0])
    except KeyError:
        return str(ident)


def socket_facts(path: str) -> SocketFacts:
    """What the gateway's user sees of *path* (blocking: run it in a thread)."""
    user = _name(pwd.getpwuid, os.geteuid())
    try:
        st = os.stat(path)
    except OSError:
        return SocketFacts(path, exists=False, user=user)
    return SocketFacts(
        path,
        exists=True,
        is_socket=stat.S_ISSOCK(st.st_mode),
        mode=stat.S_IMODE(st.st_mode),
        owner=_name(pwd.getpwuid, st.st_uid),
        group=_name(grp.getgrgid, st.st_gid),
        usable=os.access(path, os.R_OK | os.W_OK),
        user=user,
    )


@dataclass
class EngineFacts:
    """The engine's answers; each an answer, an exception, or None when not asked."""

    ping: Any = None
    version: Any = None
    info: Any = None
    images: dict[str, Any] = field(default_factory=dict)
    network: Any = None
    nodes: Any = None
    socket: SocketFacts | None = None


async def _gather(*aws: Any) -> list[Any]:
    results = await asyncio.gather(*aws, return_exceptions=True)
    for res in results:
        if isinstance(res, asyncio.CancelledError):
            raise res
    return list(results)


async def ask_engine(target: DockerTarget) -> EngineFacts:
    """Everything the checks ask the engine, at once after ``/_ping`` answered."""
    facts = EngineFacts()
    if target.socket_path:
        facts.socket = await asyncio.to_thread(socket_facts, target.socket_path)
    try:
        api = DockerApi(target.endpoint, timeout=CHECK_TIMEOUT)
    except (ValueError, OSError, ssl.SSLError) as exc:  # the address, or the TLS files
        ep = target.endpoint
        named = getattr(exc, "filename", None) or ", ".join(
            f for f in (ep.tls_ca, ep.tls_cert, ep.tls_key) if f
        )
        about = f" ({named})" if named else ""
        facts.ping = DockerError(0, f"the engine's address or TLS files are unusable{about}: {exc}")
        return facts
    try:
        try:
            facts.ping = await api.get("/_ping")
        except DockerError as exc:
            facts.ping = exc
            return facts
        refs = target.images
        version, info, network, nodes, *images = await _gather(
            api.get("/version"),
            api.get("/info"),
            api.get(f"/networks/{path_id(target.network)}"),
            api.get("/nodes") if target.swarm else asyncio.sleep(0),
            *(api.get(f"/images/{path_id(ref)}/json") for ref in refs),
        )
        facts.version, facts.info, facts.network = version, info, network
        facts.nodes = nodes if target.swarm else None
        facts.images = dict(zip(refs, images, strict=True))
        return facts
    finally:
        await api.close()


# -- verdicts (pure) ------------------------------------------------------------------------------


def _failure(res: Any) -> str:
    if isinstance(res, DockerError):
        return f"{res.status}: {res.message[:300]}" if res.status else res.message[:400]
    return f"{type(res).__name__}: {res}"[:400]


def _too_old(res: Any) -> bool:
    return isinstance(res, DockerError) and res.status == 400 and "too new" in res.message


def _unreachable_fix(target: DockerTarget, facts: EngineFacts, reason: str) -> str:
    where = "--docker-host (reinstall the spec with --replace) or the gateway's KF_DOCKER_HOST"
    sock = facts.socket
    if sock is not None and not sock.exists:
        return (
            f"start dockerd (systemctl start docker), or point the spec at the engine's "
            f"socket: {where}"
        )
    if sock is not None and (not sock.usable or "Permission denied" in reason):
        return (
            f"the gateway's user {sock.user} may not use {sock.path} (owner {sock.owner}:"
            f"{sock.group}, mode {sock.mode:04o}): add it to group {sock.group}, which makes "
            "it root-equivalent on this machine, or run a rootless engine as that user"
        )
    if sock is not None:
        return (
            f"start dockerd (systemctl start docker): {sock.path} is there but no engine "
            f"answers on it; or point the spec at the engine that runs: {where}"
        )
    if "unusable" in reason or "TLS files" in reason:
        return f"fix the engine's address or the TLS files: {where}, KF_DOCKER_TLS_*"
    if "certificate" in reason.lower() or "SSL" in reason:
        return (
            "--tls-ca must hold the CA that signed the engine's certificate, and --tls-cert "
            "and --tls-key a client certificate the engine trusts (dockerd --tlsverify)"
        )
    return f"start dockerd with -H {target.label}, or fix the engine's address: {where}"


def record_engine(report: HostReport, target: DockerTarget, facts: EngineFacts) -> bool:
    """The engine's row; whether it answered (the other rows need it)."""
    ping = facts.ping
    if isinstance(ping, str) or (ping is not None and not isinstance(ping, BaseException)):
        version = facts.version if isinstance(facts.version, Mapping) else {}
        info = facts.info if isinstance(facts.info, Mapping) else {}
        about = [str(info.get("OperatingSystem") or ""), str(info.get("Name") or "")]
        if _rootless(info):
            about.append("rootless")
        shown = ", ".join(a for a in about if a)
        detail = f"{target.label}: Docker {version.get('Version', '?')}"
        report.add("engine", OK, detail + (f" ({shown})" if shown else ""))
        return True
    if _too_old(ping):
        report.add("engine", OK, f"{target.label} answers (with an API older than 1.41)")
        return True
    reason = _failure(ping) if ping is not None else "not asked"
    if isinstance(ping, DockerError) and ping.status:
        report.add(
            "engine",
            FAIL,
            f"{target.label} answered, but not as a Docker engine: {reason}",
            "point the spec at the engine's socket or address: --docker-host (reinstall the "
            "spec with --replace) or the gateway's KF_DOCKER_HOST",
        )
        return False
    said = (
        reason if reason.startswith("the Docker engine") else f"no Docker engine answered: {reason}"
    )
    report.add("engine", FAIL, said, _unreachable_fix(target, facts, reason))
    return False


def api_version(text: Any) -> tuple[int, int] | None:
    """``"1.43"`` → (1, 43); None for anything else."""
    major, _, minor = str(text or "").partition(".")
    if major.isdigit() and minor.isdigit() and len(major) < 4 and len(minor) < 4:
        return int(major), int(minor)
    return None


def record_version(report: HostReport, facts: EngineFacts) -> None:
    wanted = ".".join(map(str, MIN_API))
    upgrade = "upgrade the engine to Docker 20.10 or later (Debian 12's docker.io)"
    if _too_old(facts.ping):
        message = facts.ping.message[:300]
        report.add("version", FAIL, f"the engine's API is older than {wanted}: {message}", upgrade)
        return
    version = facts.version
    if not isinstance(version, Mapping):
        report.add(
            "version",
            FAIL,
            f"the engine did not say its version: {_failure(version)}",
            "check the engine's log (journalctl -u docker)",
        )
        return
    found = api_version(version.get("ApiVersion"))
    shown = f"Docker {version.get('Version', '?')}, API {version.get('ApiVersion', '?')}"
    if found is None or found < MIN_API:
        report.add("version", FAIL, f"{shown}: kernelfleet needs API {wanted} or later", upgrade)
        return
    report.add("version", OK, f"{shown} (kernelfleet speaks {wanted})")


def _load_hint(target: DockerTarget, ref: str) -> str:
    recipe = next((r for r in ("python", "r") if f"/kernel-{r}:" in ref), "ARCHIVE")
    nodes = " and on every Swarm node that may run kernels" if target.swarm else ""
    return (
        f"load it: kernelfleet image import {recipe} --docker-host={target.label} (or docker "
        f"-H {target.label} load -i ARCHIVE){nodes}; kernelfleet never pulls"
    )


def record_image(report: HostReport, target: DockerTarget, facts: EngineFacts) -> None:
    if not target.image:
        report.add(
            "image",
            FAIL,
            "the kernelspec names no image",
            "reinstall it with --image=REF (and --replace), or set KF_DOCKER_IMAGE",
        )
        return
    version = facts.version if isinstance(facts.version, Mapping) else {}
    platform = f"{version.get('Os', '')}/{version.get('Arch', '')}"
    present = []
    for ref in target.images:
        found = facts.images.get(ref)
        if isinstance(found, Mapping):
            theirs = f"{found.get('Os', '')}/{found.get('Architecture', '')}"
            if version and theirs != platform:
                report.add(
                    "image",
                    FAIL,
                    f"image {ref} is for {theirs}, the engine runs {platform}",
                    f"build the image for {platform} and load it (kernelfleet image build on "
                    "such a machine)",
                )
                continue
            size = int(found.get("Size") or 0) / 1e6
            present.append(f"{ref} ({str(found.get('Id', ''))[7:19]}, {size:.0f} MB)")
        elif isinstance(found, DockerError) and found.status == 404:
            report.add(
                "image",
                FAIL,
                f"image {ref} is not on the engine {target.label}",
                _load_hint(target, ref),
            )
        else:
            report.add(
                "image",
                FAIL,
                f"image {ref} could not be looked up: {_failure(found)}",
                "check the engine's log (journalctl -u docker)",
            )
    if len(present) == len(target.images):
        note = " (on this manager: the nodes that run kernels need it too)" if target.swarm else ""
        report.add("image", OK, "; ".join(present) + note)


def record_network(report: HostReport, target: DockerTarget, network: Any) -> None:
    name = target.network
    if isinstance(network, DockerError) and network.status == 404:
        create = "--driver overlay --attachable " if target.swarm else ""
        report.add(
            "network",
            FAIL,
            f"network {name} does not exist on the engine {target.label}",
            f"docker -H {target.label} network create {create}{name}, or reinstall the spec "
            "with --network=NAME of an existing network (and --replace)",
        )
        return
    if not isinstance(network, Mapping):
        report.add(
            "network",
            FAIL,
            f"network {name} could not be read: {_failure(network)}",
            "check the engine's log (journalctl -u docker)",
        )
        return
    driver, scope = str(network.get("Driver") or "?"), str(network.get("Scope") or "?")
    if not target.swarm and scope == "swarm" and not network.get("Attachable"):
        report.add(
            "network",
            FAIL,
            f"network {name} ({driver}) is a swarm network that plain containers cannot join "
            "(it is not attachable)",
            f"docker -H {target.label} network create --driver overlay --attachable NAME and "
            "reinstall the spec with --network=NAME, or with --swarm (and --replace)",
        )
        return
    report.add("network", OK, f"{name} exists (driver {driver}, scope {scope})")


def _rootless(info: Mapping[str, Any]) -> bool:
    return any("rootless" in str(o) for o in info.get("SecurityOptions") or [])


def record_swarm(report: HostReport, target: DockerTarget, info: Any, nodes: Any) -> None:
    if not target.swarm:
        report.add("swarm", SKIP, "not used: kernels are plain containers")
        return
    if not isinstance(info, Mapping):
        report.add(
            "swarm",
            FAIL,
            f"the engine did not say its Swarm state: {_failure(info)}",
            "check the engine's log (journalctl -u docker)",
        )
        return
    found = info.get("Swarm")
    swarm: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    state = str(swarm.get("LocalNodeState") or "inactive")
    without = "reinstall the spec without --swarm (and --replace)"
    if state == "inactive":
        report.add(
            "swarm",
            FAIL,
            f"the engine {target.label} is not in a swarm (Swarm state inactive), and the "
            "spec runs kernels as Swarm services",
            f"make it a manager: docker -H {target.label} swarm init; or {without}",
        )
        return
    if state != "active":
        fix = "docker swarm unlock on it" if state == "locked" else "see docker info on it"
        report.add("swarm", FAIL, f"the engine's Swarm state is {state}", f"{fix}; or {without}")
        return
    if not swarm.get("ControlAvailable"):
        report.add(
            "swarm",
            FAIL,
            f"the engine {target.label} is a Swarm worker, not a manager: services are "
            "created on a manager",
            "point the spec at a manager (docker node ls there lists them): --docker-host "
            "(reinstall with --replace) or KF_DOCKER_HOST",
        )
        return
    if not isinstance(nodes, list):
        report.add(
            "swarm",
            FAIL,
            f"the swarm's nodes could not be listed: {_failure(nodes)}",
            "check the engine's log (journalctl -u docker)",
        )
        return
    items = [n for n in nodes if isinstance(n, Mapping)]
    ready = [
        n
        for n in items
        if (n.get("Status") or {}).get("State") == "ready"
        and (n.get("Spec") or {}).get("Availability", "active") == "active"
    ]
    if not ready:
        report.add(
            "swarm",
            FAIL,
            f"none of the swarm's {_nodes(len(items))} is ready and active",
            "docker node ls on the manager: bring a node up, or docker node update "
            "--availability active NODE",
        )
        return
    placed = (
        f"; placement {', '.join(target.placement)} (not matched against the nodes here)"
        if target.placement
        else ""
    )
    report.add(
        "swarm",
        OK,
        f"a manager of a swarm of {_nodes(len(items))}, {len(ready)} ready and active{placed}",
    )


def _nodes(count: int) -> str:
    return f"{count} node" if count == 1 else f"{count} nodes"


def record_socket(report: HostReport, target: DockerTarget, facts: EngineFacts) -> None:
    info = facts.info if isinstance(facts.info, Mapping) else {}
    sock = facts.socket
    if sock is None:  # a TCP engine
        if target.endpoint.tls_cert:
            report.add(
                "socket",
                OK,
                f"TLS with the client certificate {target.endpoint.tls_cert}: only holders of "
                "a certificate the engine trusts reach it",
            )
            return
        report.add(
            "socket",
            WARN,
            f"{target.label} takes requests without a client certificate: whoever reaches it "
            "is root on the engine's machine",
            "run the engine with --tlsverify and reinstall the spec with --tls-ca, --tls-cert "
            "and --tls-key (and --replace)",
        )
        return
    if not sock.exists:
        report.add("socket", SKIP, f"not checked: {sock.path} does not exist (see engine)")
        return
    if not sock.usable:
        report.add("socket", SKIP, f"not checked: the gateway's user cannot use {sock.path}")
        return
    if _rootless(info):
        report.add(
            "socket",
            OK,
            f"{sock.path} is a rootless engine's: whoever uses it has the rights of "
            f"{sock.owner} only",
        )
        return
    everyone = " and so can every user of this machine" if sock.mode & 0o006 else ""
    report.add(
        "socket",
        WARN,
        f"the gateway's user {sock.user} can use {sock.path} (owner {sock.owner}:{sock.group}, "
        f"mode {sock.mode:04o}){everyone}: that is root on this machine (a container it "
        "starts can mount / and run as root)",
        (f"chmod o-rw {sock.path}; " if everyone else "")
        + (
            "run the gateway as an account of its own in that group, not root, and "
            if sock.user == "root"
            else ""
        )
        + "keep that account for the gateway alone (no notebooks or logins as it); a rootless "
        "engine, or a tcp:// engine with --tlsverify on another machine, confines it",
    )


# -- the check and its output ---------------------------------------------------------------------


async def check_engine(target: DockerTarget) -> HostReport:
    """Every check of *target*, as one report (its host is :attr:`DockerTarget.label`)."""
    report = HostReport(target.label)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            facts = await ask_engine(target)
    except TimeoutError:
        facts = EngineFacts(ping=DockerError(0, f"no answer in {CHECK_TIMEOUT:g} s"))
    if record_engine(report, target, facts):
        record_version(report, facts)
        if _too_old(facts.ping):
            for name in ("image", "network", "swarm"):
                report.add(name, SKIP, "not checked (the engine's API is too old)")
        else:
            record_image(report, target, facts)
            record_network(report, target, facts.network)
            record_swarm(report, target, facts.info, facts.nodes)
    else:
        for name in ("version", "image", "network", "swarm"):
            report.add(name, SKIP, "not checked (no engine)")
    record_socket(report, target, facts)
    return report


def summary_rows(reports: Sequence[HostReport], names: Sequence[str]) -> list[list[str]]:
    """:func:`~kernelfleet.specs.verdicts.summary_rows`, with ``warn`` shown for a warning."""
    rows = plain_summary_rows(
        [
            HostReport(r.host, [c for c in r.checks if c.status != WARN], r.hostname)
            for r in reports
        ],
        names,
    )
    for row, rep in zip(rows, reports, strict=True):
        for i, name in enumerate(names):
            if any(c.name == name and c.status == WARN for c in rep.checks):
                row[2 + i] = "WARN" if row[2 + i] != "FAIL" else "FAIL"
    return rows


def report_lines(reports: Sequence[HostReport]) -> list[str]:
    """The faults with their fixes, then the warnings with theirs."""
    lines = failure_lines(reports)
    for rep in reports:
        for check in rep.checks:
            if check.status == WARN:
                lines.append(f"{rep.host}: {check.name}: warning: {check.detail}")
                lines.append(f"    advice: {check.fix}")
    return lines


__all__ = [
    "DOCKER_CHECK_NAMES",
    "WARN",
    "DockerTarget",
    "EngineFacts",
    "SocketFacts",
    "api_version",
    "ask_engine",
    "check_engine",
    "record_engine",
    "record_image",
    "record_network",
    "record_socket",
    "record_swarm",
    "record_version",
    "report_lines",
    "socket_facts",
    "summary_rows",
    "target_for",
]
