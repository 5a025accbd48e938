"""The HAProxy config the replica tests run behind, and the parse of its server states."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.ha.haproxy_config import (
    Replica,
    Timings,
    build_haproxy_config,
    parse_servers_state,
)

REPLICAS = [Replica("gw1", "127.0.0.1", 8001), Replica("gw2", "127.0.0.1", 8002)]


def _config(replicas: list[Replica] = REPLICAS, **kwargs: object) -> str:
    args: dict[str, object] = {
        "bind_host": "127.0.0.1",
        "bind_port": 9000,
        "stats_socket": "/tmp/kf-ha-x/admin.sock",
        "pidfile": "/tmp/kf-ha-x/haproxy.pid",
        **kwargs,
    }
    return build_haproxy_config(replicas, **args)  # type: ignore[arg-type]


def _section(text: str, header: str) -> list[str]:
    """The stripped lines of the section that starts with *header*."""
    lines = text.splitlines()
    start = lines.index(header) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return [line.strip() for line in lines[start:end]]


def test_the_backend_balances_over_every_replica_and_checks_readiness() -> None:
    backend = _section(_config(), "backend gateways")
    assert "balance roundrobin" in backend
    assert "option httpchk GET /readyz" in backend
    assert "http-check expect status 200" in backend
    assert "default-server inter 500ms fastinter 500ms downinter 500ms fall 2 rise 1" in backend
    servers = [line for line in backend if line.startswith("server ")]
    assert servers == ["server gw1 127.0.0.1:8001 check", "server gw2 127.0.0.1:8002 check"]


def test_the_frontend_listens_where_asked_and_forwards_to_the_backend() -> None:
    frontend = _section(_config(bind_port=12345), "frontend kernelfleet")
    assert frontend == ["bind 127.0.0.1:12345", "default_backend gateways"]


def test_timeouts_keep_websockets_open_and_failed_connections_are_redispatched() -> None:
    timings = Timings(tunnel_timeout_ms=7_200_000, server_timeout_ms=30_000, retries=5)
    defaults = _section(_config(timings=timings), "defaults")
    assert "mode http" in defaults
    assert "timeout tunnel 7200000ms" in defaults
    assert "timeout server 30000ms" in defaults
    assert "timeout client 60000ms" in defaults
    assert "retries 5" in defaults
    assert "option redispatch 1" in defaults


def test_the_runtime_api_and_pid_file_are_private() -> None:
    glob = _section(_config(), "global")
    assert "stats socket /tmp/kf-ha-x/admin.sock mode 600 level admin" in glob
    assert "pidfile /tmp/kf-ha-x/haproxy.pid" in glob


def test_the_served_by_header_names_the_replica_only_when_asked() -> None:
    assert "X-Served-By" not in _config()
    backend = _section(_config(served_by_header="X-Served-By"), "backend gateways")
    assert "http-response set-header X-Served-By %[srv_name]" in backend


def test_ipv6_addresses_are_bracketed() -> None:
    text = _config([Replica("gw1", "::1", 8001)], bind_host="::1")
    assert "bind [::1]:9000" in text
    assert "server gw1 [::1]:8001 check" in text


@pytest.mark.parametrize(
    ("replicas", "kwargs", "complaint"),
    [
        ([], {}, "at least one replica"),
        ([REPLICAS[0], REPLICAS[0]], {}, "unique"),
        ([Replica("gw 1", "127.0.0.1", 8001)], {}, "usable HAProxy name"),
        ([Replica("gw1", "127.0.0.1", 0)], {}, "not a TCP port"),
        (REPLICAS, {"bind_port": 70000}, "not a TCP port"),
        (REPLICAS, {"stats_socket": "/tmp/a b/admin.sock"}, "cannot take this path"),
        (REPLICAS, {"check_path": "readyz"}, "absolute path"),
        (REPLICAS, {"served_by_header": "X Served"}, "header name"),
    ],
)
def test_values_haproxy_would_misread_are_refused(
    replicas: list[Replica], kwargs: dict[str, object], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        _config(replicas, **kwargs)


@pytest.mark.skipif(not os.path.exists("/usr/sbin/haproxy"), reason="Debian's haproxy missing")
def test_haproxy_accepts_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        _config(
            stats_socket=str(tmp_path / "admin.sock"),
            pidfile=str(tmp_path / "haproxy.pid"),
            served_by_header="X-Served-By",
        )
    )
    check = subprocess.run(
        ["/usr/sbin/haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "WARNING" not in check.stdout + check.stderr


# What HAProxy 2.6 answered to `show servers state gateways`: gw1 up, gw2 refused its check.
STATE_DUMP = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight \
srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state \
srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl \
srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 gateways 1 gw1 127.0.0.1 2 0 1 1 3 15 3 2 6 0 0 0 - 45001 - 0 0 - - 0
3 gateways 2 gw2 127.0.0.1 0 0 1 1 1 8 2 0 6 0 0 0 - 45002 - 0 0 - - 0

"""


def test_server_states_are_read_by_column_name() -> None:
    up, down = parse_servers_state(STATE_DUMP)
    assert (up.backend, up.name, up.address, up.port) == ("gateways", "gw1", "127.0.0.1", 45001)
    assert (up.state, up.check_passed, up.since_change_s) == ("UP", True, 3)
    assert (down.name, down.port, down.state, down.check_passed) == ("gw2", 45002, "DOWN", False)


def test_an_answer_that_is_not_a_state_dump_is_refused() -> None:
    with pytest.raises(ValueError, match="version 1"):
        parse_servers_state("Unknown command: 'show servers stat'\n")
    with pytest.raises(ValueError, match="before the column header"):
        parse_servers_state("1\n3 gateways 1 gw1 127.0.0.1 2\n")


@pytest.mark.skipif(not os.path.exists("/usr/sbin/haproxy"), reason="Debian's haproxy missing")
def test_the_example_config_for_admins_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "kernelfleet.cfg"
    text = example.read_text()
    assert "option httpchk GET /readyz" in text and "balance url_param session_id" in text
    done = subprocess.run(
        ["/usr/sbin/haproxy", "-c", "-f", str(example)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
