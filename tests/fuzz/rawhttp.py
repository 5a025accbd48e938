"""A raw HTTP/1.1 client for the fuzz tests: sends exactly the bytes it is given (any target,
any body), one request per connection, and checks the gateway's answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from kernelfleet.gateway.app import Gateway
from tests.conftest import TOKEN

#: 5xx answers a request may legitimately get from the fuzz gateways: the kernel it asked
#: for was started and failed (the test kernelspecs exit at once), or its own
#: KERNEL_LAUNCH_TIMEOUT was too short. Anything else above 499 is a bug.
LAUNCH_OUTCOMES = {
    (500, "Kernel Launch Failed"): "exited (status",
    (504, "Kernel Launch Timeout"): "did not become ready",
}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    request: str = ""
    json: Any = field(default=None)

    def describe(self) -> str:
        return f"{self.request} -> {self.status} {self.body[:300]!r}"


async def send(
    gw: Gateway,
    method: str,
    target: bytes | str,
    body: bytes | None = None,
    *,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
    wait: float = 60,
) -> Answer:
    """Send one request; *target* is written as is (bytes) or UTF-8 encoded."""
    raw_target = target.encode() if isinstance(target, str) else target
    lines = [method.encode() + b" " + raw_target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    if token is not None:
        lines.append(f"Authorization: token {token}".encode())
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}".encode())
    if body is not None:
        lines.append(f"Content-Length: {len(body)}".encode())
    lines.append(b"Connection: close")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.bound_port)
    try:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + (body or b""))
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await writer.drain()  # an early answer may have closed the connection meanwhile
        data = b""
        async with asyncio.timeout(wait):
            # a server that answers early (413) and closes with our body unread resets the
            # connection: keep what arrived before the reset
            with contextlib.suppress(ConnectionResetError):
                while chunk := await reader.read(65536):
                    data += chunk
    finally:
        writer.close()
        # a server that answered and closed may reset the socket as we close ours
        with contextlib.suppress(ConnectionResetError):
            await writer.wait_closed()
    shown = f"{method} {raw_target[:200]!r} body={(body or b'')[:200]!r}"
    assert data, f"no answer at all to {shown}"
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), parsed, payload, shown)


def check(answer: Answer, *, launches: bool = False) -> Answer:
    """What every answer to an untrusted request must satisfy.

    Below 500 unless *launches* (the request may have started a kernel) and the 5xx is one of
    :data:`LAUNCH_OUTCOMES`; every 4xx and 5xx has a JSON ``{reason, message}`` body (except
    answers to HEAD, which have no body).
    """
    info = answer.describe()
    if answer.status >= 400 and answer.body:
        assert answer.headers.get("content-type", "").startswith("application/json"), info
        body = json.loads(answer.body)
        assert isinstance(body, dict), info
        assert isinstance(body.get("reason"), str) and body["reason"], info
        assert isinstance(body.get("message"), str) and body["message"], info
        answer.json = body
    if answer.status >= 500:
        assert launches and answer.json is not None, info
        expected = LAUNCH_OUTCOMES.get((answer.status, answer.json["reason"]))
        assert expected is not None and expected in answer.json["message"], info
    return answer


async def still_serves(gw: Gateway) -> None:
    answer = await send(gw, "GET", "/api")
    assert answer.status == 200, answer.describe()
