"""Issue 14, item 5, with a real JupyterHub (pip) and two users, alice and bob, each with a
JupyterLab single-user server pointed at the in-process gateway (``JUPYTER_GATEWAY_URL``) with
their own Hub API token (``JUPYTER_GATEWAY_AUTH_TOKEN`` from the spawner's ``api_token``). Each
server's environment forges the other user's ``KERNEL_USERNAME``.

Shown: kernels started through each user's server (its REST API through the Hub's proxy, with
the user's token) belong to that user, whatever ``KERNEL_USERNAME`` says, and carry the Hub
user's name in the kernel's environment; each user lists and reaches (REST and websocket) only
their own kernels, through their server and at the gateway; a direct gateway request with a
user's Hub token and a forged ``KERNEL_USERNAME`` is the token's user's; the Hub's groups
arrive with the identity.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from kernelfleet.client import GatewayClient
from tests.conftest import message_header, temp_gateway
from tests.hub.jupyterhub import JupyterHub, marked_pids, proxy_command
from tests.testbed import skip_or_fail

pytest.importorskip("jupyterhub")

USERS = {"alice": "bob", "bob": "alice"}  # user -> the KERNEL_USERNAME their server forges
GROUPS = {"data-science": ["alice"]}


async def _json(hub: JupyterHub, method: str, url: str, token: str, body: Any = None) -> Any:
    response = await hub.request(method, url, token, body)
    assert response.code < 300, f"{method} {url}: {response.code} {response.body[:300]!r}"
    return json.loads(response.body) if response.body else None


async def _ws(url: str, token: str) -> WebSocketClientConnection:
    return await websocket_connect(
        HTTPRequest(url, headers={"Authorization": f"token {token}"}, request_timeout=30)
    )


async def _run(conn: WebSocketClientConnection, code: str) -> str:
    """Execute *code* on the kernel behind *conn*; its stdout."""
    header = message_header("execute_request", session=uuid.uuid4().hex)
    await conn.write_message(
        json.dumps(
            {
                "header": header,
                "parent_header": {},
                "metadata": {},
                "content": {"code": code, "silent": False},
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    out = []
    while True:
        raw = await conn.read_message()
        assert raw is not None, "the websocket closed"
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != header["msg_id"]:
            continue
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            raise AssertionError(msg["content"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out)


@pytest.mark.timeout(150)
async def test_two_hub_users_each_reach_only_their_own_kernels(
    kernelspec_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    chp = proxy_command()
    if chp is None:
        skip_or_fail("JupyterHub", "configurable-http-proxy is not installed: run 'make hub-deps'")
    # The gateway's URL goes into the Hub's config, so the gateway starts first and learns the
    # Hub's API URL once the Hub's ports are chosen (as a config reload would set it).
    async with temp_gateway(Authenticator={"hub_api_url": "http://127.0.0.1:1/hub/api"}) as gw:
        hub = JupyterHub(
            tmp_path / "hub", gateway_url=gw.url.rstrip("/"), chp=chp, users=USERS, groups=GROUPS
        )
        gw.auth.hub_api_url = hub.api_url
        try:
            await hub.start()
            for user in USERS:
                await hub.start_server(user)
            tokens = {user: await hub.new_token(user) for user in USERS}

            def server(user: str) -> str:
                return f"{hub.public_url}/user/{user}"

            # JupyterLab is what each user's server serves
            lab = await hub.request("GET", f"{server('alice')}/lab", tokens["alice"])
            assert lab.code == 200 and b"JupyterLab" in lab.body, lab.code

            # each user starts a kernel through their own server, which forges the other's name
            kids = {}
            for user in USERS:
                model = await _json(
                    hub, "POST", f"{server(user)}/api/kernels", tokens[user], {"name": "python3"}
                )
                kids[user] = model["id"]
            for user, forged in USERS.items():
                record = gw.registry.records[kids[user]]
                assert record.owner == user, f"{user}'s server forged {forged}: {record.owner}"
                assert record.env["KERNEL_USERNAME"] == user
                # the forged name did arrive (jupyter_server sends its KERNEL_* environment)
                assert (
                    f"KERNEL_USERNAME '{forged}' ignored: jupyterhub verified the caller as "
                    f"'{user}'" in caplog.text
                )

            for user, other in USERS.items():
                # through their server: their kernel only, the other's is not there
                listed = await _json(hub, "GET", f"{server(user)}/api/kernels", tokens[user])
                assert [k["id"] for k in listed] == [kids[user]]
                response = await hub.request(
                    "GET", f"{server(user)}/api/kernels/{kids[other]}", tokens[user]
                )
                assert response.code == 404, response.code
                # at the gateway, with the user's Hub token: the same
                direct = GatewayClient(gw.url, token=tokens[user])
                listed = await direct.call("GET", "/api/kernels")
                assert [k["id"] for k in listed] == [kids[user]]
                for method in ("GET", "DELETE"):
                    status, _ = await direct.request(method, f"/api/kernels/{kids[other]}")
                    assert status == 404, (method, status)
                # a user cannot reach the other's server either (the Hub's own rule)
                response = await hub.request("GET", f"{server(other)}/api/kernels", tokens[user])
                assert response.code in (302, 403), response.code

            # reach: run code on alice's kernel through alice's server's websocket; the
            # kernel's KERNEL_USERNAME is the Hub user's, not the forged one
            ws_base = hub.public_url.replace("http", "ws")
            conn = await _ws(
                f"{ws_base}/user/alice/api/kernels/{kids['alice']}/channels", tokens["alice"]
            )
            try:
                out = await _run(conn, "import os; print(os.environ['KERNEL_USERNAME'])")
                assert out == "alice\n"
            finally:
                conn.close()
            # and not bob's kernel, through alice's server or at the gateway
            with pytest.raises(HTTPClientError) as refused:
                await _ws(
                    f"{ws_base}/user/alice/api/kernels/{kids['bob']}/channels", tokens["alice"]
                )
            assert refused.value.code == 404
            gw_ws = gw.url.rstrip("/").replace("http", "ws")
            with pytest.raises(HTTPClientError) as refused:
                await _ws(f"{gw_ws}/api/kernels/{kids['bob']}/channels", tokens["alice"])
            assert refused.value.code == 404

            # a direct gateway request with alice's Hub token and a forged name is alice's
            status, body = await GatewayClient(gw.url, token=tokens["alice"]).request(
                "POST", "/api/kernels", {"name": "python3", "env": {"KERNEL_USERNAME": "bob"}}
            )
            assert status == 201, body
            assert gw.registry.records[body["id"]].owner == "alice"
            assert gw.registry.records[body["id"]].env["KERNEL_USERNAME"] == "alice"

            # the identity carries the Hub's groups, for the test's full user tokens and for
            # the servers' own tokens (the Hub's default server scopes, nothing added)
            alice = await gw.auth.identify({"Authorization": f"token {tokens['alice']}"}, None)
            bob = await gw.auth.identify({"Authorization": f"token {tokens['bob']}"}, None)
            assert (alice.user, alice.groups, alice.admin) == (
                "alice",
                frozenset({"data-science"}),
                False,
            )
            assert (bob.user, bob.groups) == ("bob", frozenset())
            verifier = gw.auth.hub()
            assert verifier is not None
            seen = [v.identity for _, v in verifier._cache.values() if v.identity is not None]
            assert sorted(i.user for i in seen) == ["alice", "alice", "bob", "bob"]
            assert {i.groups for i in seen if i.user == "alice"} == {frozenset({"data-science"})}
            assert not any(token in caplog.text for token in tokens.values())
        finally:
            killed = await hub.stop()
        assert killed == [], f"the Hub left processes behind: {killed}"
        assert marked_pids(hub.marker) == []
