"""Requests an attacker with a valid user token sends: each one answered with a JSON error
naming what to change, nothing learned about other users' kernels, the gateway still serving."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from kernelfleet.gateway.app import Gateway
from tests.conftest import TOKEN, client_for, temp_gateway

USERS = {
    "Authenticator": {
        "user_tokens": {"tok-alice": "alice", "tok-bob": "bob"},
        "admin_users": {"ops"},
    }
}


async def test_a_kernel_id_of_another_user_cannot_be_probed_by_a_start(
    kernelspec_dir: Path,
) -> None:
    async with temp_gateway(**USERS) as gw:
        alice = client_for(gw, token="tok-alice")
        bob = client_for(gw, token="tok-bob")
        theirs = (await alice.start_kernel())["id"]
        unused = "6e7d2293-b825-464e-8d0f-a0e77d9e48b4"
        answers = []
        for kid in (theirs, unused):
            status, body = await bob.request(
                "POST", "/api/kernels", {"name": "python3", "env": {"KERNEL_ID": kid}}
            )
            answers.append((status, body))
        assert answers[0] == answers[1]  # the same answer for a live id and a free one
        assert answers[0][0] == 403 and "KERNEL_ID" in answers[0][1]["message"]
        status, _ = await bob.request("GET", f"/api/kernels/{theirs}")
        assert status == 404
        # the notebook server's shared (admin) token may still choose ids
        admin = client_for(gw)
        model = await admin.start_kernel(env={"KERNEL_ID": unused})
        assert model["id"] == unused
        status, body = await admin.request(
            "POST", "/api/kernels", {"name": "python3", "env": {"KERNEL_ID": unused}}
        )
        assert status == 409 and unused in body["message"]
        await admin.shutdown_kernel(unused)
        await alice.shutdown_kernel(theirs)


async def raw_request(port: int, head: str, body: bytes = b"", wait: float = 30) -> tuple[int, Any]:
    """Send *head* (request line and headers, CRLF-joined by us) and *body* on a fresh socket;
    return the status and the decoded JSON body of the answer (None if it is not JSON)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(wait):
            head_bytes = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head_bytes.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            payload = await reader.readexactly(length)
    finally:
        writer.close()
    status_line = head_bytes.partition(b"\r\n")[0]
    try:
        value = json.loads(payload) if payload else None
    except ValueError:
        value = None
    return int(status_line.split()[1]), value


def _post_head(length: int | str, token: str | None = TOKEN, extra: str = "") -> str:
    auth = f"\nAuthorization: token {token}" if token else ""
    return (
        f"POST /api/kernels HTTP/1.1\nHost: gw{auth}\nContent-Type: application/json"
        f"\nContent-Length: {length}\nConnection: close{extra}"
    )


async def still_serves(gw: Gateway) -> None:
    assert (await client_for(gw).call("GET", "/api"))["version"]


async def test_a_huge_body_is_refused_before_it_is_read_with_or_without_a_token(
    kernelspec_dir: Path,
) -> None:
    async with temp_gateway() as gw:
        # 100 MiB declared, not a byte of it sent: the answer comes anyway
        status, body = await raw_request(gw.bound_port, _post_head(100 << 20, token=None))
        assert status == 401 and body["reason"] == "Unauthorized"
        status, body = await raw_request(gw.bound_port, _post_head(100 << 20))
        assert status == 413 and "1024 KiB" in body["message"]
        status, body = await raw_request(gw.bound_port, _post_head("12abc"))
        assert status == 400 and "Content-Length" in body["message"]
        await still_serves(gw)


async def test_a_chunked_body_past_the_limit_is_refused(kernelspec_dir: Path) -> None:
    async with temp_gateway(RequestLimits={"max_body_kb": 4}) as gw:
        head = (
            f"POST /api/kernels HTTP/1.1\nHost: gw\nAuthorization: token {TOKEN}"
            "\nTransfer-Encoding: chunked\nConnection: close"
        )
        chunk = b"x" * 2048
        body = b"".join(b"800\r\n" + chunk + b"\r\n" for _ in range(4)) + b"0\r\n\r\n"
        status, answer = await raw_request(gw.bound_port, head, body)
        assert status == 413 and "4 KiB" in answer["message"]
        await still_serves(gw)


async def test_oversized_headers_get_a_json_431(kernelspec_dir: Path) -> None:
    async with temp_gateway() as gw:
        filler = "".join(f"\nX-Filler-{i}: {'a' * 1000}" for i in range(80))
        status, body = await raw_request(gw.bound_port, f"GET /api HTTP/1.1\nHost: gw{filler}")
        assert status == 431 and "64 KiB" in body["message"]
        await still_serves(gw)


async def test_a_client_that_never_finishes_its_headers_is_dropped(kernelspec_dir: Path) -> None:
    async with temp_gateway(RequestLimits={"header_timeout": 1.0}) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.bound_port)
        writer.write(b"GET /api HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
        await writer.drain()
        async with asyncio.timeout(30):  # closed by the gateway after ~1 s, not an hour
            assert await reader.read() == b""
        writer.close()
        await still_serves(gw)


async def test_json_nested_too_deep_is_a_400(kernelspec_dir: Path) -> None:
    async with temp_gateway() as gw:
        deep = ("[" * 100_000 + "]" * 100_000).encode()
        status, body = await raw_request(gw.bound_port, _post_head(len(deep)), deep)
        assert status == 400 and "nested" in body["message"]
        await still_serves(gw)


async def test_a_nul_in_a_kernelspec_resource_path_is_a_json_404(kernelspec_dir: Path) -> None:
    async with temp_gateway() as gw:
        c = client_for(gw)
        for path in ("/kernelspecs/python3/logo%00.png", "/kernelspecs/python3/%00"):
            status, body = await c.request("GET", path)
            assert status == 404 and body["reason"], (path, body)
        await still_serves(gw)


async def test_the_channels_url_answers_json_without_upgrade_or_from_a_foreign_origin(
    kernelspec_dir: Path,
) -> None:
    async with temp_gateway() as gw:
        c = client_for(gw)
        kid = (await c.start_kernel())["id"]
        status, body = await c.request("GET", f"/api/kernels/{kid}/channels")
        assert status == 400 and "websocket" in body["message"]
        head = (
            f"GET /api/kernels/{kid}/channels HTTP/1.1\nHost: 127.0.0.1:{gw.bound_port}"
            f"\nAuthorization: token {TOKEN}\nUpgrade: websocket\nConnection: Upgrade"
            "\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13"
            "\nOrigin: https://evil.example"
        )
        status, body = await raw_request(gw.bound_port, head, wait=10)
        assert status == 403 and "allow_origin" in body["message"]
        await c.shutdown_kernel(kid)
        await still_serves(gw)
