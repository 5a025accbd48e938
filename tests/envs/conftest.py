"""Fixtures of the kernel environment tests: a gateway with the environments API, private
directories for environments and kernelspecs, and a job waiter."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.client import GatewayClient
from kernelfleet.envs import api as envs_api
from kernelfleet.gateway.app import Gateway
from tests.conftest import TOKEN, make_config

#: Small real packages from PyPI, with wheels for every Python.
PACKAGES = ["six", "toolz==1.0.*"]
ADMIN_TOKEN = TOKEN
USER_TOKEN = "user-token-ann-1234567890abcdef"
BOB_TOKEN = "user-token-bob-1234567890abcdef"


@dataclass
class EnvDirs:
    root: Path  # KF_ENV_ROOT
    kernels: Path  # the environments' kernelspecs
    scratch: Path  # KF_ENV_BUILD_DIR: shared by the tests (uv's cache stays warm)

    def leftovers(self) -> list[str]:
        """Everything an environment left on disk but the empty bookkeeping directories."""
        found = []
        for base, _dirs, files in os.walk(self.root):
            rel = os.path.relpath(base, self.root)
            found += [os.path.join(rel, f) for f in files if f != ".lock"]
        found += [f"scratch/{p.name}" for p in self.scratch.glob("b-*")]
        if self.kernels.is_dir():
            found += [f"kernels/{p.name}" for p in self.kernels.iterdir()]
        return sorted(found)


@pytest.fixture
def env_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EnvDirs]:
    """Private directories of one test; its scratch directory (where the build user must
    reach) is its own too, but links to uv caches shared by every test, kept warm."""
    base = Path(os.environ.get("KF_TEST_CACHE", "/opt/kernelfleet-test")) / "env-builds"
    scratch = base / f"t-{secrets.token_hex(4)}"
    scratch.mkdir(parents=True, mode=0o711)
    for uid in {0, pwd.getpwnam("nobody").pw_uid}:
        shared = base / f"uv-cache-{uid}"
        if not shared.exists():
            shared.mkdir(mode=0o700)
            os.chown(shared, uid, uid if uid == 0 else pwd.getpwnam("nobody").pw_gid)
        (scratch / f"uv-cache-{uid}").symlink_to(shared)
    dirs = EnvDirs(tmp_path / "envs", tmp_path / "share" / "jupyter" / "kernels", scratch)
    dirs.kernels.mkdir(parents=True)
    monkeypatch.setenv("JUPYTER_PATH", str(dirs.kernels.parent))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    yield dirs
    shutil.rmtree(scratch, ignore_errors=True)


def env_config(dirs: EnvDirs, **settings: Any) -> dict[str, Any]:
    return {
        "root": str(dirs.root),
        "kernels_dir": str(dirs.kernels),
        "build_dir": str(dirs.scratch),
        "sandbox": os.environ.get("KF_TEST_ENV_SANDBOX", "required"),
        # seconds per build; the SSH end-to-end test builds as users get it (compiled)
        "compile_bytecode": False,
        **settings,
    }


@contextlib.asynccontextmanager
async def env_gateway(
    dirs: EnvDirs, *, env: dict[str, Any] | None = None, **sections: dict[str, Any]
) -> AsyncIterator[Gateway]:
    """A whole gateway serving the environments API (as ``kernelfleet serve`` does)."""
    sections.setdefault("Authenticator", {})
    sections["Authenticator"].setdefault("user_tokens", {USER_TOKEN: "ann", BOB_TOKEN: "bob"})
    gw = Gateway(config=make_config(EnvSettings=env_config(dirs, **(env or {})), **sections))
    envs_api.install(gw)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop(mode="shutdown")


async def finished(client: GatewayClient, job: str, limit: float = 300) -> dict[str, Any]:
    """The job's model once it is done; every line it emitted."""
    lines: list[dict[str, Any]] = []
    after = 0
    async with asyncio.timeout(limit):
        while True:
            model = await client.call("GET", f"/api/envs/jobs/{job}?after={after}")
            lines += model["lines"]
            after = model["next"]
            if model["done"]:
                model["lines"] = lines
                return dict(model)
