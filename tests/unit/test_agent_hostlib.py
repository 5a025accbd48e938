"""Host-side helpers of the agent (kernelfleet/launchers/hostlib.py), run locally."""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
from pathlib import Path

import pytest

from kernelfleet.launchers.hostlib import (
    PORT_NAMES,
    AgentError,
    listening_ports,
    pick_ports,
    resolve_user,
    secure_dir,
    write_connection_file,
)


def free_range(size: int) -> tuple[int, int]:
    """A port range whose ports are free right now on 127.0.0.1."""
    for lo in range(42000, 60000, 97):
        socks = []
        try:
            for port in range(lo, lo + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return lo, lo + size - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free range")


def test_pick_ports_holds_five_ports_inside_the_range() -> None:
    lo, hi = free_range(8)
    held = pick_ports("127.0.0.1", [lo, hi], reserved=set())
    try:
        ports = [s.getsockname()[1] for s in held]
        assert len(set(ports)) == len(PORT_NAMES)
        assert all(lo <= p <= hi for p in ports)
        # held: nobody else can bind them, the kernel (SO_REUSEADDR) can
        probe = socket.socket()
        with pytest.raises(OSError):
            probe.bind(("127.0.0.1", ports[0]))
        probe.close()
        kernel = socket.socket()
        kernel.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        kernel.bind(("127.0.0.1", ports[0]))
        kernel.listen()
        assert ports[0] in listening_ports("127.0.0.1")
        kernel.close()
    finally:
        for s in held:
            s.close()


def test_pick_ports_reports_an_exhausted_range_and_skips_reserved_ports() -> None:
    lo, hi = free_range(6)
    with pytest.raises(AgentError, match=f"{lo}..{hi} is exhausted"):
        pick_ports("127.0.0.1", [lo, hi], reserved={lo, lo + 1})


def test_pick_ports_prefers_the_previous_ports_when_all_are_free() -> None:
    lo, hi = free_range(12)
    preferred = {name: lo + 2 + i for i, name in enumerate(PORT_NAMES)}
    held = pick_ports("127.0.0.1", [lo, hi], reserved=set(), preferred=preferred)
    assert [s.getsockname()[1] for s in held] == list(preferred.values())
    for s in held:
        s.close()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", lo + 2))
    try:
        held = pick_ports("127.0.0.1", [lo, hi], reserved=set(), preferred=preferred)
        assert lo + 2 not in [s.getsockname()[1] for s in held]
        for s in held:
            s.close()
    finally:
        blocker.close()


def test_resolve_user_modes_and_refusals() -> None:
    me = pwd.getpwuid(os.geteuid())
    assert resolve_user({}, me.pw_uid) == (me, None)
    other = next(p for p in pwd.getpwall() if p.pw_uid not in (0, me.pw_uid) and p.pw_uid < 65534)
    assert resolve_user({"user": other.pw_name, "prohibited_uids": [0]}, 0)[1] == "setuid"
    assert resolve_user({"user": other.pw_name, "prohibited_uids": [0]}, 12345)[1] == "sudo"
    with pytest.raises(AgentError, match="privileged"):
        resolve_user({"user": "root", "prohibited_uids": [0]}, 0)
    with pytest.raises(AgentError, match="does not exist"):
        resolve_user({"user": "no-such-user-kft"}, 0)
    with pytest.raises(AgentError, match="invalid"):
        resolve_user({"user": "x; rm -rf /"}, 0)


def test_secure_dir_refuses_a_directory_others_can_enter(tmp_path: Path) -> None:
    good = tmp_path / "good"
    secure_dir(str(good), os.geteuid(), os.getegid())
    assert stat.S_IMODE(good.stat().st_mode) == 0o700
    bad = tmp_path / "bad"
    bad.mkdir(mode=0o755)
    bad.chmod(0o755)
    with pytest.raises(AgentError, match="unsafe directory"):
        secure_dir(str(bad), os.geteuid(), os.getegid())
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(AgentError):
        secure_dir(str(link), os.geteuid(), os.getegid())


def test_connection_file_is_private_and_complete(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    ports = {name: 40000 + i for i, name in enumerate(PORT_NAMES)}
    request = {
        "kernel_name": "py",
        "connection": {"key": "k", "curve_publickey": "P" * 40, "curve_secretkey": "S" * 40},
    }
    write_connection_file(str(path), "10.0.0.5", ports, request, pwd.getpwuid(os.geteuid()))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    info = json.loads(path.read_text())
    assert info["ip"] == "10.0.0.5" and info["key"] == "k" and info["hb_port"] == 40004
    assert info["curve_secretkey"] == "S" * 40
