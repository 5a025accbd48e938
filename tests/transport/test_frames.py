"""The parsers of untrusted frames and payloads (pure functions): any bytes give a parsed value
or a :class:`FrameError` with a reason, never another exception; what a launcher seals parses
back to what it sent."""

from __future__ import annotations

import contextlib
import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernelfleet.launchers import respond
from kernelfleet.transport.listener import (
    FailureReport,
    Frame,
    FrameError,
    Reason,
    body_length,
    open_frame,
    parse_frame,
    parse_payload,
)
from tests.fuzz.strategies import fuzz_settings, json_values
from tests.transport.helpers import DROP, PORTS, frame, info

KEY = bytes(range(32))


def header(length: int, magic: bytes = b"KFR", version: int = 1) -> bytes:
    return struct.pack(">3sBH", magic, version, length)


# -- frames ------------------------------------------------------------------------------------
def test_a_sealed_frame_parses_and_opens_to_the_payload_sent() -> None:
    payload = info()
    parsed = parse_frame(frame("6e7d2293-b825-464e-8d0f-a0e77d9e48b4", KEY, payload))
    assert parsed.kernel_id == "6e7d2293-b825-464e-8d0f-a0e77d9e48b4"
    assert len(parsed.nonce) == 12
    assert json.loads(open_frame(parsed, KEY)) == payload


def test_each_frame_has_a_fresh_nonce() -> None:
    nonces = {parse_frame(frame("k", KEY)).nonce for _ in range(20)}
    assert len(nonces) == 20


def test_a_frame_opened_with_another_key_fails_authentication() -> None:
    with pytest.raises(FrameError) as caught:
        open_frame(parse_frame(frame("k", KEY)), bytes(32))
    assert caught.value.reason is Reason.AUTH_FAILED


def test_the_kernel_id_is_bound_to_the_ciphertext() -> None:
    """A frame moved to another kernel id (same length, re-framed) does not open."""
    original = parse_frame(frame("kernel-a", KEY))
    moved = Frame("kernel-b", original.nonce, original.sealed, b"KFR\x01\x08kernel-b")
    with pytest.raises(FrameError) as caught:
        open_frame(moved, KEY)
    assert caught.value.reason is Reason.AUTH_FAILED


def test_the_version_is_bound_to_the_ciphertext() -> None:
    original = parse_frame(frame("k", KEY))
    other_version = Frame("k", original.nonce, original.sealed, b"KFR\x02\x01k")
    with pytest.raises(FrameError):
        open_frame(other_version, KEY)


def valid() -> bytes:
    return frame("k1", KEY)


MALFORMED = {
    "empty": (b"", Reason.TRUNCATED),
    "short header": (b"KFR", Reason.TRUNCATED),
    "http request": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Reason.BAD_MAGIC),
    "tls hello": (bytes.fromhex("16030100a5010000a10303") + bytes(40), Reason.BAD_MAGIC),
    "version 0": (header(100, version=0) + bytes(100), Reason.BAD_VERSION),
    "version 2": (header(100, version=2) + bytes(100), Reason.BAD_VERSION),
    "too large": (header(respond.MAX_BODY + 1), Reason.TOO_LARGE),
    "largest length": (header(65535), Reason.TOO_LARGE),
    "too short for a tag": (header(20) + bytes(20), Reason.MALFORMED),
    "truncated body": (valid()[:-1], Reason.TRUNCATED),
    "trailing bytes": (valid() + b"x", Reason.MALFORMED),
    "id longer than body": (header(30) + b"\xff" + bytes(29), Reason.MALFORMED),
    "empty id": (header(30) + b"\x00" + bytes(29), Reason.MALFORMED),
    "id with slash": (header(31) + b"\x02a/" + bytes(28), Reason.MALFORMED),
    "id with newline": (header(31) + b"\x02a\n" + bytes(28), Reason.MALFORMED),
    "id not ascii": (header(31) + b"\x02\xc3\xa9" + bytes(28), Reason.MALFORMED),
    "id starting with dot": (header(31) + b"\x02.." + bytes(28), Reason.MALFORMED),
}


@pytest.mark.parametrize("data,reason", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_are_refused_with_their_reason(data: bytes, reason: Reason) -> None:
    with pytest.raises(FrameError) as caught:
        parse_frame(data)
    assert caught.value.reason is reason


def test_a_header_announcing_too_much_is_refused_before_the_body_is_read() -> None:
    with pytest.raises(FrameError) as caught:
        body_length(header(respond.MAX_BODY + 1))
    assert caught.value.reason is Reason.TOO_LARGE
    assert body_length(header(respond.MAX_BODY)) == respond.MAX_BODY


@fuzz_settings(500)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_frame_or_a_frame_error(data: bytes) -> None:
    try:
        parsed = parse_frame(data)
    except FrameError as exc:
        assert isinstance(exc.reason, Reason)
        return
    assert 1 <= len(parsed.kernel_id) <= 128 and len(parsed.nonce) == 12


@fuzz_settings(300)
@given(st.binary(min_size=6, max_size=6))
def test_any_header_gives_a_length_within_bounds_or_a_frame_error(data: bytes) -> None:
    try:
        length = body_length(data)
    except FrameError:
        return
    assert 30 <= length <= respond.MAX_BODY


@fuzz_settings(300)
@given(
    prefix_len=st.integers(min_value=0, max_value=200),
    noise=st.binary(max_size=40),
    at=st.integers(min_value=0),
)
def test_mutated_valid_frames_parse_or_fail_cleanly(prefix_len: int, noise: bytes, at: int) -> None:
    data = bytearray(valid())
    cut = data[: max(len(data) - prefix_len, 0)]
    position = at % (len(cut) + 1)
    mutated = bytes(cut[:position]) + noise + bytes(cut[position + len(noise) :])
    try:
        parsed = parse_frame(mutated)
    except FrameError:
        return
    with contextlib.suppress(FrameError):
        parse_payload(open_frame(parsed, KEY))


# -- payloads ----------------------------------------------------------------------------------
def test_a_valid_payload_gives_the_connection_info() -> None:
    parsed = parse_payload(json.dumps(info(extra="dropped")).encode())
    assert not isinstance(parsed, FailureReport)
    assert {k: parsed[k] for k in PORTS} == PORTS  # type: ignore[literal-required]
    assert parsed["ip"] == "10.0.0.7" and parsed["key"] == "a" * 64
    assert parsed["signature_scheme"] == "hmac-sha256" and parsed["transport"] == "tcp"
    assert parsed["pid"] == 4242 and "extra" not in parsed and "curve_publickey" not in parsed


def test_curve_keys_are_taken_when_both_are_valid_z85() -> None:
    public, secret = (
        "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
        "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6",
    )
    parsed = parse_payload(
        json.dumps(info(curve_publickey=public, curve_secretkey=secret)).encode()
    )
    assert not isinstance(parsed, FailureReport)
    assert (parsed["curve_publickey"], parsed["curve_secretkey"]) == (public, secret)


def test_a_wildcard_or_host_name_ip_is_accepted() -> None:
    for ip in ("0.0.0.0", "::", "fe80::1", "node-7.cluster.local"):
        parsed = parse_payload(json.dumps(info(ip=ip)).encode())
        assert not isinstance(parsed, FailureReport)


def test_an_error_report_gives_a_failure_report() -> None:
    parsed = parse_payload(json.dumps({"error": "boom", "pid": 7, "timestamp": 1.5}).encode())
    assert parsed == FailureReport("boom", 7, 1.5)


INVALID: dict[str, bytes | dict[str, Any]] = {
    "not json": b"{nope",
    "not utf-8": b"\xff\xfe{}",
    "a list": b"[1, 2]",
    "a string": b'"ip"',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "huge integer": b'{"pid": ' + b"9" * 5000 + b"}",
    "port 0": info(shell_port=0),
    "port 65536": info(hb_port=65536),
    "negative port": info(stdin_port=-1),
    "port as text": info(iopub_port="40002"),
    "port as float": info(control_port=40004.0),
    "port as bool": info(hb_port=True),
    "same port twice": info(hb_port=40001),
    "port missing": info(control_port=DROP),
    "ip missing": info(ip=DROP),
    "ip empty": info(ip=""),
    "ip a url": info(ip="tcp://10.0.0.7"),
    "ip with space": info(ip="10.0.0.7 x"),
    "ip a number": info(ip=10),
    "transport ipc": info(transport="ipc"),
    "key missing": info(key=DROP),
    "key empty": info(key=""),
    "key with newline": info(key="ab\ncd"),
    "key not text": info(key=["a"]),
    "scheme unknown": info(signature_scheme="none"),
    "kernel name not text": info(kernel_name=None),
    "pid missing": info(pid=DROP),
    "pid zero": info(pid=0),
    "pid as bool": info(pid=True),
    "timestamp missing": info(timestamp=DROP),
    "timestamp text": info(timestamp="now"),
    "timestamp bool": info(timestamp=False),
    "only a public curve key": info(curve_publickey="x" * 40),
    "curve key too short": info(curve_publickey="x" * 39, curve_secretkey="y" * 40),
    "error not text": {"error": 5, "pid": 1, "timestamp": 1.0},
}


@pytest.mark.parametrize("payload", INVALID.values(), ids=INVALID.keys())
def test_invalid_payloads_are_refused_as_invalid(payload: bytes | dict[str, Any]) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(FrameError) as caught:
        parse_payload(data)
    assert caught.value.reason is Reason.INVALID


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_timestamps_are_refused(value: str) -> None:
    text = json.dumps(info(timestamp=0)).replace('"timestamp": 0', f'"timestamp": {value}')
    assert not math.isfinite(json.loads(text)["timestamp"])
    with pytest.raises(FrameError):
        parse_payload(text.encode())


@fuzz_settings(400)
@given(st.binary(max_size=400))
def test_any_plaintext_gives_info_a_report_or_a_frame_error(data: bytes) -> None:
    try:
        parse_payload(data)
    except FrameError as exc:
        assert exc.reason is Reason.INVALID


FIELD_NAMES = [*PORTS, "ip", "transport", "key", "signature_scheme", "kernel_name", "pid",
               "timestamp", "curve_publickey", "curve_secretkey", "error"]  # fmt: skip


@fuzz_settings(400)
@given(
    changes=st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=4),
    drop=st.sets(st.sampled_from(FIELD_NAMES), max_size=2),
)
def test_any_field_values_give_valid_info_a_report_or_a_frame_error(
    changes: dict[str, Any], drop: set[str]
) -> None:
    payload = {k: v for k, v in info(**changes).items() if k not in drop}
    try:
        parsed = parse_payload(json.dumps(payload).encode())
    except FrameError as exc:
        assert exc.reason is Reason.INVALID
        return
    if isinstance(parsed, FailureReport):
        assert isinstance(parsed.message, str)
        return
    ports = [parsed[name] for name in PORTS]  # type: ignore[literal-required]
    assert all(type(p) is int and 0 < p < 65536 for p in ports) and len(set(ports)) == 5
    assert parsed["transport"] == "tcp" and parsed["key"]
