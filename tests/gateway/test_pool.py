"""Warm pools: kernels started ahead, handed over once, refilled in the background."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from kernelfleet.client import stdout_of
from kernelfleet.kernels.pool import env_update_code
from tests.conftest import client_for, temp_gateway

USERS = {
    "Authenticator": {
        "user_tokens": {"tok-alice": "alice", "tok-bob": "bob"},
        "admin_users": {"root-admin"},
    }
}


async def _pool_ids(gw, name: str = "python3", size: int = 2) -> set[str]:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(60):
        while len([r for r in gw.pool.members.get(name, []) if r.execution_state == "idle"]) < size:
            await asyncio.sleep(0.1)
    return {r.id for r in gw.pool.members[name]}


@pytest.mark.timeout(180)
async def test_a_start_takes_a_warm_kernel_with_the_requests_env(kernelspec_dir: Path) -> None:
    cfg = {**USERS, "KernelPool": {"pool_sizes": {"python3": 2}}}
    async with temp_gateway(**cfg) as gw:
        pooled = await _pool_ids(gw)
        alice = client_for(gw, token="tok-alice")
        assert await alice.call("GET", "/api/kernels") == []  # pool kernels are nobody's
        admin = client_for(gw)
        assert {k["id"] for k in await admin.call("GET", "/api/kernels")} == pooled
        hostile = "'; import os; os.system('touch /tmp/kf-pwned') #\n$(id)"
        model = await alice.start_kernel(env={"KERNEL_FOO": hostile, "KERNEL_WORKING_DIR": "/"})
        assert model["id"] in pooled
        ws = await alice.connect(model["id"])
        _, iopub = await ws.execute(
            "import os, json; print(json.dumps([os.environ['KERNEL_FOO'],"
            " os.environ['KERNEL_USERNAME'], os.environ['KERNEL_ID'], os.getcwd()]))"
        )
        assert json.loads(stdout_of(iopub)) == [hostile, "alice", model["id"], "/"]
        assert not Path("/tmp/kf-pwned").exists()
        ws.close()
        # the pool refills, and never hands the same kernel out again
        refilled = await _pool_ids(gw)
        assert model["id"] not in refilled and len(refilled) == 2
        bob = client_for(gw, token="tok-bob")
        models = await asyncio.gather(alice.start_kernel(), bob.start_kernel())
        assert models[0]["id"] != models[1]["id"]
        assert {m["id"] for m in models} <= refilled
        assert [k["id"] for k in await bob.call("GET", "/api/kernels")] == [models[1]["id"]]


async def test_requests_a_warm_kernel_cannot_serve_start_fresh(kernelspec_dir: Path) -> None:
    async with temp_gateway(KernelPool={"pool_sizes": {"python3": 1}}) as gw:
        pooled = await _pool_ids(gw, size=1)
        c = client_for(gw)
        wanted = str(uuid.uuid4())
        model = await c.start_kernel(env={"KERNEL_ID": wanted})
        assert model["id"] == wanted and wanted not in pooled
        assert await _pool_ids(gw, size=1) == pooled


def test_env_update_code_carries_values_as_one_string_literal() -> None:
    env = {"KERNEL_X": "a'b\"c\n$(x)", "KERNEL_WORKING_DIR": "/nonexistent"}
    code = env_update_code(env)
    namespace: dict[str, object] = {}
    import os

    before = dict(os.environ)
    try:
        exec(compile(code, "<pool>", "exec"), namespace)
        assert os.environ["KERNEL_X"] == env["KERNEL_X"]
    finally:
        os.environ.clear()
        os.environ.update(before)
