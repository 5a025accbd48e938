"""Sessions CRUD, HTTPS with a real certificate, and automatic restart of a dead kernel."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import signal
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kernelfleet.client import GatewayClient, stdout_of
from tests.conftest import TOKEN, client_for, temp_gateway


async def test_sessions_crud_owns_a_kernel(client: GatewayClient) -> None:
    created = await client.call(
        "POST",
        "/api/sessions",
        {"path": "a.ipynb", "name": "a", "type": "notebook", "kernel": {"name": "python3"}},
        201,
    )
    kid = created["kernel"]["id"]
    assert created["kernel"]["execution_state"] == "idle"
    assert [s["id"] for s in await client.call("GET", "/api/sessions")] == [created["id"]]
    patched = await client.call("PATCH", f"/api/sessions/{created['id']}", {"path": "b.ipynb"})
    assert patched["path"] == "b.ipynb" and patched["kernel"]["id"] == kid
    await client.call("DELETE", f"/api/sessions/{created['id']}", expect=204)
    assert await client.call("GET", "/api/sessions") == []
    assert (await client.request("GET", f"/api/kernels/{kid}"))[0] == 404


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


async def test_https_and_wss_work_with_a_certificate(kernelspec_dir: Path, tmp_path: Path) -> None:
    certfile, keyfile = _self_signed(tmp_path)
    async with temp_gateway(Gateway={"certfile": str(certfile), "keyfile": str(keyfile)}) as gw:
        assert gw.url.startswith("https://")
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest

        ctx = ssl.create_default_context(cafile=str(certfile))
        resp = await AsyncHTTPClient().fetch(
            HTTPRequest(
                gw.url + "api/kernelspecs",
                headers={"Authorization": f"token {TOKEN}"},
                ssl_options=ctx,
            )
        )
        assert resp.code == 200
        # a client that does not trust the certificate is refused
        with pytest.raises(ssl.SSLError):
            await AsyncHTTPClient().fetch(gw.url + "api")


async def test_a_kernel_that_dies_is_restarted_in_place(kernelspec_dir: Path) -> None:
    async with temp_gateway(KernelMonitor={"monitor_interval": 0.3}) as gw:
        c = client_for(gw)
        model = await c.start_kernel()
        ws = await c.connect(model["id"])
        _, iopub = await ws.execute("import os; print(os.getpid())")
        pid = int(stdout_of(iopub))
        os.kill(pid, signal.SIGKILL)
        states = []
        async with asyncio.timeout(30):
            while "restarting" not in states:
                msg = await ws.recv()
                if msg["msg_type"] == "status":
                    states.append(msg["content"]["execution_state"])
            while (
                gw.registry.records[model["id"]].execution_state != "idle"
                or gw.registry.records[model["id"]].restart_count < 1
            ):
                await asyncio.sleep(0.1)
        _, iopub = await ws.execute("import os; print(os.getpid())")
        assert int(stdout_of(iopub)) != pid
        ws.close()


async def test_a_dead_kernel_is_reported_dead_then_removed(kernelspec_dir: Path) -> None:
    cfg = {
        "KernelMonitor": {
            "monitor_interval": 0.3,
            "restart_dead_kernels": False,
            "dead_kernel_retention": 1.0,
        }
    }
    async with temp_gateway(**cfg) as gw:
        c = client_for(gw)
        model = await c.start_kernel()
        ws = await c.connect(model["id"])
        _, iopub = await ws.execute("import os; print(os.getpid())")
        os.kill(int(stdout_of(iopub)), signal.SIGKILL)
        async with asyncio.timeout(10):
            while True:
                msg = await ws.recv()
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "dead":
                    break
        listed = await c.call("GET", f"/api/kernels/{model['id']}")
        assert listed["execution_state"] == "dead" and "died" in listed["reason"]
        async with asyncio.timeout(10):
            while model["id"] in gw.registry.records:
                await asyncio.sleep(0.1)
        assert (await c.request("GET", f"/api/kernels/{model['id']}"))[0] == 404
        ws.close()
