"""Hub tokens through the real gateway (in-process, real kernels), against the stand-in Hub of
fakehub.py: the owner of a kernel is the token's Hub user whatever ``KERNEL_USERNAME`` says,
each Hub user reaches only their own kernels, and a Hub that is down is a 503 JSON error."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from tornado.websocket import websocket_connect

from kernelfleet.client import GatewayClient
from kernelfleet.gateway.app import Gateway
from tests.conftest import client_for, temp_gateway
from tests.hub.fakehub import fake_hub


async def _ids(c: GatewayClient) -> list[str]:
    kernels: list[dict[str, Any]] = await c.call("GET", "/api/kernels")
    return [k["id"] for k in kernels]


async def _ws_status(gw: Gateway, token: str, kid: str) -> int:
    from tornado.httpclient import HTTPClientError, HTTPRequest

    url = gw.url.rstrip("/").replace("http", "ws") + f"/api/kernels/{kid}/channels"
    try:
        conn = await websocket_connect(
            HTTPRequest(url, headers={"Authorization": f"token {token}"})
        )
    except HTTPClientError as exc:
        return exc.code
    conn.close()
    return 101


async def test_a_hub_token_owns_its_kernels_and_a_forged_kernel_username_is_ignored(
    kernelspec_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with fake_hub() as hub:
        hub.add_user("hub-alice", "alice", groups=("ds",))
        hub.add_user("hub-bob", "bob")
        async with temp_gateway(Authenticator={"hub_api_url": hub.api_url}) as gw:
            alice, bob = client_for(gw, token="hub-alice"), client_for(gw, token="hub-bob")
            status, body = await alice.request(
                "POST", "/api/kernels", {"name": "python3", "env": {"KERNEL_USERNAME": "bob"}}
            )
            assert status == 201, body
            kid = body["id"]
            record = gw.registry.records[kid]
            assert record.owner == "alice" and record.env["KERNEL_USERNAME"] == "alice"
            assert "KERNEL_USERNAME 'bob' ignored: jupyterhub verified the caller as 'alice'" in (
                caplog.text
            )
            assert await _ids(alice) == [kid]
            assert await _ids(bob) == []
            assert (await bob.request("GET", f"/api/kernels/{kid}"))[0] == 404
            assert (await bob.request("DELETE", f"/api/kernels/{kid}"))[0] == 404
            assert await _ws_status(gw, "hub-bob", kid) == 404
            assert await _ws_status(gw, "hub-alice", kid) == 101
            # the shared token (an admin) still names owners as before
            status, body = await client_for(gw).request(
                "POST", "/api/kernels", {"name": "python3", "env": {"KERNEL_USERNAME": "bob"}}
            )
            assert status == 201 and gw.registry.records[body["id"]].owner == "bob"
            assert await _ids(bob) == [body["id"]]
            assert hub.calls == 2  # one per token: the rest came from the cache
            assert "hub-alice" not in caplog.text


async def test_a_hub_that_is_down_is_a_503_json_error(kernelspec_dir: Path) -> None:
    async with fake_hub() as hub:
        hub.status = 502
        async with temp_gateway(Authenticator={"hub_api_url": hub.api_url}) as gw:
            status, body = await client_for(gw, token="hub-alice").request(
                "POST", "/api/kernels", {"name": "python3"}
            )
            assert status == 503, body
            assert body["reason"] == "JupyterHub Unavailable"
            assert body["message"].startswith("The gateway cannot verify this token")
            assert gw.registry.records == {}
            # an unknown token is a 401 when the Hub says so
            hub.status = None
            status, body = await client_for(gw, token="hub-nobody").request("GET", "/api/kernels")
            assert status == 401 and "JupyterHub does not accept it" in body["message"]


async def test_hub_groups_widen_allowances_and_a_forged_user_lists_nothing_of_theirs(
    kernelspec_dir: Path,
) -> None:
    profiles = {
        "profiles": {"small": {"memory": "1G"}, "large": {"memory": "4G"}},
        "allowances": {
            "default": {"profiles": ["small"]},
            "groups": {"ds": {"profiles": ["large"]}},
        },
    }
    async with fake_hub() as hub:
        hub.add_user("hub-alice", "alice", groups=("ds",))
        hub.add_user("hub-carol", "carol")
        config = {"Authenticator": {"hub_api_url": hub.api_url}, "KernelProfiles": profiles}
        async with temp_gateway(**config) as gw:
            alice, carol = client_for(gw, token="hub-alice"), client_for(gw, token="hub-carol")

            async def offered(c: GatewayClient, query: str = "") -> list[str]:
                listing = await c.call("GET", f"/api/kernelspecs{query}")
                return sorted(n for n in listing["kernelspecs"] if n.startswith("python3"))

            assert await offered(alice) == ["python3--large", "python3--small"]  # group ds
            assert await offered(carol) == ["python3--small"]
            # jupyter_server sends its KERNEL_USERNAME as ?user=: a forged one changes nothing
            assert await offered(carol, "?user=alice") == ["python3--small"]
            status, _ = await carol.request("GET", "/api/kernelspecs?user=alice/python3--large")
            assert status == 404
            assert (await alice.start_kernel("python3--large"))["name"] == "python3--large"
            status, body = await carol.request("POST", "/api/kernels", {"name": "python3--large"})
            assert status == 403 and body["reason"] == "Profile Not Allowed", body
