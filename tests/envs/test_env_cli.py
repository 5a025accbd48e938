"""``kernelfleet env`` as an admin types it: create with progress, list, show, pythons,
errors as one line, remove refused while the kernel store has a kernel of the environment."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernelfleet.cli.env import positionals_first
from tests.conftest import client_for
from tests.envs.conftest import EnvDirs, env_gateway

pytestmark = pytest.mark.timeout(300)


def kf(dirs: EnvDirs, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KF_", "JUPYTER"))} | {
        "KF_ENV_ROOT": str(dirs.root),
        "KF_ENV_KERNELS_DIR": str(dirs.kernels),
        "KF_ENV_BUILD_DIR": str(dirs.scratch),
        "KF_ENV_SANDBOX": os.environ.get("KF_TEST_ENV_SANDBOX", "required"),
        "KF_DATA_DIR": str(tmp / "data"),
        "JUPYTER_PATH": str(dirs.kernels.parent),
    }
    return subprocess.run(
        [sys.executable, "-m", "kernelfleet", "env", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_env_create_list_show_and_remove_from_the_command_line(
    env_dirs: EnvDirs, tmp_path: Path
) -> None:
    reqs = tmp_path / "reqs.txt"
    reqs.write_text("# more\ntoolz==1.0.*\n")
    done = kf(
        env_dirs,
        tmp_path,
        "create",
        "cli1",
        "six",
        "--python=3.11",
        f"--requirements={reqs}",
        "--owner=ann",
    )
    assert done.returncode == 0, done.stderr
    assert "Created environment cli1: kernelspec cli1" in done.stdout
    progress = done.stderr.splitlines()
    assert any(line.startswith("kernelfleet env: resolving 3 packages") for line in progress)
    assert any("is ready" in line for line in progress), progress
    spec = json.loads((env_dirs.kernels / "cli1" / "kernel.json").read_text())
    python = spec["argv"][0]
    assert python.startswith(str(env_dirs.root / "cli1"))
    out = subprocess.run(
        [python, "-c", "import six, toolz, ipykernel; print('ok')"], capture_output=True, text=True
    )
    assert out.stdout.strip() == "ok", out.stderr
    listing = kf(env_dirs, tmp_path, "list", "--json")
    (row,) = json.loads(listing.stdout)
    assert row["owner"] == "ann" and row["lock"]["toolz"].startswith("1.0")
    shown = json.loads(kf(env_dirs, tmp_path, "show", "cli1").stdout)
    assert shown["kernel_name"] == "cli1"
    assert "3.11" in kf(env_dirs, tmp_path, "pythons").stdout
    again = kf(env_dirs, tmp_path, "create", "cli1", "six")
    assert again.returncode == 1
    assert "An environment named 'cli1' exists" in again.stderr
    # refused while the gateway's kernel store (its data dir's SQLite) has a kernel of it
    asyncio.run(_remove_while_running(env_dirs, tmp_path))
    assert env_dirs.leftovers() == []


async def _remove_while_running(env_dirs: EnvDirs, tmp_path: Path) -> None:
    async with env_gateway(env_dirs, Gateway={"data_dir": str(tmp_path / "data")}) as gw:
        c = client_for(gw)
        model = await c.start_kernel("cli1")
        refused = await asyncio.to_thread(kf, env_dirs, tmp_path, "remove", "cli1")
        assert refused.returncode == 1
        assert f"in use by 1 kernel(s) ({model['id']})" in refused.stderr, refused.stderr
        await c.shutdown_kernel(model["id"])
        done = await asyncio.to_thread(kf, env_dirs, tmp_path, "remove", "cli1")
        assert done.returncode == 0, done.stderr


def test_a_wrong_package_is_one_line_naming_it(env_dirs: EnvDirs, tmp_path: Path) -> None:
    done = kf(env_dirs, tmp_path, "create", "cli2", "kf-no-such-package-zz9")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "Package 'kf-no-such-package-zz9' was not found in the package index" in last
    assert "Traceback" not in done.stderr
    assert env_dirs.leftovers() == []
    bad = kf(env_dirs, tmp_path, "create", "cli3", "--python=2.7", "six")
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith("kernelfleet env create: error: --python '2.7' must be a version")
    old = kf(env_dirs, tmp_path, "create", "cli3", "--python=3.1", "six")
    assert old.returncode == 2 and "Python 3.1 is not installed on the gateway" in old.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["e", "--python=3.11", "--packages", "pandas==2.2.*", "sk"], ["e", "sk"]),
        (["--packages", "a", "e", "b", "--allow-source", "c"], ["e", "b", "c"]),
        (["e", "--", "--odd"], ["e", "--odd"]),
    ],
)
def test_words_after_options_are_the_name_and_packages(
    argv: list[str], expected: list[str]
) -> None:
    got = positionals_first(argv, {"allow-source"})
    assert got[: len(expected)] == expected
