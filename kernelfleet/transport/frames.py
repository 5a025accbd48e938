"""The response listener's wire format, gateway side: pure parsers of untrusted frames.

Every function here is a pure function of bytes that raises only :class:`FrameError` (with a
:class:`Reason` code the listener answers). The sending side, ``launchers/respond.py``
(standard library only), defines the format; its constants are imported from there.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import json
import math
import re
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from kernelfleet.launchers import respond as wire

PORT_NAMES: tuple[str, ...] = wire.PORT_NAMES

_MIN_BODY = 1 + 1 + wire.NONCE_SIZE + wire.TAG_SIZE
KERNEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_PRINTABLE = re.compile(r"[\x21-\x7e]{1,512}")
_SCHEME = re.compile(r"hmac-[a-z0-9]{1,16}")
_Z85_KEY = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")


class Reason(enum.StrEnum):
    """The one-line answer to a launcher: ``ok`` or why its frame was refused."""

    OK = "ok"
    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    TOO_LARGE = "too_large"
    TRUNCATED = "truncated"
    MALFORMED = "malformed"
    UNKNOWN_KERNEL = "unknown_kernel"
    AUTH_FAILED = "auth_failed"
    REPLAYED = "replayed"
    DUPLICATE = "duplicate"  # the registration already accepted another payload
    STALE = "stale"
    INVALID = "invalid"  # authentic, but not acceptable connection info
    TIMEOUT = "timeout"
    BUSY = "busy"


class FrameError(Exception):
    """Untrusted bytes that are not an acceptable frame or payload (the only exception the
    parsers raise). *detail* is for the log: it never holds key material."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Frame:
    """A well-formed version-1 frame, not yet authenticated."""

    kernel_id: str
    nonce: bytes
    sealed: bytes  # ciphertext + tag
    aad: bytes


class ConnectionInfo(TypedDict):
    """A kernel's connection info as its launcher sent it (``key`` as text, as in a
    connection file; jupyter_client's ``KernelManager`` wants ``key.encode()``)."""

    ip: str
    transport: str
    shell_port: int
    iopub_port: int
    stdin_port: int
    control_port: int
    hb_port: int
    key: str
    signature_scheme: str
    kernel_name: str
    pid: int
    timestamp: float
    curve_publickey: NotRequired[str]
    curve_secretkey: NotRequired[str]


@dataclass(frozen=True)
class FailureReport:
    """A launcher's sealed report that the kernel could not be started."""

    message: str
    pid: int
    timestamp: float


# -- pure parsers of untrusted input -----------------------------------------------------------
def body_length(header: bytes) -> int:
    """The body length a frame header announces, validated before the body is read."""
    if len(header) != wire.HEADER_SIZE:
        raise FrameError(Reason.TRUNCATED, f"header of {len(header)} bytes")
    magic, version, length = wire.HEADER.unpack(header)
    if magic != wire.MAGIC:
        raise FrameError(Reason.BAD_MAGIC, "not a kernelfleet response frame")
    if version != wire.VERSION:
        raise FrameError(Reason.BAD_VERSION, f"frame version {version}, expected {wire.VERSION}")
    if length > wire.MAX_BODY:
        raise FrameError(Reason.TOO_LARGE, f"body of {length} bytes (max {wire.MAX_BODY})")
    if length < _MIN_BODY:
        raise FrameError(Reason.MALFORMED, f"body of {length} bytes is too short")
    return int(length)


def parse_frame(data: bytes) -> Frame:
    """A whole frame (header and body) → :class:`Frame`; raises :class:`FrameError` only."""
    length = body_length(data[: wire.HEADER_SIZE])
    body = data[wire.HEADER_SIZE :]
    if len(body) != length:
        reason = Reason.TRUNCATED if len(body) < length else Reason.MALFORMED
        raise FrameError(reason, f"body of {len(body)} bytes, header says {length}")
    kid_len = body[0]
    if len(body) < 1 + kid_len + wire.NONCE_SIZE + wire.TAG_SIZE:
        raise FrameError(Reason.MALFORMED, "kernel id longer than the body allows")
    kid = body[1 : 1 + kid_len].decode("latin-1")
    if not KERNEL_ID.fullmatch(kid):
        raise FrameError(Reason.MALFORMED, "invalid kernel id")
    nonce_end = 1 + kid_len + wire.NONCE_SIZE
    aad = wire.MAGIC + bytes([wire.VERSION]) + body[: 1 + kid_len]
    return Frame(kid, body[1 + kid_len : nonce_end], body[nonce_end:], aad)


def open_frame(frame: Frame, key: bytes) -> bytes:
    """The plaintext of *frame* under *key*; :class:`FrameError` (auth_failed) otherwise."""
    try:
        return ChaCha20Poly1305(key).decrypt(frame.nonce, frame.sealed, frame.aad)
    except InvalidTag:
        raise FrameError(Reason.AUTH_FAILED, "authentication failed (wrong key?)") from None


def _int(payload: dict[str, Any], name: str, lo: int, hi: int) -> int:
    value = payload.get(name)
    if type(value) is not int or not lo <= value <= hi:
        raise FrameError(Reason.INVALID, f"{name} must be an integer in {lo}..{hi}")
    return value


def _text(payload: dict[str, Any], name: str, pattern: re.Pattern[str] | None) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
        raise FrameError(Reason.INVALID, f"{name} is missing or not acceptable")
    return value


def _ip(payload: dict[str, Any]) -> str:
    value = _text(payload, "ip", None)
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(value))
    if not _HOSTNAME.fullmatch(value):
        raise FrameError(Reason.INVALID, "ip is neither an address nor a host name")
    return value


def parse_payload(plaintext: bytes) -> ConnectionInfo | FailureReport:
    """Decrypted bytes → the connection info or a failure report; raises :class:`FrameError`
    (``invalid``) only. Unknown fields are dropped."""
    try:
        payload = json.loads(plaintext)
    except (ValueError, RecursionError):
        raise FrameError(Reason.INVALID, "payload is not JSON") from None
    if not isinstance(payload, dict):
        raise FrameError(Reason.INVALID, "payload is not a JSON object")
    pid = _int(payload, "pid", 1, 2**31 - 1)
    timestamp = payload.get("timestamp")
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        raise FrameError(Reason.INVALID, "timestamp must be a number")
    if not math.isfinite(timestamp):
        raise FrameError(Reason.INVALID, "timestamp must be a finite number")
    if "error" in payload:
        message = _text(payload, "error", None)[:2000]
        return FailureReport(message, pid, float(timestamp))
    ports = {name: _int(payload, name, 1, 65535) for name in PORT_NAMES}
    if len(set(ports.values())) != len(ports) or payload.get("transport") != "tcp":
        raise FrameError(Reason.INVALID, "the five ports must differ and transport be 'tcp'")
    info: dict[str, Any] = {
        **ports,
        "ip": _ip(payload),
        "transport": "tcp",
        "key": _text(payload, "key", _PRINTABLE),
        "signature_scheme": _text(payload, "signature_scheme", _SCHEME),
        "kernel_name": _text(payload, "kernel_name", None)[:255],
        "pid": pid,
        "timestamp": float(timestamp),
    }
    if "curve_publickey" in payload or "curve_secretkey" in payload:
        info["curve_publickey"] = _text(payload, "curve_publickey", _Z85_KEY)
        info["curve_secretkey"] = _text(payload, "curve_secretkey", _Z85_KEY)
    return cast(ConnectionInfo, info)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
