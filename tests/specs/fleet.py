"""A private SSH testbed for the spec / hosts / Spark tests, shared by tests/specs and tests/spark.

It is the project's netns testbed (``tests/testbed.py``) under its own names (bridge
``kfsbr0``, hosts ``kfs-host<i>`` on 10.90.0.0/24, state in /run/kfs-testbed), so it neither
collides with the testbed of ``tests/ssh`` in the same session (whose ``up()`` first removes
everything named like itself) nor with one another engineer runs on the same VM.
One testbed serves every test of the session that asks for it; it is removed when the last user
is done. As in the SSH tests, /tmp is private to each host while the rest of the filesystem is
shared: a kernelspec installed under /tmp on this side is *absent* on the hosts until
``spec sync`` copies it, which is what the sync and "missing spec" tests rely on.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.placement.fleet import reset_fleets
from tests.testbed import Network, Testbed, missing_requirements

KF = [sys.executable, "-m", "kernelfleet"]


#: Its own names, so it runs beside the testbed of tests/ssh; SFTP on for ``spec sync``.
SPECS_TESTBED = Network(
    "kfsbr0", "10.90.0", "kfs-host", "kfsv", Path("/run/kfs-testbed"), sftp=True
)


class _Shared:
    bed: Any = None
    users = 0


@contextlib.contextmanager
def shared_testbed() -> Iterator[Any]:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    if _Shared.bed is None:
        _Shared.bed = Testbed(3, network=SPECS_TESTBED).up()
    _Shared.users += 1
    try:
        yield _Shared.bed
    finally:
        _Shared.users -= 1
        if _Shared.users == 0:
            _Shared.bed.down()
            _Shared.bed = None


def ssh_env(bed: Any) -> dict[str, str]:
    return {
        "KF_SSH_USER": "root",
        "KF_SSH_KEY": str(bed.key),
        "KF_SSH_KNOWN_HOSTS": str(bed.known_hosts),
    }


@contextlib.asynccontextmanager
async def gateway_env_for(
    bed: Any, jupyter_path: Path, tmp_path: Path, monkeypatch: Any
) -> AsyncIterator[None]:
    """What an in-process gateway needs to start kernels from *jupyter_path*'s kernelspecs on
    the testbed's hosts: the SSH settings, private Jupyter dirs, fresh host connections."""
    for name, value in ssh_env(bed).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    await reset_fleets()
    try:
        yield
    finally:
        await reset_fleets()


def cli_env(bed: Any, jupyter_path: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KF_", "JUPYTER_"))}
    env.update(ssh_env(bed))
    env["KF_CONFIG_DIR"] = str(bed.dir / "no-config")  # no admin config file in the tests
    if jupyter_path is not None:
        env["JUPYTER_PATH"] = str(jupyter_path)
    env.update(extra)
    return env


def kf(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the ``kernelfleet`` command as an admin would."""
    return subprocess.run(
        [*KF, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
