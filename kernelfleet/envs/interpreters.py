"""The Python interpreters installed on this machine that environments may be built on.

An environment is built on an interpreter that is already installed, never a downloaded one
(``uv`` is told ``--no-python-downloads``). ``--python`` is a version (``3.11``: the newest
installed 3.11) or an absolute path; either must be one of :func:`candidates`: the admin's
list (``KF_ENV_PYTHONS``) or, without one, the ``python3.X`` executables in the system
directories (``/usr/bin``, ``/usr/local/bin``). Interpreters under a user's home (pyenv) are
not offered by default: the build runs as an unprivileged user, and kernels of other users
must be able to run them too.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from kernelfleet.envs.model import VERSION_RE, EnvError

SYSTEM_DIRS = ("/usr/bin", "/usr/local/bin")
_EXE = re.compile(r"^python3\.\d{1,2}$")
_PROBE = "import json,sys;print(json.dumps([sys.executable,'%d.%d.%d'%sys.version_info[:3]]))"


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str  # "3.11.2"

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def candidates(configured: Sequence[str] = ()) -> list[str]:
    if configured:
        return [p for p in configured if p]
    found: list[str] = []
    for directory in SYSTEM_DIRS:
        for path in sorted(glob.glob(os.path.join(directory, "python3.*"))):
            if _EXE.match(os.path.basename(path)) and os.access(path, os.X_OK):
                real = os.path.realpath(path)
                if real not in {os.path.realpath(p) for p in found}:
                    found.append(path)
    return found


async def probe(path: str) -> Interpreter | None:
    try:
        proc = await asyncio.create_subprocess_exec(
            path,
            "-I",
            "-c",
            _PROBE,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    except (OSError, TimeoutError):
        return None
    if proc.returncode != 0:
        return None
    try:
        _exe, version = json.loads(out)
    except ValueError:
        return None
    return Interpreter(path, str(version))


async def installed(configured: Sequence[str] = ()) -> list[Interpreter]:
    found = await asyncio.gather(*(probe(p) for p in candidates(configured)))
    return [i for i in found if i is not None]


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def choose(wanted: str, available: Sequence[Interpreter]) -> Interpreter:
    """The interpreter *wanted* names (a version prefix or a path) among *available*."""
    wanted = (wanted or "3").strip()
    listing = ", ".join(f"{i.version} ({i.path})" for i in available) or "none"
    if wanted.startswith("/"):
        for interp in available:
            if os.path.realpath(interp.path) == os.path.realpath(wanted):
                return interp
        raise EnvError(
            f"--python {wanted[:200]!r} is not an installed interpreter environments may use "
            f"(installed: {listing}). An admin can list it in KF_ENV_PYTHONS."
        )
    if not VERSION_RE.match(wanted):
        raise EnvError(f"--python {wanted[:40]!r} must be a version like 3.11, or a path.")
    matching = [i for i in available if i.version == wanted or i.version.startswith(wanted + ".")]
    if not matching:
        raise EnvError(
            f"Python {wanted} is not installed on the gateway (installed: {listing}). "
            "Environments use installed interpreters only: pick one of these, or ask an admin "
            "to install it."
        )
    return max(matching, key=lambda i: _key(i.version))
