"""The listener over real TCP on 127.0.0.1: one reason line per connection, then close; slow,
oversized, truncated and surplus connections cost bounded time and leave no task behind; one
listener per event loop, configured by the KF_RESPONSE_* options."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import AsyncIterator

import pytest
from traitlets import TraitError

from kernelfleet.config import env_names
from kernelfleet.errors import LaunchFailed
from kernelfleet.launchers import respond
from kernelfleet.transport.listener import (
    Reason,
    ResponseListener,
    get_listener,
    reset_listeners,
)
from tests.transport.helpers import frame, info, wrong_key


async def exchange(port: int, data: bytes, *, eof: bool = True, limit: float = 5) -> bytes:
    """Send *data*, then read everything the listener sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if eof:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), limit)
    finally:
        writer.close()
        await writer.wait_closed()


def port_of(listener: ResponseListener) -> int:
    return listener.bound_address[1]


async def no_task_left(listener: ResponseListener) -> bool:
    """Whether every connection's handler ends within a second (after its client closed)."""
    if listener._connections:
        await asyncio.wait(list(listener._connections), timeout=1)
    return not listener._connections


async def test_a_frame_over_tcp_is_answered_ok_and_resolves_the_launch(
    listener: ResponseListener,
) -> None:
    with await listener.expect("k1") as reg:
        assert await exchange(port_of(listener), frame("k1", reg.key)) == b"ok\n"
        assert (await reg.wait())["pid"] == 4242
    assert await no_task_left(listener)


@pytest.mark.parametrize(
    "data,answer",
    [
        (b"GET / HTTP/1.1\r\n\r\n", b"bad_magic\n"),
        (b"KFR\x01\xff\xff", b"too_large\n"),
        (b"KFR\x07\x00\x40", b"bad_version\n"),
        (b"KFR\x01\x00\x40" + bytes(10), b"truncated\n"),
        (b"KF", b"truncated\n"),
    ],
)
async def test_bad_frames_over_tcp_get_their_reason(
    listener: ResponseListener, data: bytes, answer: bytes
) -> None:
    assert await exchange(port_of(listener), data) == answer


async def test_an_oversized_frame_is_refused_without_reading_its_body(
    listener: ResponseListener,
) -> None:
    """The header alone is answered: the client never sends the body it announced."""
    assert await exchange(port_of(listener), b"KFR\x01\x10\x01", eof=False) == b"too_large\n"


async def test_a_forged_frame_over_tcp_is_refused(listener: ResponseListener) -> None:
    with await listener.expect("k1") as reg:
        assert await exchange(port_of(listener), frame("k1", wrong_key())) == b"auth_failed\n"
        assert not reg.done


async def test_a_slow_sender_is_cut_off_after_the_read_timeout(
    listener: ResponseListener, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    answer = await exchange(port_of(listener), b"KFR\x01", eof=False)
    assert answer == b"timeout\n"
    assert 0.9 <= time.monotonic() - started < 3
    assert any(
        "timeout" in r.getMessage() and "127.0.0.1" in r.getMessage() for r in caplog.records
    )
    assert await no_task_left(listener)


async def test_connections_beyond_the_limit_are_answered_busy() -> None:
    lst = ResponseListener(ip="127.0.0.1", port=0, max_connections=2, read_timeout=5.0)
    await lst.start()
    held = [await asyncio.open_connection("127.0.0.1", port_of(lst)) for _ in range(2)]
    try:
        await asyncio.sleep(0.05)
        assert await exchange(port_of(lst), b"", eof=False, limit=2) == b"busy\n"
    finally:
        for _, writer in held:
            writer.close()
            await writer.wait_closed()
        await lst.close()


async def test_a_connection_that_sends_nothing_is_not_a_warning(
    listener: ResponseListener, caplog: pytest.LogCaptureFixture
) -> None:
    assert await exchange(port_of(listener), b"") == b"truncated\n"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_closing_drops_open_connections_and_leaves_no_task() -> None:
    lst = ResponseListener(ip="127.0.0.1", port=0, read_timeout=30.0)
    await lst.start()
    port = port_of(lst)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"KFR")
    await asyncio.sleep(0.05)
    assert len(lst._connections) == 1
    await asyncio.wait_for(lst.close(), 2)
    assert not lst._connections
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_many_launchers_at_once_are_all_answered(listener: ResponseListener) -> None:
    regs = [await listener.expect(f"k{i}") for i in range(30)]
    answers = await asyncio.gather(
        *(exchange(port_of(listener), frame(r.kernel_id, r.key)) for r in regs)
    )
    assert answers == [b"ok\n"] * 30
    assert [(await r.wait())["pid"] for r in regs] == [4242] * 30
    for r in regs:
        r.cancel()


# -- the launcher's client (respond.py) against the listener -------------------------------------
async def test_respond_delivers_from_the_launch_environment(listener: ResponseListener) -> None:
    with await listener.expect("k1") as reg:
        await asyncio.to_thread(respond.respond, info(pid=77), reg.env, 5.0)
        assert (await reg.wait())["pid"] == 77


async def test_respond_raises_the_listeners_reason(listener: ResponseListener) -> None:
    with await listener.expect("k1") as reg:
        env = dict(reg.env, KF_RESPONSE_KEY=respond.encode_key(wrong_key()))
        with pytest.raises(respond.ResponseError) as caught:
            await asyncio.to_thread(respond.respond, info(), env, 5.0)
        assert caught.value.code == "auth_failed"


async def test_a_retry_after_a_lost_reply_counts_as_delivered(
    listener: ResponseListener,
) -> None:
    """A proxy passes the first copy to the listener but drops its answer; the launcher resends
    the same frame, gets 'replayed', and knows the first copy was accepted."""
    copies: list[bytes] = []

    async def lossy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        copies.append(data)
        if len(copies) > 1:
            writer.write(await exchange(port_of(listener), data))
        else:
            listener.receive(data, "127.0.0.1")
        writer.close()

    proxy = await asyncio.start_server(lossy, "127.0.0.1", 0)
    try:
        proxy_port = proxy.sockets[0].getsockname()[1]
        with await listener.expect("k1") as reg:
            data = frame("k1", reg.key)
            await asyncio.to_thread(respond.deliver, data, "127.0.0.1", proxy_port, 5.0)
            assert copies == [data, data]
            assert (await reg.wait())["pid"] == 4242
    finally:
        proxy.close()
        await proxy.wait_closed()


def test_respond_gives_up_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(respond.ResponseError) as caught:
            respond.deliver(b"x", "127.0.0.1", port, timeout=0.5)
    assert caught.value.code == "unreachable"


@pytest.mark.parametrize(
    "env,needle",
    [
        ({}, "KF_RESPONSE_ADDRESS, KF_RESPONSE_KEY, KF_RESPONSE_KERNEL_ID"),
        ({"KF_RESPONSE_ADDRESS": "h:1", "KF_RESPONSE_KEY": "!!", "KF_RESPONSE_KERNEL_ID": "k"},
         "not valid base64"),
        ({"KF_RESPONSE_ADDRESS": "h:1", "KF_RESPONSE_KEY": "AAAA", "KF_RESPONSE_KERNEL_ID": "k"},
         "32 bytes"),
        ({"KF_RESPONSE_ADDRESS": "h", "KF_RESPONSE_KEY": "AAAA", "KF_RESPONSE_KERNEL_ID": "k"},
         "host:port"),
    ],
)  # fmt: skip
def test_respond_says_which_variable_is_wrong(env: dict[str, str], needle: str) -> None:
    with pytest.raises(respond.ResponseError) as caught:
        respond.read_env(env)
    assert caught.value.code == "bad_env" and needle in caught.value.message


def test_respond_parses_ipv6_addresses() -> None:
    assert respond.split_address("[fe80::1]:8877") == ("fe80::1", 8877)
    assert respond.split_address("gw.example:1") == ("gw.example", 1)


# -- configuration and the per-loop listener -------------------------------------------------
@pytest.fixture
async def fresh_listeners() -> AsyncIterator[None]:
    await reset_listeners()
    yield
    await reset_listeners()


def test_every_option_names_its_variable_unit_and_default() -> None:
    assert env_names(ResponseListener) == {
        "ip": "KF_RESPONSE_IP",
        "port": "KF_RESPONSE_PORT",
        "address": "KF_RESPONSE_ADDRESS",
        "read_timeout": "KF_RESPONSE_READ_TIMEOUT",
        "max_connections": "KF_RESPONSE_MAX_CONNECTIONS",
        "max_clock_skew": "KF_RESPONSE_MAX_CLOCK_SKEW",
    }
    for trait in ResponseListener.class_traits(config=True).values():
        assert "Default:" in trait.help and "Environment variable: KF_RESPONSE_" in trait.help
    for name in ("read_timeout", "max_clock_skew"):
        assert "Seconds" in ResponseListener.class_traits()[name].help


async def test_one_listener_per_loop_configured_from_the_environment(
    fresh_listeners: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KF_RESPONSE_IP", "127.0.0.1")
    monkeypatch.setenv("KF_RESPONSE_PORT", "0")
    monkeypatch.setenv("KF_RESPONSE_ADDRESS", "gateway.example:9999")
    first = await get_listener()
    assert await get_listener() is first
    assert first.bound_address[0] == "127.0.0.1" and first.bound_address[1] != 0
    with await first.expect("k1") as reg:
        assert reg.env["KF_RESPONSE_ADDRESS"] == "gateway.example:9999"
    port = first.bound_address[1]
    await reset_listeners()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    assert await get_listener() is not first


async def test_concurrent_first_uses_start_one_listener(
    fresh_listeners: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KF_RESPONSE_IP", "127.0.0.1")
    monkeypatch.setenv("KF_RESPONSE_PORT", "0")
    listeners = await asyncio.gather(*(get_listener() for _ in range(5)))
    assert len({id(x) for x in listeners}) == 1


async def test_a_wildcard_bind_advertises_a_public_address() -> None:
    lst = ResponseListener(ip="0.0.0.0", port=0)
    await lst.start()
    try:
        host, _, port = lst.advertised_address.rpartition(":")
        assert int(port) == lst.bound_address[1] and host not in ("0.0.0.0", "")
    finally:
        await lst.close()


async def test_a_port_in_use_is_a_launch_failure_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        lst = ResponseListener(ip="127.0.0.1", port=taken.getsockname()[1])
        with pytest.raises(LaunchFailed, match="KF_RESPONSE_PORT"):
            await lst.start()


@pytest.mark.parametrize("address", ["gw:0", "gw:x", "gw", "[fe80::1]", ":80"])
def test_an_advertised_address_must_be_host_and_port(address: str) -> None:
    with pytest.raises(TraitError):
        ResponseListener(address=address)


def test_a_port_out_of_range_is_refused() -> None:
    with pytest.raises(TraitError):
        ResponseListener(port=70000)


@pytest.mark.parametrize("seed", range(12))
async def test_random_bytes_over_tcp_get_one_reason_line_and_leave_no_task(
    listener: ResponseListener, seed: int
) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.randrange(0, 5000))
    if seed % 3 == 0:  # past the magic and version checks
        data = b"KFR\x01" + data
    answer = await exchange(port_of(listener), data)
    assert answer.endswith(b"\n") and answer.count(b"\n") == 1
    assert answer[:-1].decode() in {r.value for r in Reason} - {"ok"}
    assert await no_task_left(listener)
