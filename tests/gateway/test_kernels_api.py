"""The kernel lifecycle through the real in-process gateway and real ipykernels."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from kernelfleet.client import GatewayClient, result_of, stdout_of
from kernelfleet.gateway.app import Gateway


async def test_start_execute_and_shutdown_a_kernel(client: GatewayClient) -> None:
    model = await client.start_kernel()
    uuid.UUID(model["id"])
    assert model["name"] == "python3"
    assert model["execution_state"] == "idle"
    dt.datetime.strptime(model["last_activity"], "%Y-%m-%dT%H:%M:%S.%fZ")
    ws = await client.connect(model["id"])
    reply, iopub = await ws.execute("print('hello'); 1+1")
    assert reply["status"] == "ok"
    assert stdout_of(iopub) == "hello\n"
    assert result_of(iopub) == "2"
    listed = await client.call("GET", "/api/kernels")
    assert [k["id"] for k in listed] == [model["id"]]
    assert listed[0]["connections"] == 1
    ws.close()
    await client.shutdown_kernel(model["id"])
    assert (await client.request("GET", f"/api/kernels/{model['id']}"))[0] == 404
    assert await client.call("GET", "/api/kernels") == []


async def test_unknown_kernelspec_is_a_json_404(client: GatewayClient) -> None:
    status, body = await client.request("POST", "/api/kernels", {"name": "nope"})
    assert status == 404
    assert body["reason"] == "No Such Kernelspec"
    assert "nope" in body["message"]


async def test_start_without_content_type_and_without_name_uses_default(
    gateway: Gateway,
) -> None:
    from tornado.httpclient import AsyncHTTPClient

    resp = await AsyncHTTPClient().fetch(
        gateway.url + "api/kernels",
        method="POST",
        body="{}",
        headers={"Authorization": "token test-token"},
        raise_error=False,
    )
    assert resp.code == 201
    client = GatewayClient(gateway.url, token="test-token")
    import json

    await client.shutdown_kernel(json.loads(resp.body)["id"])


async def test_restart_keeps_the_id_and_loses_the_state(client: GatewayClient) -> None:
    model = await client.start_kernel()
    ws = await client.connect(model["id"])
    await ws.execute("x = 41")
    restarted = await client.call("POST", f"/api/kernels/{model['id']}/restart", {})
    assert restarted["id"] == model["id"]
    _reply, iopub = await ws.execute("print('x' in globals())")
    assert stdout_of(iopub) == "False\n"
    ws.close()
    await client.shutdown_kernel(model["id"])


async def test_interrupt_stops_a_running_sleep(client: GatewayClient) -> None:
    model = await client.start_kernel()
    ws = await client.connect(model["id"])
    msg = ws.make("execute_request", {"code": "import time; time.sleep(60)"})
    msg_id = await ws.send(msg)
    while True:
        m = await ws.recv()
        if m["msg_type"] == "execute_input":
            break
    listed = await client.call("GET", f"/api/kernels/{model['id']}")
    assert listed["execution_state"] == "busy"
    await asyncio.sleep(0.5)  # let the kernel get from execute_input into time.sleep
    status, _ = await client.request("POST", f"/api/kernels/{model['id']}/interrupt", {})
    assert status == 204
    async with asyncio.timeout(20):
        while True:
            m = await ws.recv()
            if m["channel"] == "shell" and m["parent_header"].get("msg_id") == msg_id:
                break
    assert m["content"]["status"] == "error"
    assert m["content"]["ename"] == "KeyboardInterrupt"
    ws.close()
    await client.shutdown_kernel(model["id"])


async def test_delete_is_idempotent_under_concurrent_calls(client: GatewayClient) -> None:
    model = await client.start_kernel()
    results = await asyncio.gather(
        client.request("DELETE", f"/api/kernels/{model['id']}"),
        client.request("DELETE", f"/api/kernels/{model['id']}"),
    )
    assert sorted(status for status, _ in results)[0] == 204
    assert all(status in {204, 404} for status, _ in results)


async def test_reconnect_with_same_session_replays_output_produced_while_away(
    client: GatewayClient,
) -> None:
    model = await client.start_kernel()
    ws = await client.connect(model["id"], session_id="sess-1")
    code = "import time; time.sleep(0.5); print('late')"
    await ws.send(ws.make("execute_request", {"code": code}))
    ws.close()
    await asyncio.sleep(1.5)
    ws2 = await client.connect(model["id"], session_id="sess-1")
    seen = []
    async with asyncio.timeout(10):
        while "late\n" not in seen:
            m = await ws2.recv()
            if m["msg_type"] == "stream":
                seen.append(m["content"]["text"])
    ws2.close()
    await client.shutdown_kernel(model["id"])


async def test_two_websockets_with_the_same_session_both_get_their_replies(
    client: GatewayClient,
) -> None:
    model = await client.start_kernel()
    orphan = await client.connect(model["id"], session_id="same")
    live = await client.connect(model["id"], session_id="same")
    for _ in range(5):
        reply = await live.request("kernel_info_request", {})
        assert reply["content"]["status"] == "ok"
    orphan.close()
    live.close()
    await client.shutdown_kernel(model["id"])
