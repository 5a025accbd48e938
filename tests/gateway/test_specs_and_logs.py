"""Kernelspec listing, the allow-list, resources, CORS and kernel logs."""

from __future__ import annotations

from pathlib import Path

from tornado.httpclient import AsyncHTTPClient

from kernelfleet.client import GatewayClient
from tests.conftest import TOKEN, add_kernelspec, client_for, temp_gateway


async def test_kernelspec_models_are_what_jupyterlab_validates(client: GatewayClient) -> None:
    listing = await client.call("GET", "/api/kernelspecs")
    assert listing["default"] == "python3"
    model = listing["kernelspecs"]["python3"]
    spec = model["spec"]
    assert isinstance(spec["argv"], list) and isinstance(spec["display_name"], str)
    assert isinstance(spec["language"], str) and isinstance(spec["metadata"], dict)
    assert isinstance(spec["env"], dict) and isinstance(spec["interrupt_mode"], str)
    assert model["resources"]["logo-64x64"] == "/kernelspecs/python3/logo-64x64.png"
    one = await client.call("GET", "/api/kernelspecs/python3")
    assert one == model
    # jupyter_server with KERNEL_USERNAME set asks ?user=<u>/<name> and needs the single model
    quirk = await client.call("GET", "/api/kernelspecs?user=alice/python3")
    assert quirk == model
    status, _ = await client.request("GET", "/api/kernelspecs?user=alice/nope")
    assert status == 404


async def test_logo_is_served_without_api_prefix(client: GatewayClient) -> None:
    resp = await AsyncHTTPClient().fetch(
        client.url + "kernelspecs/python3/logo-64x64.png",
        headers={"Authorization": f"token {TOKEN}"},
    )
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.body.startswith(b"\x89PNG")
    head = await AsyncHTTPClient().fetch(
        client.url + "kernelspecs/python3/logo-64x64.png",
        method="HEAD",
        headers={"Authorization": f"token {TOKEN}"},
    )
    assert head.code == 200 and not head.body


async def test_only_allowed_kernelspecs_are_offered(kernelspec_dir: Path) -> None:
    add_kernelspec(kernelspec_dir, "other", {})
    async with temp_gateway(KernelSpecCatalog={"allowed_kernelspecs": ["other"]}) as gw:
        c = client_for(gw)
        listing = await c.call("GET", "/api/kernelspecs")
        assert list(listing["kernelspecs"]) == ["other"] and listing["default"] == "other"
        status, body = await c.request("POST", "/api/kernels", {"name": "python3"})
        assert status == 403 and body["reason"] == "Kernelspec Not Allowed"


async def test_cors_headers_and_preflight(kernelspec_dir: Path) -> None:
    cfg = {"Gateway": {"allow_origin": "https://lab.example", "allow_headers": "Authorization"}}
    async with temp_gateway(**cfg) as gw:
        resp = await AsyncHTTPClient().fetch(gw.url + "api/kernels", method="OPTIONS")
        assert resp.code == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "https://lab.example"
        assert resp.headers["Access-Control-Allow-Headers"] == "Authorization"


async def test_kernel_logs_are_readable_by_their_owner(client: GatewayClient) -> None:
    model = await client.start_kernel()
    ws = await client.connect(model["id"])
    await ws.execute("import sys; print('to-the-log', file=sys.__stderr__, flush=True)")
    text = await client.call("GET", f"/api/kernels/{model['id']}/logs")
    assert "to-the-log" in text
    ws.close()
    await client.shutdown_kernel(model["id"])


async def test_everything_lives_under_the_base_url(kernelspec_dir: Path) -> None:
    async with temp_gateway(Gateway={"base_url": "/gw/"}) as gw:
        assert gw.url.endswith("/gw/")
        c = client_for(gw)
        model = await c.start_kernel()
        listing = await c.call("GET", "/api/kernelspecs")
        assert listing["kernelspecs"]["python3"]["resources"]["logo-64x64"].startswith(
            "/gw/kernelspecs/"
        )
        ws = await c.connect(model["id"])
        reply = await ws.request("kernel_info_request", {})
        assert reply["content"]["status"] == "ok"
        ws.close()
        root = GatewayClient(gw.url.replace("/gw/", "/"), token=TOKEN)
        assert (await root.request("GET", "/api/kernels"))[0] == 404
        await c.shutdown_kernel(model["id"])
