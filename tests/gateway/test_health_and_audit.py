"""Liveness/readiness probes and the audit log, through the real gateway with real kernels."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from kernelfleet import __version__
from kernelfleet.gateway.app import Gateway
from tests.conftest import client_for, temp_gateway

USERS = {"Authenticator": {"user_tokens": {"tok-alice": "alice", "tok-bob": "bob"}}}


async def fetch(gw: Gateway, path: str, **kwargs: Any) -> HTTPResponse:
    return await AsyncHTTPClient().fetch(gw.url + path, raise_error=False, **kwargs)


def audit_lines(gw: Gateway) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(gw.audit.path).read_text().splitlines()]


async def until_logged(gw: Gateway, count: int) -> list[dict[str, Any]]:
    """The audit log once it has *count* lines (a thread writes it)."""
    async with asyncio.timeout(10):
        while len(lines := audit_lines(gw)) < count:
            await asyncio.sleep(0.02)
    return lines


async def test_the_probes_answer_without_credentials_and_reveal_nothing(
    kernelspec_dir: Path,
) -> None:
    async with temp_gateway(Gateway={"base_url": "/gw/"}) as gw:
        for path in ("healthz", "readyz"):
            resp = await fetch(gw, path)
            assert resp.code == 200, (path, resp.body)
            assert json.loads(resp.body) == {"status": "ok"}
            assert "Server" not in resp.headers
            assert __version__.encode() not in resp.body
            head = await fetch(gw, path, method="HEAD")
            assert head.code == 200
        # the rest of the API still wants a token
        assert (await fetch(gw, "api/kernels")).code == 401


async def test_readiness_fails_as_soon_as_the_gateway_begins_to_stop(
    kernelspec_dir: Path,
) -> None:
    async with temp_gateway() as gw:
        kid = (await client_for(gw).start_kernel())["id"]
        assert (await fetch(gw, "readyz")).code == 200
        assert gw.services is not None
        gw.registry.closing = True  # what stop() sets before it shuts kernels down
        resp = await fetch(gw, "readyz")
        assert resp.code == 503 and json.loads(resp.body) == {"status": "unavailable"}
        assert (await fetch(gw, "healthz")).code == 200  # alive all the same
        gw.registry.closing = False
        assert kid in gw.registry.records


async def test_the_audit_log_records_a_start_a_refusal_and_a_shutdown_with_their_actors(
    kernelspec_dir: Path,
) -> None:
    async with temp_gateway(KernelRegistry={"max_kernels_per_user": 1}, **USERS) as gw:
        alice, bob = client_for(gw, token="tok-alice"), client_for(gw, token="tok-bob")
        kid = (await alice.start_kernel())["id"]
        status, body = await alice.request("POST", "/api/kernels", {"name": "python3"})
        assert status == 403, body
        assert (await bob.request("DELETE", f"/api/kernels/{kid}"))[0] == 404
        await alice.call("DELETE", f"/api/kernels/{kid}", expect=204)
        start, refusal, foreign, stop = await until_logged(gw, 4)

    assert start["action"] == "start" and start["outcome"] == "ok"
    assert (start["actor"], start["owner"], start["kernel_id"]) == ("alice", "alice", kid)
    assert (start["kernelspec"], start["backend"], start["source"]) == ("python3", "local", "api")
    assert start["seconds"] > 0 and start["time"].endswith("+00:00")

    assert (refusal["action"], refusal["outcome"], refusal["cause"]) == (
        "start",
        "refused",
        "limit",
    )
    assert refusal["actor"] == "alice" and "kernel_id" not in refusal
    assert refusal["message"] == body["message"]

    # bob may not even learn that the kernel exists: the line says what he tried, no more
    assert (foreign["actor"], foreign["outcome"], foreign["cause"]) == (
        "bob",
        "refused",
        "not_found",
    )
    assert "owner" not in foreign and "kernelspec" not in foreign

    assert (stop["action"], stop["outcome"], stop["actor"], stop["owner"]) == (
        "shutdown",
        "ok",
        "alice",
        "alice",
    )


async def test_a_hostile_kernelspec_name_stays_inside_its_audit_line(
    kernelspec_dir: Path,
) -> None:
    hostile = 'x\n{"action": "forged"}\u2028<script>'
    async with temp_gateway() as gw:
        status, _ = await client_for(gw).request("POST", "/api/kernels", {"name": hostile})
        assert status in (400, 404)
        (line,) = await until_logged(gw, 1)
        assert line["kernelspec"] == hostile and line["outcome"] == "refused"
        assert len(Path(gw.audit.path).read_bytes().splitlines()) == 1


async def test_the_audit_log_is_private_and_can_be_turned_off(kernelspec_dir: Path) -> None:
    async with temp_gateway() as gw:
        await client_for(gw).start_kernel()
        await until_logged(gw, 1)
        assert Path(gw.audit.path).stat().st_mode & 0o077 == 0
    async with temp_gateway(AuditLog={"audit_log": "off"}) as gw:
        await client_for(gw).start_kernel()
        assert gw.audit.path == "off" and not Path("off").exists()


async def test_culls_deaths_and_restarts_reach_the_audit_log_as_the_gateways_own(
    kernelspec_dir: Path,
) -> None:
    cull = {"Culler": {"cull_idle_timeout": 1, "cull_interval": 1}}
    async with temp_gateway(**cull) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel())["id"]
        await c.call("POST", f"/api/kernels/{kid}/restart")
        async with asyncio.timeout(30):
            while kid in gw.registry.records:
                await asyncio.sleep(0.1)
        lines = await until_logged(gw, 3)
    actions = [(line["action"], line.get("actor", ""), line["source"]) for line in lines]
    assert actions[:3] == [
        ("start", "gateway", "api"),
        ("restart", "gateway", "api"),
        ("cull", "kernelfleet-culler", "gateway"),
    ], actions
