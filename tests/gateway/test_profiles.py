"""Kernel profiles through the real gateway with local kernels: what each user is offered,
what a start gets, what an allowance refuses, and a profile's idle timeout and lifetime."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from traitlets.config import Config
from traitlets.config.loader import JSONFileConfigLoader

from kernelfleet.launchers import cgroups
from tests.conftest import client_for, make_config, temp_gateway

PROFILES: dict[str, Any] = {
    "KernelProfiles": {
        "profiles": {
            "small": {"memory": "1G", "cpus": 1},
            "large": {"memory": "4G", "cpus": 2, "display_name": "large (4 GiB)"},
        },
        "allowances": {
            "default": {"profiles": ["small"], "max_kernels": 2, "max_memory": "2G"},
            "users": {
                "bob": {"profiles": ["small", "large"], "max_kernels": 5, "max_memory": "6G"}
            },
        },
    },
    "Authenticator": {"user_tokens": {"tok-alice": "alice", "tok-bob": "bob"}},
}


async def test_each_user_is_offered_only_the_pairs_allowed_to_them(kernelspec_dir: Path) -> None:
    async with temp_gateway(**PROFILES) as gw:
        alice, bob = client_for(gw, token="tok-alice"), client_for(gw, token="tok-bob")
        mine = await alice.call("GET", "/api/kernelspecs")
        python = sorted(n for n in mine["kernelspecs"] if n.startswith("python3"))
        assert python == ["python3--small"]  # no bare python3: each pair is a kernelspec
        assert mine["default"] == "python3--small"
        spec = mine["kernelspecs"]["python3--small"]["spec"]
        assert spec["display_name"] == "Python 3 — small (1 GiB, 1 CPU)"
        theirs = await bob.call("GET", "/api/kernelspecs")
        python = sorted(n for n in theirs["kernelspecs"] if n.startswith("python3"))
        assert python == ["python3--large", "python3--small"]
        assert (await bob.call("GET", "/api/kernelspecs/python3--large"))[
            "name"
        ] == "python3--large"
        status, _ = await alice.request("GET", "/api/kernelspecs/python3--large")
        assert status == 404
        # the base kernelspec still answers (its resources are the pairs' resources)
        assert (await alice.call("GET", "/api/kernelspecs/python3"))["name"] == "python3"


async def test_a_start_runs_with_its_profile_and_an_allowance_refuses_with_its_reason(
    kernelspec_dir: Path,
) -> None:
    async with temp_gateway(**PROFILES) as gw:
        alice, bob = client_for(gw, token="tok-alice"), client_for(gw, token="tok-bob")
        kid = (await bob.start_kernel("python3--large"))["id"]
        record = gw.registry.records[kid]
        assert (record.profile, record.env["KERNEL_MEMORY"], record.env["KERNEL_CPUS"]) == (
            "large",
            "4096Mi",
            "2",
        )
        # a client's own values never reach the kernel: the profile says what it gets
        kid2 = (
            await bob.start_kernel(
                "python3", env={"KERNEL_PROFILE": "small", "KERNEL_MEMORY": "900Gi"}
            )
        )["id"]
        assert gw.registry.records[kid2].env["KERNEL_MEMORY"] == "1024Mi"

        status, body = await bob.request("POST", "/api/kernels", {"name": "python3--large"})
        assert status == 403 and body["reason"] == "Allowance Exceeded", body
        assert body["message"].startswith("bob's kernels would use 9 GiB of memory, the most")

        status, body = await alice.request("POST", "/api/kernels", {"name": "python3--large"})
        assert status == 403 and body["reason"] == "Profile Not Allowed", body
        assert body["message"] == "Profile 'large' is not allowed for alice; allowed: small."
        status, body = await alice.request(
            "POST", "/api/kernels", {"name": "python3", "env": {"KERNEL_PROFILE": "huge"}}
        )
        assert status == 400 and "the profiles are: large, small" in body["message"]

        await alice.start_kernel()  # the first allowed profile: small
        await alice.start_kernel()
        status, body = await alice.request("POST", "/api/kernels", {"name": "python3"})
        assert status == 403 and body["message"].startswith(
            "alice has 2 kernel(s), the most allowed is 2"
        ), body
        assert {r.profile for r in gw.registry.records.values() if r.owner == "alice"} == {"small"}


async def test_a_profiles_idle_timeout_and_lifetime_cull_its_kernels(kernelspec_dir: Path) -> None:
    config = {
        "KernelProfiles": {
            "profiles": {"quick": {"idle_timeout": 1}, "brief": {"max_lifetime": 2}}
        },
        "Culler": {"cull_interval": 1},
    }
    async with temp_gateway(**config) as gw:
        c = client_for(gw)
        quick = (await c.start_kernel("python3--quick"))["id"]
        brief = (await c.start_kernel("python3--brief"))["id"]
        ws = await c.connect(brief)  # connected and busy: a lifetime ends it all the same
        await ws.send(ws.execute_request("import time; time.sleep(60)"))
        async with asyncio.timeout(30):
            while quick in gw.registry.records or brief in gw.registry.records:
                await asyncio.sleep(0.1)
        ws.close()
        culls: dict[str, str] = {}
        async with asyncio.timeout(10):  # the audit log is written by a thread
            while len(culls) < 2:
                lines = [json.loads(x) for x in Path(gw.audit.path).read_text().splitlines()]
                culls = {x["kernel_id"]: x["cause"] for x in lines if x["action"] == "cull"}
                await asyncio.sleep(0.05)
        assert culls == {quick: "idle", brief: "lifetime"}


async def test_a_reload_changes_a_profiles_memory_for_the_next_start(
    kernelspec_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "kernelfleet_config.json"

    def write(memory: str) -> None:
        profiles = json.loads(json.dumps(PROFILES["KernelProfiles"]))
        profiles["profiles"]["small"]["memory"] = memory
        path.write_text(json.dumps({"KernelProfiles": profiles}))

    def load() -> Config:
        config = make_config(Authenticator=PROFILES["Authenticator"])
        config.merge(JSONFileConfigLoader(path.name, str(tmp_path)).load_config())
        return config

    write("1G")
    async with temp_gateway(**PROFILES) as gw:
        gw.enable_reload(load, [str(path)])
        alice = client_for(gw, token="tok-alice")
        first = (await alice.start_kernel())["id"]
        ws = await alice.connect(first)
        write("1536M")  # alice's default max_memory is 2G: a second small kernel no longer fits
        status, body = await alice.request("POST", "/api/kernels", {"name": "python3"})
        assert status == 403 and "would use 3 GiB of memory" in body["message"], body
        assert gw.registry.records[first].env["KERNEL_MEMORY"] == "1024Mi"  # unchanged
        reply, _ = await ws.execute("1 + 1")
        assert reply["status"] == "ok"
        ws.close()


async def test_a_local_kernel_past_its_profiles_memory_is_killed_and_reported(
    kernelspec_dir: Path,
) -> None:
    config = {
        "KernelProfiles": {"profiles": {"tiny": {"memory": "200M"}}},
        "KernelMonitor": {"restart_dead_kernels": False},
    }
    async with temp_gateway(**config) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel("python3--tiny"))["id"]
        ((directory, values),) = cgroups.plan(kid, 200 * 1024**2, None)  # v1 or v2
        cg = Path(directory)
        assert int((cg / next(iter(values))).read_text()) == 200 * 1024**2
        ws = await c.connect(kid)
        await ws.send(
            ws.execute_request(
                "b = bytearray(600 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"
            )
        )
        async with asyncio.timeout(60):
            while (model := await c.call("GET", f"/api/kernels/{kid}"))[
                "execution_state"
            ] != "dead":
                await asyncio.sleep(0.1)
        assert "it ran out of memory: its profile 'tiny' allows 200 MiB" in model["reason"]
        ws.close()
        await c.shutdown_kernel(kid)
        assert not cg.exists()
