"""Shipping a built environment archive to real SSH hosts (kernelfleet/envs/ship.py).

The hosts are the project's network-namespace testbed (tests/specs/fleet.py's shared one: one
per session). Their /tmp is private, so an environment shipped under /tmp/kf-envs-test exists on
a host only if it arrived there; every check looks on the hosts themselves, over SSH.

The archives are real relocatable venvs made with uv from PyPI: a small one (six) for the
behaviour, a ~30 MB one (six, numpy, sympy) for the timings printed by
``test_a_30_mb_environment_ships_to_three_hosts_at_once``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from kernelfleet.envs.ship import HostShip, remove_from_hosts, ship_to_hosts
from kernelfleet.transport.agent_client import SSHTarget
from tests.specs.fleet import shared_testbed
from tests.testbed import skip_or_fail

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(240)]

BASE_PYTHON = "/usr/bin/python3.11"
TEST_ROOT = "/tmp/kf-envs-test"


@dataclass(frozen=True)
class Archive:
    path: Path
    sha256: str
    size: int

    @property
    def digest12(self) -> str:
        return self.sha256[:12]


def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        skip_or_fail("envs", "uv is not installed (pip install uv)")
    return found


def build_archive(where: Path, name: str, packages: list[str]) -> Archive:
    """A relocatable venv with *packages*, archived as the environment builder does."""
    if not os.path.exists(BASE_PYTHON):
        skip_or_fail("envs", f"{BASE_PYTHON} is missing (Debian's python3.11)")
    env = where / name
    run = [uv(), "venv", "-q", "--relocatable", "--python", BASE_PYTHON, str(env)]
    install = [uv(), "pip", "install", "-q", "--python", str(env / "bin" / "python"), *packages]
    for argv in (run, install):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            skip_or_fail("envs", f"{' '.join(argv[:3])} failed (no PyPI?): {done.stderr[-300:]}")
    path = where / f"{name}.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for entry in sorted(env.iterdir()):
            tar.add(entry, arcname=entry.name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Archive(path, digest, path.stat().st_size)


@pytest.fixture(scope="session")
def ship_bed() -> Iterator[Any]:
    with shared_testbed() as bed:
        yield bed


@pytest.fixture(scope="session")
def small_env(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    return build_archive(tmp_path_factory.mktemp("envs"), "six", ["six"])


@pytest.fixture(scope="session")
def big_env(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    return build_archive(tmp_path_factory.mktemp("envs"), "sci", ["six", "numpy", "sympy"])


def target(bed: Any, host: Any, **overrides: Any) -> SSHTarget:
    options: dict[str, Any] = {
        "user": "root",
        "key_file": str(bed.key),
        "known_hosts": str(bed.known_hosts),
        **overrides,
    }
    return SSHTarget(host.ip, **options)


def targets(bed: Any) -> list[SSHTarget]:
    return [target(bed, h) for h in bed.hosts]


def env_parent(name: str) -> str:
    """A fresh ``<host_root>/<name>`` under the hosts' private /tmp."""
    return f"{TEST_ROOT}/{secrets.token_hex(4)}/{name}"


class Progress:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, host: str, text: str) -> None:
        self.lines.append((host, text))

    def of(self, host: str) -> list[str]:
        return [text for h, text in self.lines if h == host]


async def on_host(bed: Any, host: Any, command: str) -> str:
    """*command*'s stdout, run on *host* over SSH (fails the test if it fails)."""
    options = target(bed, host).connect_options(keepalive=False)
    async with asyncssh.connect(host.ip, **options) as conn:
        res = await conn.run(command, check=True)
    return str(res.stdout)


async def listing(bed: Any, host: Any, path: str) -> list[str]:
    """Entries of *path* on *host* (hidden ones too); [] when it does not exist."""
    out = await on_host(bed, host, f"ls -A {path} 2>/dev/null || true")
    return out.split()


def report(results: list[HostShip]) -> str:
    return "\n".join(json.dumps(r.as_json()) for r in results)


# -- behaviour -----------------------------------------------------------------------------------


async def test_every_host_gets_the_environment_and_the_second_ship_is_cached(
    ship_bed: Any, small_env: Archive
) -> None:
    parent = env_parent("six")
    dest = f"{parent}/{small_env.digest12}"
    progress = Progress()
    first = await ship_to_hosts(
        small_env.path, small_env.sha256, dest, targets(ship_bed), progress=progress
    )
    assert [(r.ok, r.cached, r.bytes_sent) for r in first] == [(True, False, small_env.size)] * 3
    assert [r.host for r in first] == [h.ip for h in ship_bed.hosts]
    code = "import json, six, sys; print(json.dumps([sys.prefix, six.__version__]))"
    check = f"{dest}/bin/python -c '{code}' && cat {dest}/.kf-env.json && echo && ls -A {parent}"
    outputs = await asyncio.gather(*(on_host(ship_bed, h, check) for h in ship_bed.hosts))
    for host, out in zip(ship_bed.hosts, outputs, strict=True):
        assert progress.of(host.ip)[0] == "connected"
        assert progress.of(host.ip)[-1].startswith("done: ")
        imported, marker, entries = out.splitlines()
        prefix, version = json.loads(imported)
        assert prefix == dest and version.startswith("1.")
        assert json.loads(marker)["sha256"] == small_env.sha256
        assert json.loads(marker)["name"] == "six"
        assert entries.split() == [small_env.digest12]  # no temp dir left beside it
    assert not os.path.exists(TEST_ROOT) or not any(Path(TEST_ROOT).iterdir())  # not local

    again = await ship_to_hosts(
        small_env.path, small_env.sha256, dest, targets(ship_bed), progress=progress
    )
    assert [(r.ok, r.cached, r.bytes_sent) for r in again] == [(True, True, 0)] * 3, report(again)
    await remove_from_hosts(parent, targets(ship_bed))


async def test_a_host_that_cannot_be_reached_fails_alone_with_its_cause_and_fix(
    ship_bed: Any, small_env: Archive
) -> None:
    dest = f"{env_parent('six')}/{small_env.digest12}"
    down = ship_bed.host(3)
    pid = ship_bed.sshd_pid(down)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # host 3's sshd stops
    bogus = target(ship_bed, ship_bed.host(1), port=2222)  # nothing listens there
    try:
        deadline = time.monotonic() + 5
        while ship_bed.sshd_pid(down) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        hosts = [*targets(ship_bed), bogus]
        results = await ship_to_hosts(
            small_env.path, small_env.sha256, dest, hosts, progress=Progress()
        )
    finally:
        ship_bed.revive(down)
    assert [(r.ok, r.cached) for r in results] == [(True, False), (True, False)] + [
        (False, False)
    ] * 2, report(results)
    for t, r in zip(hosts[2:], results[2:], strict=True):
        assert r.bytes_sent == 0
        assert r.error.startswith(f"cannot connect to port {t.port}: "), r.error
        assert (
            f"; fix: start sshd on {t.host} (systemctl start ssh) and check that port {t.port}"
            in r.error
        ), r.error
    await remove_from_hosts(dest.rsplit("/", 1)[0], targets(ship_bed))


async def test_a_wrong_checksum_fails_every_host_and_leaves_nothing_there(
    ship_bed: Any, small_env: Archive
) -> None:
    parent = env_parent("six")
    wrong = hashlib.sha256(b"some other archive").hexdigest()
    dest = f"{parent}/{wrong[:12]}"
    results = await ship_to_hosts(
        small_env.path, wrong, dest, targets(ship_bed), progress=Progress()
    )
    for r in results:
        assert not r.ok and not r.cached, report(results)
        assert f"the archive's sha256 is {small_env.sha256}, expected {wrong}" in r.error
        assert "fix: the archive changed in transit" in r.error
    for host in ship_bed.hosts:
        assert await listing(ship_bed, host, parent) == []  # no dest, no .kf-tmp-*


async def test_a_connection_lost_half_way_leaves_nothing_half_shipped(
    ship_bed: Any, big_env: Archive
) -> None:
    parent = env_parent("sci")
    dest = f"{parent}/{big_env.digest12}"
    victim = ship_bed.host(2)
    killed: list[int] = []

    def cut(host: str, text: str) -> None:
        if host == victim.ip and text.startswith("sent ") and not killed:
            for pid, cmd in ship_bed.processes(victim).items():
                if cmd.startswith("sshd") and "listener" not in cmd:  # the session's sshd
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

    results = await ship_to_hosts(
        big_env.path, big_env.sha256, dest, targets(ship_bed), progress=cut
    )
    assert killed, "no session sshd found to kill"
    by_host = {r.host: r for r in results}
    lost = by_host[victim.ip]
    assert not lost.ok and 0 < lost.bytes_sent < big_env.size, report(results)
    assert lost.error.startswith(f"the SSH connection to {victim.ip} broke ("), lost.error
    assert "; fix: check that" in lost.error
    assert all(r.ok for h, r in by_host.items() if h != victim.ip), report(results)
    deadline = time.monotonic() + 10  # the receiver sees the end of its stdin, then cleans up
    while await listing(ship_bed, victim, parent) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await listing(ship_bed, victim, parent) == []
    await remove_from_hosts(parent, targets(ship_bed))


async def test_remove_deletes_every_build_and_refuses_a_directory_with_foreign_files(
    ship_bed: Any, small_env: Archive
) -> None:
    parent = env_parent("six")
    dest = f"{parent}/{small_env.digest12}"
    await ship_to_hosts(
        small_env.path, small_env.sha256, dest, targets(ship_bed), progress=Progress()
    )
    keeper = ship_bed.host(1)
    await on_host(ship_bed, keeper, f"echo mine > {parent}/notes.txt")
    results = await remove_from_hosts(parent, targets(ship_bed))
    assert [r.ok for r in results] == [False, True, True], report(results)
    assert (
        "notes.txt" in results[0].error and "not a shipped kernel environment" in results[0].error
    )
    assert sorted(await listing(ship_bed, keeper, parent)) == [small_env.digest12, "notes.txt"]
    for host in ship_bed.hosts[1:]:
        assert await listing(ship_bed, host, parent.rsplit("/", 1)[0]) == []

    await on_host(ship_bed, keeper, f"rm {parent}/notes.txt")
    results = await remove_from_hosts(parent, targets(ship_bed))
    assert [(r.ok, r.cached) for r in results] == [(True, False), (True, True), (True, True)]
    assert await listing(ship_bed, keeper, parent.rsplit("/", 1)[0]) == []


# -- timings -------------------------------------------------------------------------------------


async def test_a_30_mb_environment_ships_to_three_hosts_at_once(
    ship_bed: Any, big_env: Archive
) -> None:
    parent = env_parent("sci")
    dest = f"{parent}/{big_env.digest12}"
    hosts = targets(ship_bed)
    started = time.monotonic()
    first = await ship_to_hosts(big_env.path, big_env.sha256, dest, hosts, progress=Progress())
    shipped = time.monotonic() - started
    started = time.monotonic()
    again = await ship_to_hosts(big_env.path, big_env.sha256, dest, hosts, progress=Progress())
    cached = time.monotonic() - started
    assert all(r.ok and not r.cached for r in first), report(first)
    assert all(r.ok and r.cached and r.bytes_sent == 0 for r in again), report(again)
    out = await on_host(
        ship_bed, ship_bed.host(3), f"{dest}/bin/python -c 'import numpy, sympy; print(numpy.pi)'"
    )
    assert out.startswith("3.14")
    print(
        f"\nship {big_env.size / 1e6:.1f} MB to {len(hosts)} hosts at once: {shipped:.2f} s "
        f"(per host {', '.join(f'{r.seconds:.2f}' for r in first)} s); "
        f"cached: {cached:.2f} s (per host {', '.join(f'{r.seconds:.2f}' for r in again)} s)"
    )
    await remove_from_hosts(parent, hosts)
