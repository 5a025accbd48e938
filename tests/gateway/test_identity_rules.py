"""Who may name an identity (kernelfleet/gateway/auth.py), through the real gateway.

Before the rule, with ``shared_token_is_admin=false`` and ``admin_users={"ops"}``, HTTP Basic
``ops:<shared token>`` listed every user's kernels and started kernels for others, ``alice:<shared
token>`` acted as alice, and any Basic user name (``$(touch x)``) became a kernel owner.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from kernelfleet.client import GatewayClient
from kernelfleet.gateway.app import Gateway
from tests.conftest import TOKEN, client_for, temp_gateway

HOSTILE_NAME = "$(touch x)"

ORDINARY_SHARED_TOKEN = {
    "Authenticator": {
        "shared_token_is_admin": False,
        "admin_users": {"ops"},
        "user_tokens": {"tok-alice": "alice", "tok-ops": "ops"},
    }
}


def basic(gw: Gateway, user: str, password: str = TOKEN, **headers: str) -> GatewayClient:
    """A client sending HTTP Basic, as jupyter_server does with JUPYTER_GATEWAY_HTTP_USER/_PWD."""
    cred = base64.b64encode(f"{user}:{password}".encode()).decode()
    return GatewayClient(gw.url, headers={"Authorization": f"Basic {cred}", **headers})


async def _ids(c: GatewayClient) -> list[str]:
    kernels: list[dict[str, Any]] = await c.call("GET", "/api/kernels")
    return [k["id"] for k in kernels]


async def test_an_ordinary_shared_token_names_no_one_and_is_never_admin(
    kernelspec_dir: Path,
) -> None:
    async with temp_gateway(**ORDINARY_SHARED_TOKEN) as gw:
        alice = client_for(gw, token="tok-alice")
        kid = (await alice.start_kernel())["id"]
        for name in ("ops", "alice"):
            as_name = basic(gw, name)
            assert await _ids(as_name) == [], f"Basic {name}:<shared token> saw alice's kernel"
            assert (await as_name.request("GET", f"/api/kernels/{kid}"))[0] == 404
            status, body = await as_name.request(
                "POST", "/api/kernels", {"name": "python3", "env": {"KERNEL_USERNAME": "alice"}}
            )
            assert status == 403 and body["reason"] == "Identity Mismatch", body
        # ops authenticated as itself (its own token) is an admin
        assert await _ids(client_for(gw, token="tok-ops")) == [kid]
        assert list(gw.registry.records) == [kid]


async def test_shared_token_user_listed_in_admin_users_is_still_no_admin(
    kernelspec_dir: Path,
) -> None:
    cfg = {**ORDINARY_SHARED_TOKEN["Authenticator"], "shared_token_user": "ops"}
    async with temp_gateway(Authenticator=cfg) as gw:
        kid = (await client_for(gw, token="tok-alice").start_kernel())["id"]
        assert await _ids(client_for(gw)) == []
        assert await _ids(basic(gw, "ops")) == []
        assert await _ids(client_for(gw, token="tok-ops")) == [kid]  # ops, by its own token


async def test_a_hostile_basic_user_name_is_a_400(kernelspec_dir: Path) -> None:
    for cfg in (ORDINARY_SHARED_TOKEN, {}):
        async with temp_gateway(**cfg) as gw:
            for password in (TOKEN, "tok-alice") if cfg else (TOKEN,):
                status, body = await basic(gw, HOSTILE_NAME, password).request(
                    "POST", "/api/kernels", {"name": "python3"}
                )
                assert status == 400, body
                assert body["reason"] == "Bad Request"
                assert "Basic user name" in body["message"] and len(body["message"]) < 140
            assert gw.registry.records == {}


async def test_an_admin_shared_token_names_users_through_basic_and_kernel_username(
    kernelspec_dir: Path,
) -> None:
    """jupyter_server with JUPYTER_GATEWAY_HTTP_USER/_PWD and the (admin) shared token."""
    async with temp_gateway(Authenticator={"user_tokens": {"tok-alice": "alice"}}) as gw:
        server = basic(gw, "jovyan")
        mine = (await server.start_kernel())["id"]
        theirs = (await server.start_kernel(env={"KERNEL_USERNAME": "alice"}))["id"]
        assert gw.registry.records[mine].owner == "jovyan"
        assert gw.registry.records[theirs].owner == "alice"
        assert sorted(await _ids(server)) == sorted([mine, theirs])  # still an admin
        assert await _ids(client_for(gw, token="tok-alice")) == [theirs]


async def test_a_per_user_token_is_its_user_whatever_the_basic_name(kernelspec_dir: Path) -> None:
    async with temp_gateway(**ORDINARY_SHARED_TOKEN) as gw:
        ops_kernel = (await client_for(gw, token="tok-ops").start_kernel())["id"]
        as_alice = basic(gw, "ops", "tok-alice")
        assert await _ids(as_alice) == []
        kid = (await as_alice.start_kernel())["id"]
        assert gw.registry.records[kid].owner == "alice"
        assert gw.registry.records[ops_kernel].owner == "ops"


async def test_the_trusted_user_header_must_carry_a_valid_name(kernelspec_dir: Path) -> None:
    cfg = {
        "Authenticator": {**ORDINARY_SHARED_TOKEN["Authenticator"], "trusted_user_header": "X-User"}
    }
    async with temp_gateway(**cfg) as gw:
        proxy = GatewayClient(gw.url, token=TOKEN, headers={"X-User": HOSTILE_NAME})
        status, body = await proxy.request("GET", "/api/kernels")
        assert status == 400 and "X-User" in body["message"], body
        kid = (await client_for(gw, token="tok-alice").start_kernel())["id"]
        as_ops = GatewayClient(gw.url, headers={"X-User": "ops", "Authorization": f"token {TOKEN}"})
        assert await _ids(as_ops) == [kid]  # ops, named by the proxy, is an admin


async def test_a_non_ascii_basic_header_is_a_401_not_a_500(client: GatewayClient) -> None:
    garbled = GatewayClient(client.url, headers={"Authorization": "Basic \x80\xff"})
    status, body = await garbled.request("GET", "/api/kernels")
    assert status == 401 and body["reason"] == "Unauthorized", body
