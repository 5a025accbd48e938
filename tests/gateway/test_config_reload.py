"""Live config reload (kernelfleet/gateway/reload.py): new limits, tokens, pools and
certificates while kernels run and websockets stay open; an invalid file is refused."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import ssl
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from traitlets.config import Config
from traitlets.config.loader import JSONFileConfigLoader

from kernelfleet.client import GatewayClient
from tests.conftest import client_for, make_config, temp_gateway
from tests.gateway.test_sessions_tls_restart import _self_signed
from tests.gatewayproc import GatewayProcess

USERS = {"Authenticator": {"user_tokens": {"tok-alice": "alice"}}}


def loader(path: Path, **sections: dict[str, Any]) -> Any:
    """What ``kernelfleet serve`` reloads: the test's fixed settings, then the JSON file."""

    def load() -> Config:
        config = make_config(**sections)
        config.merge(JSONFileConfigLoader(path.name, str(path.parent)).load_config())
        return config

    return load


def write(path: Path, value: Any) -> None:
    path.write_text(value if isinstance(value, str) else json.dumps(value))


async def generation(client: GatewayClient) -> int:
    return int((await client.call("GET", "/api"))["config"]["generation"])


async def test_new_limits_apply_to_the_next_start_while_kernels_and_websockets_carry_on(
    kernelspec_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "kernelfleet_config.json"
    write(path, {"KernelRegistry": {"max_kernels_per_user": 3}})
    async with temp_gateway(KernelRegistry={"max_kernels_per_user": 3}, **USERS) as gw:
        gw.enable_reload(loader(path, **USERS), [str(path)])
        alice = client_for(gw, token="tok-alice")
        kids = [(await alice.start_kernel())["id"] for _ in range(2)]
        ws = await alice.connect(kids[0])
        assert (await alice.call("GET", "/api"))["config"]["generation"] == 1
        # a cell that prints across the reload, on a websocket opened before it
        running = asyncio.create_task(
            ws.execute(
                "import time\nfor i in range(8):\n    print(i, flush=True)\n    time.sleep(0.25)"
            )
        )
        await asyncio.sleep(0.5)
        write(path, {"KernelRegistry": {"max_kernels_per_user": 2}})
        # the next start decision looks at the file first: no waiting for the watch
        status, body = await alice.request("POST", "/api/kernels", {"name": "python3"})
        assert status == 403 and "2" in body["message"], body
        reply, iopub = await running
        assert reply["status"] == "ok"
        printed = "".join(m["content"]["text"] for m in iopub if m["msg_type"] == "stream")
        assert printed.split() == [str(i) for i in range(8)]
        assert sorted(k["id"] for k in await alice.call("GET", "/api/kernels")) == sorted(kids)
        reply, _ = await ws.execute("2 + 2")
        assert reply["status"] == "ok"
        assert await generation(alice) == 2

        # an invalid file is refused, named in the log, and the limits in force stay
        for bad, named in (
            ({"KernelRegistry": {"max_kernels_per_user": "lots"}}, "max_kernels_per_user"),
            ('{"KernelRegistry": ', "json"),
        ):
            write(path, bad)
            with caplog.at_level(logging.ERROR):
                assert gw.reloader is not None and not await gw.reloader.reload("test")
            assert "config reload (test) refused" in caplog.text
            assert named in caplog.text.lower()
            caplog.clear()
            assert gw.registry.max_kernels_per_user == 2 and await generation(alice) == 2
            status, _ = await alice.request("POST", "/api/kernels", {"name": "python3"})
            assert status == 403

        # an option taken out of the file goes back to its default (no limit)
        write(path, {})
        await alice.start_kernel()
        assert gw.registry.max_kernels_per_user == 0 and await generation(alice) == 3
        ws.close()


async def test_the_file_watch_reloads_without_a_request(
    kernelspec_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "kernelfleet_config.json"
    write(path, {})
    async with temp_gateway() as gw:
        reloader = gw.enable_reload(loader(path), [str(path)])
        reloader.interval = 0.1
        write(
            path,
            {"Culler": {"cull_idle_timeout": 77}, "KernelPool": {"pool_sizes": {"python3": 1}}},
        )
        async with asyncio.timeout(30):
            while not (gw.pool.members.get("python3") and gw.culler.cull_idle_timeout == 77):
                await asyncio.sleep(0.05)
        (warm,) = gw.pool.members["python3"]
        write(path, {"Culler": {"cull_idle_timeout": 77}})  # no pool any more
        async with asyncio.timeout(30):
            while warm.id in gw.registry.records:
                await asyncio.sleep(0.05)
        assert gw.pool.members["python3"] == [] and reloader.generation.number == 3


async def test_a_renewed_certificate_is_served_to_new_connections(
    kernelspec_dir: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    certfile, keyfile = _self_signed(first)
    tls = {"Gateway": {"certfile": str(certfile), "keyfile": str(keyfile)}}
    path = tmp_path / "kernelfleet_config.json"
    write(path, {})
    async with temp_gateway(**tls) as gw:
        reloader = gw.enable_reload(loader(path, **tls), [str(path)])

        async def fetch(cafile: Path) -> int:
            request = HTTPRequest(
                gw.url + "healthz", ssl_options=ssl.create_default_context(cafile=str(cafile))
            )
            client = AsyncHTTPClient(force_instance=True)
            try:
                return (await client.fetch(request)).code
            finally:
                client.close()

        assert await fetch(certfile) == 200
        renewed_cert, renewed_key = _self_signed(second)
        # renewed in place, as certbot does
        old_pem = certfile.read_bytes()
        certfile.write_bytes(renewed_cert.read_bytes())
        keyfile.write_bytes(renewed_key.read_bytes())
        assert await reloader.reload("SIGHUP")
        assert await fetch(certfile) == 200
        old = tmp_path / "old.pem"
        old.write_bytes(old_pem)
        with pytest.raises(ssl.SSLError):
            await fetch(old)

        # a broken certificate is refused: the one in force stays
        certfile.write_text("not a certificate")
        assert not await reloader.reload("SIGHUP")
        certfile.write_bytes(renewed_cert.read_bytes())
        assert await fetch(certfile) == 200


async def test_sighup_reloads_tokens_of_a_real_gateway_without_dropping_a_websocket(
    kernelspec_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "kernelfleet_config.py"
    path.write_text("c.Authenticator.user_tokens = {'tok-a': 'alice'}\n")
    env = {"KF_DATA_DIR": str(tmp_path / "data"), "JUPYTER_PATH": str(kernelspec_dir)}
    gw = GatewayProcess(env, "--config", str(path))
    try:
        alice = GatewayClient(gw.client.url, token="tok-a")
        kid = (await alice.start_kernel())["id"]
        ws = await alice.connect(kid)
        path.write_text(
            "c.Authenticator.user_tokens = {'tok-b': 'alice'}\nc.Gateway.base_url = '/other/'\n"
        )
        gw.proc.send_signal(signal.SIGHUP)
        bob_token = GatewayClient(gw.client.url, token="tok-b")
        async with asyncio.timeout(30):
            while (await bob_token.request("GET", "/api"))[0] != 200:
                await asyncio.sleep(0.1)
        assert (await alice.request("GET", "/api/kernels"))[0] == 401
        assert [k["id"] for k in await bob_token.call("GET", "/api/kernels")] == [kid]
        reply, _ = await ws.execute("print('still here')")
        assert reply["status"] == "ok"
        ws.close()
        assert await generation(bob_token) == 2
        assert (
            "Gateway.base_url changed to '/other/'; it takes effect at the next restart"
            in gw.output()
        )
    finally:
        assert gw.stop() == 0, gw.output()
