"""The build proxy: its request-head parsers (untrusted input, property-tested: any bytes give
a request or a ProxyRequestError, never another exception) and the proxy itself over TCP with
real upstream servers on 127.0.0.1 — what it tunnels, forwards and refuses, and why."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernelfleet.envs.proxy import (
    MAX_HEAD,
    AllowListProxy,
    ProxyRequest,
    ProxyRequestError,
    error_response,
    forbidden_address,
    forwarded_head,
    is_own_address,
    parse_allowed,
    parse_request_head,
    split_head,
)

FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# -- the parsers, for any input ------------------------------------------------------------

methods = st.sampled_from(["CONNECT", "GET", "HEAD", "POST", "get", "", "G ET"]) | st.text(
    max_size=8
)
targets = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda host, port: f"{host}:{port}",
        st.sampled_from(["pypi.org", "[::1]", "127.0.0.1", "a..b", "[x]", "xn--d.example"]),
        st.integers(-5, 70000).map(str) | st.text(max_size=6),
    ),
    st.builds(
        lambda scheme, auth, path: f"{scheme}{auth}{path}",
        st.sampled_from(["http://", "HTTP://", "https://", "ftp://", ""]),
        st.sampled_from(["pypi.org", "u@pypi.org", "pypi.org:8080", "[::1]:1", "", ":80"]),
        st.text(max_size=20),
    ),
)
header_lines = st.lists(
    st.one_of(
        st.builds(lambda n, v: f"{n}: {v}", st.text(max_size=12), st.text(max_size=20)),
        st.sampled_from(
            ["Content-Length: 5", "Transfer-Encoding: chunked", " folded", "Host: x", "NoColon"]
        ),
    ),
    max_size=5,
)
heads = st.builds(
    lambda method, target, version, lines: (
        "\r\n".join([f"{method} {target} {version}", *lines]) + "\r\n\r\n"
    ).encode("utf-8", "surrogatepass"),
    methods,
    targets,
    st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "http/1.1", ""]),
    header_lines,
)


def _total(head: bytes) -> ProxyRequest | None:
    try:
        return parse_request_head(head)
    except ProxyRequestError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_parse_to_a_request_or_a_proxy_request_error(data: bytes) -> None:
    _total(data)
    _total(data + b"\r\n\r\n")
    with contextlib.suppress(ProxyRequestError):
        split_head(data)


@FUZZ
@given(heads)
def test_any_request_like_head_parses_or_is_refused_with_a_reason(head: bytes) -> None:
    request = _total(head)
    if request is None:
        return
    assert request.method in ("CONNECT", "GET", "HEAD")
    assert 0 < request.port < 65536
    assert request.host == request.host.lower()
    if request.method != "CONNECT":
        forwarded = forwarded_head(request)
        lines = forwarded.split(b"\r\n")
        assert lines[0] == f"{request.method} {request.target} HTTP/1.1".encode()
        assert lines[1].startswith(b"Host: ")
        assert forwarded.endswith(b"Connection: close\r\n\r\n")
        assert forwarded.count(b"\r\n\r\n") == 1


@FUZZ
@given(st.text(max_size=60))
def test_any_allowed_host_entry_parses_or_is_refused(text: str) -> None:
    try:
        pattern = parse_allowed(text)
    except ProxyRequestError:
        return
    assert pattern.port is None or 0 < pattern.port < 65536
    assert parse_allowed(str(pattern)) == pattern


# -- the parsers, by example ---------------------------------------------------------------


def head(line: str, *headers: str) -> bytes:
    return ("\r\n".join([line, *headers]) + "\r\n\r\n").encode()


def test_connect_names_host_and_port() -> None:
    request = parse_request_head(head("CONNECT PyPI.org.:443 HTTP/1.1", "Host: pypi.org:443"))
    assert (request.method, request.host, request.port, request.target) == (
        "CONNECT",
        "pypi.org",
        443,
        "",
    )
    v6 = parse_request_head(head("CONNECT [0:0::1]:8443 HTTP/1.1"))
    assert (v6.host, v6.port, v6.authority) == ("::1", 8443, "[::1]:8443")


def test_absolute_get_becomes_origin_form_with_the_urls_host() -> None:
    request = parse_request_head(
        head(
            "GET http://Mirror.Example:8080/simple/six/?x=1#frag HTTP/1.1",
            "Host: evil.example",
            "Proxy-Authorization: Basic eA==",
            "Connection: keep-alive, X-Secret",
            "X-Secret: 1",
            "Accept: text/html",
        )
    )
    assert (request.host, request.port, request.target) == (
        "mirror.example",
        8080,
        "/simple/six/?x=1",
    )
    assert forwarded_head(request) == (
        b"GET /simple/six/?x=1 HTTP/1.1\r\nHost: mirror.example:8080\r\n"
        b"Accept: text/html\r\nConnection: close\r\n\r\n"
    )
    bare = parse_request_head(head("HEAD http://pypi.org?q HTTP/1.0"))
    assert (bare.method, bare.port, bare.target) == ("HEAD", 80, "/?q")


@pytest.mark.parametrize(
    ("line", "headers", "reason"),
    [
        ("POST http://pypi.org/ HTTP/1.1", (), "POST is not allowed"),
        ("GET https://pypi.org/ HTTP/1.1", (), "must be reached with CONNECT"),
        ("GET /simple/ HTTP/1.1", (), "only absolute http:// URLs"),
        ("GET http://user@pypi.org/ HTTP/1.1", (), "user information"),
        ("GET http://pypi.org/ HTTP/1.1", ("Content-Length: 3",), "with a body"),
        ("GET http://pypi.org/ HTTP/1.1", ("Transfer-Encoding: chunked",), "with a body"),
        ("CONNECT pypi.org:0 HTTP/1.1", (), "not a valid port"),
        ("CONNECT pypi.org:65536 HTTP/1.1", (), "not a valid port"),
        ("CONNECT 127.1:80 HTTP/1.1", (), "not a valid host name"),
        ("CONNECT ::1:80 HTTP/1.1", (), "IPv6 address in brackets"),
        ("CONNECT pypi.org:443 HTTP/2.0", (), "is not HTTP/1.0 or HTTP/1.1"),
        ("CONNECT  pypi.org:443 HTTP/1.1", (), "is not 'METHOD target HTTP/1.x'"),
        ("CONNECT pypi.org:443 HTTP/1.1", (" folded",), "folded header"),
    ],
)
def test_requests_the_proxy_does_not_serve_are_refused_with_a_reason(
    line: str, headers: tuple[str, ...], reason: str
) -> None:
    with pytest.raises(ProxyRequestError, match=reason):
        parse_request_head(head(line, *headers))


def test_a_head_longer_than_the_limit_is_refused() -> None:
    assert split_head(b"CONNECT a:1 HTTP/1.1\r\n") is None
    assert split_head(b"X\r\n\r\nrest") == (b"X\r\n\r\n", b"rest")
    with pytest.raises(ProxyRequestError, match="longer than"):
        split_head(b"A" * MAX_HEAD)


def test_patterns_allow_their_port_or_the_default_of_the_method() -> None:
    connect = parse_request_head(head("CONNECT pypi.org:443 HTTP/1.1"))
    plain = parse_request_head(head("GET http://pypi.org/ HTTP/1.1"))
    other = parse_request_head(head("CONNECT pypi.org:8443 HTTP/1.1"))
    bare = parse_allowed("PyPI.org")
    assert bare.allows(connect) and bare.allows(plain) and not bare.allows(other)
    assert parse_allowed("pypi.org:8443").allows(other)
    assert not parse_allowed("pypi.org:8443").allows(connect)
    assert not parse_allowed("files.pythonhosted.org").allows(connect)
    assert parse_allowed("[::1]:3141") == parse_allowed("[0::1]:3141")


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("151.101.0.223", None),
        ("10.88.0.1", None),
    ],
)
def test_addresses_a_name_may_not_lead_to(address: str, why: str | None) -> None:
    found = forbidden_address(ipaddress.ip_address(address))
    assert (found is None) if why is None else (found is not None and why in found)


def test_error_responses_keep_the_reason_on_one_printable_line() -> None:
    response = error_response(403, "no\r\nInjected: header \x00 é")
    status, rest = response.split(b"\r\n", 1)
    assert status == b"HTTP/1.1 403 no Injected: header ? ?"
    assert b"Injected: header" not in rest.split(b"\r\n\r\n")[0]


# -- the proxy, over TCP -------------------------------------------------------------------


@dataclass
class Upstream:
    """A TCP server on 127.0.0.1 that records what it received; it echoes (``echo``) or
    answers one HTTP request with ``hello``."""

    mode: str
    port: int = 0
    received: list[bytes] = field(default_factory=list)
    connections: int = 0


@contextlib.asynccontextmanager
async def upstream(mode: str) -> AsyncIterator[Upstream]:
    state = Upstream(mode)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            if mode == "echo":
                while data := await reader.read(4096):
                    state.received.append(data)
                    writer.write(data)
                    await writer.drain()
            else:
                data = await reader.readuntil(b"\r\n\r\n")
                state.received.append(data)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def running(proxy: AllowListProxy) -> AsyncIterator[int]:
    port = await proxy.serve_tcp()
    try:
        yield port
    finally:
        await proxy.close()


async def exchange(port: int, data: bytes, until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if until_close:
            return await asyncio.wait_for(reader.read(), 10)
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_connect_to_an_allowed_host_tunnels_both_ways() -> None:
    async with upstream("echo") as up, running(AllowListProxy([f"127.0.0.1:{up.port}"])) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # bytes sent right after the head (a TLS ClientHello) are not lost
        writer.write(f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\n\r\nearly".encode())
        status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert status.startswith(b"HTTP/1.1 200 ")
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"early"
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        await writer.wait_closed()
    assert b"".join(up.received) == b"earlyping"


async def test_plain_http_get_is_forwarded_as_one_request() -> None:
    async with upstream("http") as up, running(AllowListProxy([f"127.0.0.1:{up.port}"])) as port:
        answer = await exchange(
            port,
            f"GET http://127.0.0.1:{up.port}/simple/six/ HTTP/1.1\r\n"
            "Host: other\r\nProxy-Authorization: x\r\nAccept: */*\r\n\r\n".encode(),
        )
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"hello")
    assert up.received == [
        f"GET /simple/six/ HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\nAccept: */*\r\n"
        "Connection: close\r\n\r\n".encode()
    ]


async def test_a_host_not_allowed_gets_403_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals: list[str] = []
    async with upstream("echo") as up:
        proxy = AllowListProxy(["pypi.org"], on_refusal=refusals.append)
        async with running(proxy) as port:
            answer = await exchange(port, f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\n\r\n".encode())
            garbage = await exchange(port, b"\x16\x03\x01\x02\xfc\xfd\r\n\r\n")
            other_port = await exchange(port, b"CONNECT pypi.org:22 HTTP/1.1\r\n\r\n")
    status = answer.split(b"\r\n")[0].decode()
    assert status == (
        f"HTTP/1.1 403 CONNECT 127.0.0.1:{up.port} refused: not an allowed host of builds "
        "(allowed: pypi.org; KF_ENV_ALLOWED_HOSTS adds one)"
    )
    assert answer.endswith(status[len("HTTP/1.1 403 ") :].encode() + b"\n")
    assert garbage.startswith(b"HTTP/1.1 403 refused: the request line is not ASCII")
    assert other_port.startswith(b"HTTP/1.1 403 CONNECT pypi.org:22 refused")
    assert up.connections == 0
    assert len(refusals) == 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def own_address() -> str | None:
    """A non-loopback address of this machine (the source address of its default route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


async def test_a_name_leading_to_the_gateway_itself_is_refused() -> None:
    """DNS rebinding: an allowed name whose answer points at loopback, link-local or one of
    the gateway's own addresses reaches nothing; the address named itself does."""
    answers = {"mirror.example": ["127.0.0.1"], "meta.example": ["169.254.169.254"]}
    own = own_address()
    if own is not None:
        assert is_own_address(ipaddress.ip_address(own))
        answers["self.example"] = [own]

    async def resolve(host: str, port: int) -> list[str]:
        return answers[host]

    async with upstream("echo") as up:
        allowed = [f"{name}:{up.port}" for name in answers] + [f"localhost:{up.port}"]
        proxy = AllowListProxy(allowed, resolve=resolve)
        async with running(proxy) as port:
            for name, (address,) in answers.items():
                answer = await exchange(port, f"CONNECT {name}:{up.port} HTTP/1.1\r\n\r\n".encode())
                assert answer.startswith(
                    f"HTTP/1.1 403 {name}:{up.port} refused: {address} is".encode()
                )
            answers["localhost"] = ["127.0.0.1"]
            named = await exchange(
                port, f"CONNECT localhost:{up.port} HTTP/1.1\r\n\r\n".encode(), until_close=False
            )
            assert named.startswith(b"HTTP/1.1 200 ")
    assert up.connections == 1


async def test_an_upstream_that_refuses_is_a_502_with_the_reason() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    async with running(AllowListProxy([f"127.0.0.1:{closed_port}"])) as port:
        answer = await exchange(port, f"CONNECT 127.0.0.1:{closed_port} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(
        f"HTTP/1.1 502 127.0.0.1:{closed_port} refused the connection".encode()
    )


async def test_closing_the_proxy_ends_open_tunnels() -> None:
    async with upstream("echo") as up:
        proxy = AllowListProxy([f"127.0.0.1:{up.port}"])
        port = await proxy.serve_tcp()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\n\r\n".encode())
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        await asyncio.wait_for(proxy.close(), 10)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def test_a_bad_allowed_host_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'https' is not a valid port"):
        AllowListProxy(["pypi.org:https"])
