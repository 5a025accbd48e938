"""HAProxy in front of gateway replicas, the pure half: the config text, and the parse of what
the runtime API (``show servers state``) answers. No processes, no sockets: unit-tested in
``tests/unit/test_haproxy_config.py``, driven by ``tests/ha/harness.py``.

The config is written for HAProxy 2.6 (Debian 12) and for what a gateway needs from a proxy:

- one HTTP frontend, one backend, ``balance roundrobin`` over the replicas;
- an active health check on the gateway's readiness probe (``GET /readyz``, no credentials),
  ``inter``/``fall``/``rise`` short enough that a dead replica is out within about a second;
- ``retries`` with ``option redispatch 1``: a connection refused by a dead replica that the
  checks have not caught yet is retried on another one (HAProxy's default ``retry-on
  conn-failure``: only requests that never reached a server are retried, so a POST is never
  sent twice);
- websocket-friendly timeouts: ``timeout tunnel`` (an upgraded connection) is long, while
  ``timeout client``/``server`` bound an ordinary request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: ``srv_op_state`` of ``show servers state`` (HAProxy's ``enum srv_state``).
OP_STATES = {0: "DOWN", 1: "STARTING", 2: "UP", 3: "STOPPING"}
#: ``srv_check_result`` of a check that passed (HAProxy's ``CHK_RES_PASSED``).
CHECK_PASSED = 3


@dataclass(frozen=True)
class Replica:
    """One backend server: *name* is how HAProxy reports it (``gw1``…)."""

    name: str
    host: str
    port: int


@dataclass(frozen=True)
class Timings:
    """Health-check cadence and timeouts, in milliseconds unless the name says otherwise."""

    check_interval_ms: int = 500
    #: consecutive failed checks before a server is marked DOWN
    fall: int = 2
    #: consecutive good checks before a DOWN server is UP again
    rise: int = 1
    #: one check's own deadline (connect + answer)
    check_timeout_ms: int = 1000  # a loaded replica may take a while; a dead one refuses
    connect_timeout_ms: int = 1000
    client_timeout_ms: int = 60_000
    server_timeout_ms: int = 60_000
    #: an upgraded (websocket) connection, idle in both directions
    tunnel_timeout_ms: int = 3_600_000
    http_request_timeout_ms: int = 10_000
    #: connection attempts after the first, each one on another server (redispatch)
    retries: int = 3


def build_haproxy_config(
    replicas: Sequence[Replica],
    *,
    bind_host: str,
    bind_port: int,
    stats_socket: str,
    pidfile: str,
    timings: Timings = Timings(),
    check_path: str = "/readyz",
    backend: str = "gateways",
    served_by_header: str | None = None,
) -> str:
    """The haproxy.cfg text for *replicas* behind ``bind_host:bind_port``.

    *stats_socket* is a unix socket path for the runtime API (``level admin``: the harness
    reads server states and may repoint a server); *pidfile* keeps HAProxy off the system's
    ``/run/haproxy.pid``. Logs go to stdout, one line per request and per state change.
    With *served_by_header*, every answer carries that header naming the server that gave it
    (how a test sees round-robin at work).
    """
    if not replicas:
        raise ValueError("HAProxy needs at least one replica to balance over")
    names = [r.name for r in replicas]
    if len(set(names)) != len(names):
        raise ValueError(f"replica names must be unique, got {names}")
    for name in (*names, backend):
        if not name or any(c.isspace() or c in "/#" for c in name):
            raise ValueError(f"not a usable HAProxy name: {name!r}")
    if not check_path.startswith("/") or any(c.isspace() for c in check_path):
        raise ValueError(f"the check path must be an absolute path without spaces: {check_path!r}")
    if served_by_header is not None and not re.fullmatch(r"[A-Za-z0-9-]+", served_by_header):
        raise ValueError(f"not a usable header name: {served_by_header!r}")
    t = timings
    lines = [
        "global",
        f"    pidfile {_config_path(pidfile)}",
        f"    stats socket {_config_path(stats_socket)} mode 600 level admin",
        "    log stdout format raw local0 info",
        "    maxconn 2048",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlognull",
        f"    timeout connect {t.connect_timeout_ms}ms",
        f"    timeout client {t.client_timeout_ms}ms",
        f"    timeout server {t.server_timeout_ms}ms",
        f"    timeout tunnel {t.tunnel_timeout_ms}ms",
        f"    timeout http-request {t.http_request_timeout_ms}ms",
        f"    timeout check {t.check_timeout_ms}ms",
        f"    retries {t.retries}",
        "    option redispatch 1",
        "",
        "frontend kernelfleet",
        f"    bind {_address(bind_host, bind_port)}",
        f"    default_backend {backend}",
        "",
        f"backend {backend}",
        "    balance roundrobin",
        f"    option httpchk GET {check_path}",
        "    http-check expect status 200",
        f"    default-server inter {t.check_interval_ms}ms fastinter {t.check_interval_ms}ms"
        f" downinter {t.check_interval_ms}ms fall {t.fall} rise {t.rise}",
    ]
    if served_by_header is not None:
        lines.append(f"    http-response set-header {served_by_header} %[srv_name]")
    lines += [f"    server {r.name} {_address(r.host, r.port)} check" for r in replicas]
    return "\n".join(lines) + "\n"


def _config_path(path: str) -> str:
    """*path* as a config word: HAProxy splits on blanks and reads ``#`` as a comment."""
    if not path or any(c.isspace() or c == "#" for c in path):
        raise ValueError(f"HAProxy cannot take this path in its config: {path!r}")
    return path


def _address(host: str, port: int) -> str:
    if not 0 < port < 65536:
        raise ValueError(f"not a TCP port: {port}")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class ServerState:
    """One server as ``show servers state`` tells it."""

    backend: str
    name: str
    address: str
    port: int
    #: ``UP``, ``DOWN``, ``STARTING`` or ``STOPPING`` (HAProxy's operational state)
    state: str
    #: seconds since the last change of state
    since_change_s: int
    #: whether the last health check passed (False also while one is under way)
    check_passed: bool


def parse_servers_state(text: str) -> list[ServerState]:
    """Parse the answer to ``show servers state [backend]`` (format version 1).

    The answer is a version line, a ``# name name …`` header naming the columns, then one
    line per server; columns are read by their header names, so added columns do not matter.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].strip() != "1":
        raise ValueError(f"not a version 1 server-state dump: {text[:200]!r}")
    header: list[str] | None = None
    servers = []
    for line in lines[1:]:
        if line.startswith("#"):
            header = line.lstrip("#").split()
            continue
        if header is None:
            raise ValueError(f"server line before the column header: {line!r}")
        row = dict(zip(header, line.split(), strict=False))
        op = int(row["srv_op_state"])
        servers.append(
            ServerState(
                backend=row["be_name"],
                name=row["srv_name"],
                address=row["srv_addr"],
                port=int(row["srv_port"]),
                state=OP_STATES.get(op, f"UNKNOWN({op})"),
                since_change_s=int(row["srv_time_since_last_change"]),
                check_passed=int(row["srv_check_result"]) == CHECK_PASSED,
            )
        )
    return servers
