"""Kernel environments through the gateway's API, built for real from PyPI, run as kernels on
the gateway's machine: what a user sees when it works, when a package is wrong, at a quota,
while a kernel uses one, and on a rebuild."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernelfleet.client import GatewayClient, stdout_of
from tests.conftest import client_for
from tests.envs.conftest import (
    BOB_TOKEN,
    PACKAGES,
    USER_TOKEN,
    EnvDirs,
    env_gateway,
    finished,
)

pytestmark = pytest.mark.timeout(300)


async def create(c: GatewayClient, name: str, packages: list[str], **more: object) -> dict:
    status, body = await c.request(
        "POST", "/api/envs", {"name": name, "packages": packages, "python": "3.11", **more}
    )
    assert status == 202, body
    return await finished(c, body["job"])


async def test_an_environment_of_two_packages_runs_a_kernel_that_imports_them(
    env_dirs: EnvDirs,
) -> None:
    async with env_gateway(env_dirs) as gw:
        c = client_for(gw)
        job = await create(
            c, "two", PACKAGES, spec={"authorized_users": ["gateway"], "authorized_groups": ["ds"]}
        )
        assert job["ok"], (job["error"], job["lines"][-5:])
        texts = [line["text"] for line in job["lines"]]
        assert any(t.startswith("resolving 3 packages") for t in texts), texts
        assert any("is ready" in t for t in texts), texts
        listing = await c.call("GET", "/api/envs")
        (env,) = listing["envs"]
        assert env["state"] == "ready" and env["owner"] == "gateway"
        assert {"six", "toolz", "ipykernel"} <= set(env["lock"])
        spec = (await c.call("GET", "/api/kernelspecs"))["kernelspecs"]["two"]["spec"]
        assert spec["metadata"]["kernelfleet"]["env"] == "two"
        assert spec["metadata"]["kernel_provisioner"]["config"]["authorized_groups"] == ["ds"]
        model = await c.start_kernel("two")
        ws = await c.connect(model["id"])
        _, iopub = await ws.execute(
            "import six, toolz, sys, json; print(json.dumps([sys.prefix, toolz.__version__]))"
        )
        prefix, version = json.loads(stdout_of(iopub))
        assert prefix.startswith(str(env_dirs.root / "two"))
        assert version.startswith("1.0")
        ws.close()
        # in use: not removable; once the kernel is shut down, removed with its kernelspec
        status, body = await c.request("DELETE", "/api/envs/two")
        assert status == 409, body
        assert body["message"].startswith("Environment 'two' is in use by 1 kernel(s)")
        assert "Shut them down first" in body["message"]
        await c.shutdown_kernel(model["id"])
        status, _ = await c.request("DELETE", "/api/envs/two")
        assert status == 204
        assert "two" not in (await c.call("GET", "/api/kernelspecs"))["kernelspecs"]
    assert env_dirs.leftovers() == []


@pytest.mark.parametrize(
    ("package", "says"),
    [
        ("kf-no-such-package-zz9", "Package 'kf-no-such-package-zz9' was not found in the package"),
        ("six==0.0.999", "Package 'six==0.0.999' does not resolve: no version matches"),
    ],
)
async def test_a_wrong_package_fails_naming_it_and_leaves_nothing(
    env_dirs: EnvDirs, package: str, says: str
) -> None:
    async with env_gateway(env_dirs) as gw:
        c = client_for(gw)
        job = await create(c, "wrong", ["toolz", package])
        assert not job["ok"]
        assert job["error"].startswith(says), job["error"]
        assert (await c.call("GET", "/api/envs"))["envs"] == []
        assert "wrong" not in (await c.call("GET", "/api/kernelspecs"))["kernelspecs"]
    assert env_dirs.leftovers() == []


async def test_bad_requests_are_refused_before_any_build(env_dirs: EnvDirs) -> None:
    async with env_gateway(env_dirs) as gw:
        c = client_for(gw)
        for body, status, says in [
            ({"name": "Bad Name", "packages": ["six"]}, 400, "is not valid"),
            ({"name": "x", "packages": ["six @ https://evil.example/six.whl"]}, 400, "URL"),
            ({"name": "x", "packages": ["six"], "python": "3.99"}, 400, "Python 3.99 is not"),
            ({"name": "x", "packages": ["six"], "kind": "nomad"}, 400, "'kind' must be one of"),
            ({"name": "x", "packages": ["six"], "spec": {"nope": 1}}, 400, "'spec.nope'"),
            ({"name": "x", "packages": "six", "allow_source": True}, 403, "Source builds are off"),
        ]:
            got, answer = await c.request("POST", "/api/envs", body)
            assert got == status, (body, answer)
            assert says in answer["message"], answer
    assert env_dirs.leftovers() == []


async def test_quotas_refuse_the_next_environment_naming_the_limit(env_dirs: EnvDirs) -> None:
    settings = {"creators": ["ann"], "max_per_user": 1, "max_disk_mb": 1000.0}
    async with env_gateway(env_dirs, env=settings) as gw:
        ann = client_for(gw, token=USER_TOKEN)
        bob = client_for(gw, token=BOB_TOKEN)
        status, body = await bob.request("POST", "/api/envs", {"name": "b", "packages": ["six"]})
        assert status == 403 and "may not create kernel environments" in body["message"]
        assert (await create(ann, "a1", ["six"]))["ok"]
        status, body = await ann.request("POST", "/api/envs", {"name": "a2", "packages": ["six"]})
        assert status == 429 or status == 403, body
        assert "max_envs_per_user = 1" in body["message"]
        # ann sees her own environment and usage; the admin sees everyone's
        mine = await ann.call("GET", "/api/envs")
        assert [e["name"] for e in mine["envs"]] == ["a1"] and list(mine["usage"]) == ["ann"]
        assert mine["usage"]["ann"]["envs"] == 1 and mine["usage"]["ann"]["bytes"] > 1_000_000
    # the disk limit: known only once built, then everything is removed again
    async with env_gateway(env_dirs, env={"max_disk_mb": 1.0}) as gw:
        c = client_for(gw)
        job = await create(c, "big", ["six"])
        assert not job["ok"] and "max_env_disk_mb_per_user = 1 MB" in job["error"], job
        assert [e["name"] for e in (await c.call("GET", "/api/envs"))["envs"]] == ["a1"]


async def test_a_rebuild_from_the_lock_gives_the_same_freeze(env_dirs: EnvDirs) -> None:
    async with env_gateway(env_dirs) as gw:
        c = client_for(gw)
        assert (await create(c, "again", ["six", "toolz"]))["ok"]
        before = await c.call("GET", "/api/envs/again")
        freeze = freeze_of(env_dirs.root / "again" / before["sha256"][:12])
        status, body = await c.request("POST", "/api/envs/again/rebuild")
        assert status == 202, body
        job = await finished(c, body["job"])
        assert job["ok"], (job["error"], job["lines"][-5:])
        after = await c.call("GET", "/api/envs/again")
        assert after["lock"] == before["lock"]
        assert after["sha256"] != before["sha256"]  # a new build (new files) ...
        assert freeze_of(env_dirs.root / "again" / after["sha256"][:12]) == freeze  # ... same
        assert not (env_dirs.root / "again" / before["sha256"][:12]).exists()
        model = await c.start_kernel("again")
        ws = await c.connect(model["id"])
        _, iopub = await ws.execute("import sys; print(sys.prefix)")
        assert after["sha256"][:12] in stdout_of(iopub)
        ws.close()
        await c.shutdown_kernel(model["id"])


def freeze_of(venv: Path) -> list[str]:
    site = next(venv.glob("lib/python3.*/site-packages"))
    return sorted(p.name for p in site.glob("*.dist-info"))
