"""Two gateway processes on one PostgreSQL database serve the same kernels."""

from __future__ import annotations

import asyncio
import datetime as dt
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernelfleet.client import stdout_of
from kernelfleet.kernels.stores import StoredKernel
from kernelfleet.kernels.stores.postgres import PostgresStore
from tests.gatewayproc import GatewayProcess, kernel_pids

pytestmark = pytest.mark.timeout(180)


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server on a private unix socket, for this module only."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL server binaries not installed (make test installs them)")
    if os.geteuid() != 0:
        pytest.skip("starting PostgreSQL as the postgres user needs root")
    root = tempfile.mkdtemp(prefix="kf-pg-")
    os.chmod(root, 0o755)
    data = os.path.join(root, "data")
    shutil.chown(root, "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_pg, initdb, "-D", data, "-A", "trust", "--no-sync"], check=True, capture_output=True
    )
    subprocess.run(
        [
            *as_pg,
            pg_ctl,
            "-D",
            data,
            "-w",
            "-l",
            os.path.join(root, "log"),
            "-o",
            f"-c listen_addresses='' -k {root} -c fsync=off",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@/postgres?host={root}"
    finally:
        subprocess.run([*as_pg, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _two_gateways(
    name: str, url: str, kernelspec_dir: Path, tmp_path: Path, **env: str
) -> tuple[GatewayProcess, GatewayProcess]:
    """Two gateway processes (ids *name*-1, *name*-2) on the store at *url*, one key file."""
    common = {
        "JUPYTER_PATH": str(kernelspec_dir),
        "KF_KERNEL_STORE": url,
        "KF_SECRET_KEY_FILE": str(tmp_path / "shared.key"),
        "KF_CONFIG_DIR": str(tmp_path / "cfg"),
        **env,
    }
    one = GatewayProcess({**common, "KF_DATA_DIR": f"{tmp_path}/1", "KF_GATEWAY_ID": f"{name}-1"})
    two = GatewayProcess({**common, "KF_DATA_DIR": f"{tmp_path}/2", "KF_GATEWAY_ID": f"{name}-2"})
    return one, two


async def test_a_kernel_started_on_one_gateway_is_served_by_another(
    postgres_url: str, kernelspec_dir: Path, tmp_path: Path
) -> None:
    one, two = _two_gateways("served", postgres_url, kernelspec_dir, tmp_path)
    try:
        model = await one.client.start_kernel()
        kid = model["id"]
        ws1 = await one.client.connect(kid)
        await ws1.execute("shared = 'from gateway one'")
        ws1.close()
        listed = [k["id"] for k in await two.client.call("GET", "/api/kernels")]
        assert listed == [kid], two.output()
        ws2 = await two.client.connect(kid)
        _, iopub = await ws2.execute("print(shared)")
        assert stdout_of(iopub) == "from gateway one\n"
        ws2.close()
        await two.client.shutdown_kernel(kid)
        assert not kernel_pids(kid)
        async with asyncio.timeout(15):
            while await one.client.call("GET", "/api/kernels"):
                await asyncio.sleep(0.3)
        assert (await one.client.request("GET", f"/api/kernels/{kid}"))[0] == 404
    finally:
        one.stop()
        two.stop()


async def test_kernel_limits_hold_across_gateways_sharing_a_store(
    postgres_url: str, kernelspec_dir: Path, tmp_path: Path
) -> None:
    one, two = _two_gateways("limits", postgres_url, kernelspec_dir, tmp_path, KF_MAX_KERNELS="2")
    started: list[str] = []
    try:
        # Four starts at once, two per gateway: each gateway alone is within its limit, so
        # only the count over the shared store can refuse two of them.
        body = {"name": "python3", "env": {}}
        answers = await asyncio.gather(
            *(gw.client.request("POST", "/api/kernels", body) for gw in (one, two, one, two))
        )
        started = [model["id"] for status, model in answers if status == 201]
        refused = [model for status, model in answers if status == 403]
        assert len(started) == 2 and len(refused) == 2, answers
        for model in refused:
            assert model["reason"] == "Kernel Limit Reached"
            assert "maximum of 2 kernels" in model["message"]
        listed = {k["id"] for gw in (one, two) for k in await gw.client.call("GET", "/api/kernels")}
        assert listed == set(started)  # nothing half-started is left from the refused ones

        # a slot freed on one gateway is free on the other
        await one.client.shutdown_kernel(started.pop(0))
        started.append((await two.client.start_kernel())["id"])
        status, model = await one.client.request("POST", "/api/kernels", body)
        assert status == 403, model
    finally:
        for kid in started:
            await one.client.request("DELETE", f"/api/kernels/{kid}")
        one.stop()
        two.stop()
    for kid in started:
        assert not kernel_pids(kid)


async def test_the_shared_store_counts_per_user_and_ignores_kernels_on_their_way_out(
    postgres_url: str,
) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    now = dt.datetime.now(dt.UTC)

    def row(kid: str, owner: str, state: str = "running") -> StoredKernel:
        return StoredKernel(kid, "python3", owner, state, "kernelfleet-local", now, now)

    try:
        for kid in ("u-a1", "u-a2", "u-b1", "u-gone"):
            await store.delete(kid)
        assert await store.reserve(row("u-a1", "alice"), 0, 1) is None
        assert await store.reserve(row("u-a2", "alice"), 0, 1) == "user"
        assert await store.get("u-a2") is None  # a refused row is not written
        assert await store.reserve(row("u-b1", "bob"), 0, 1) is None
        # rewriting a kernel's own row does not count it twice
        assert await store.reserve(row("u-a1", "alice"), 2, 1) is None
        assert await store.reserve(row("u-a2", "alice", "starting"), 2, 0) == "total"
        # a kernel being stopped no longer holds a slot
        await store.put(row("u-b1", "bob", "stopping"))
        assert await store.reserve(row("u-a2", "alice", "starting"), 2, 0) is None
    finally:
        for kid in ("u-a1", "u-a2", "u-b1"):
            await store.delete(kid)
        await store.close()
