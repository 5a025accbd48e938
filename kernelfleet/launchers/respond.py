"""Send a kernel's connection info to the gateway's response listener (kernel side).

This file runs where the kernel runs (a YARN container, a pod, a Docker container), next to
``kernel_launcher.py``, which calls :func:`respond` once the kernel listens on its ports. It uses
the standard library only: a kernel's environment may lack ``cryptography``, so the AEAD
(ChaCha20-Poly1305, RFC 8439) is implemented here in pure Python. The payload is a few hundred
bytes, so speed does not matter. The gateway side is ``kernelfleet.transport.listener``; it
imports the wire constants below, so both sides share one definition of the format.

What the launcher reads from its environment (the gateway's registration puts them there; the
key never appears on a command line):

``KF_RESPONSE_ADDRESS``
    ``host:port`` (``[v6addr]:port`` for IPv6) of the response listener.
``KF_RESPONSE_KEY``
    The 32-byte AEAD key of this one launch, base64 (standard alphabet, padded).
``KF_RESPONSE_KERNEL_ID``
    The kernel id the gateway registered (bound into the AAD).

Wire format, version 1. The launcher opens a TCP connection, writes one frame and reads one
reply line::

    frame  = header body
    header = "KFR" (3 bytes) | version (1 byte, = 1) | body length (2 bytes, big endian)
    body   = kernel-id length (1 byte) | kernel id (ASCII) | nonce (12 bytes) | sealed
    sealed = ChaCha20-Poly1305(key, nonce, plaintext=JSON object, aad)
    aad    = "KFR" | version | kernel-id length | kernel id

The body is at most :data:`MAX_BODY` bytes. The JSON object holds the connection info (``ip``,
the five ports, ``key``, ``signature_scheme``, ``transport``, ``kernel_name``, optional
``curve_publickey``/``curve_secretkey``), ``pid`` and ``timestamp`` (seconds since the epoch);
or, when the launch failed, ``error`` (a message), ``pid`` and ``timestamp``. The reply is one
ASCII line: ``ok`` or a reason code (``auth_failed``, ``replayed``, ``stale``, ...).

A retry after a lost reply resends the *same* frame: the listener remembers the nonces it
accepted, so ``replayed`` (or ``duplicate``, which only a key holder's frame can get) in answer
to a retry means the first copy was accepted.

Run as a script (``python respond.py CONNECTION_FILE``) it sends the connection file's contents,
for a kernel that something else started.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping

TYPE_CHECKING = False  # typing costs ~5 ms at every kernel start: only mypy imports it
if TYPE_CHECKING:
    from typing import Any

#: Where progress and retries are reported (the launcher prints to stderr).
Log = Callable[[str], None]

MAGIC = b"KFR"
VERSION = 1
#: magic, version, body length
HEADER = struct.Struct(">3sBH")
HEADER_SIZE = HEADER.size
#: Largest body a listener reads; a frame announcing more is refused before it is read.
MAX_BODY = 4096
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32
MAX_KERNEL_ID = 128
#: Longest reply line a listener sends.
MAX_REPLY = 64
REPLY_OK = "ok"
#: Answers after which the same frame is sent again (the listener was busy or not reached).
RETRIED = ("unreachable", "busy")

ADDRESS_ENV = "KF_RESPONSE_ADDRESS"
KEY_ENV = "KF_RESPONSE_KEY"
KERNEL_ID_ENV = "KF_RESPONSE_KERNEL_ID"
RESPONSE_ENV = (ADDRESS_ENV, KEY_ENV, KERNEL_ID_ENV)

PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")

_M32 = 0xFFFFFFFF
_P1305 = (1 << 130) - 5
_SIGMA = struct.unpack("<4I", b"expand 32-byte k")


class ResponseError(Exception):
    """The response could not be delivered; ``code`` is the listener's reason or a local one
    (``unreachable``, ``bad_env``, ``too_large``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AuthenticationError(ValueError):
    """An AEAD tag did not verify: wrong key, or the data or AAD were altered."""


# -- ChaCha20 (RFC 8439 section 2.3-2.4) -----------------------------------------------------
def _rotl(v: int, n: int) -> int:
    return ((v << n) & _M32) | (v >> (32 - n))


def _quarter_round(s: list[int], a: int, b: int, c: int, d: int) -> None:
    s[a] = (s[a] + s[b]) & _M32
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & _M32
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & _M32
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & _M32
    s[b] = _rotl(s[b] ^ s[c], 7)


def chacha20_block(key: bytes, counter: int, nonce: bytes) -> bytes:
    """One 64-byte keystream block for a 32-byte *key*, 32-bit *counter*, 12-byte *nonce*."""
    if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError("ChaCha20 needs a 32-byte key and a 12-byte nonce")
    init: list[int] = [
        *_SIGMA,
        *struct.unpack("<8I", key),
        counter & _M32,
        *struct.unpack("<3I", nonce),
    ]
    s = list(init)
    for _ in range(10):
        _quarter_round(s, 0, 4, 8, 12)
        _quarter_round(s, 1, 5, 9, 13)
        _quarter_round(s, 2, 6, 10, 14)
        _quarter_round(s, 3, 7, 11, 15)
        _quarter_round(s, 0, 5, 10, 15)
        _quarter_round(s, 1, 6, 11, 12)
        _quarter_round(s, 2, 7, 8, 13)
        _quarter_round(s, 3, 4, 9, 14)
    return struct.pack("<16I", *((x + y) & _M32 for x, y in zip(s, init, strict=True)))


def chacha20_xor(key: bytes, counter: int, nonce: bytes, data: bytes) -> bytes:
    """*data* XOR the keystream that starts at block *counter*."""
    out = bytearray(len(data))
    for offset in range(0, len(data), 64):
        block = chacha20_block(key, counter + offset // 64, nonce)
        chunk = data[offset : offset + 64]
        out[offset : offset + len(chunk)] = bytes(
            x ^ y for x, y in zip(chunk, block[: len(chunk)], strict=True)
        )
    return bytes(out)


# -- Poly1305 (RFC 8439 section 2.5) ---------------------------------------------------------
def poly1305_mac(message: bytes, one_time_key: bytes) -> bytes:
    """The 16-byte Poly1305 tag of *message* under a 32-byte one-time key."""
    r = int.from_bytes(one_time_key[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(one_time_key[16:32], "little")
    acc = 0
    for offset in range(0, len(message), 16):
        chunk = message[offset : offset + 16] + b"\x01"
        acc = ((acc + int.from_bytes(chunk, "little")) * r) % _P1305
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def _pad16(data: bytes) -> bytes:
    return b"\x00" * (-len(data) % 16)


def _aead_tag(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    one_time_key = chacha20_block(key, 0, nonce)[:32]
    mac_data = (
        aad
        + _pad16(aad)
        + ciphertext
        + _pad16(ciphertext)
        + struct.pack("<QQ", len(aad), len(ciphertext))
    )
    return poly1305_mac(mac_data, one_time_key)


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """ChaCha20-Poly1305 (RFC 8439 section 2.8): ciphertext followed by the 16-byte tag."""
    ciphertext = chacha20_xor(key, 1, nonce, plaintext)
    return ciphertext + _aead_tag(key, nonce, ciphertext, aad)


def aead_decrypt(key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    """The plaintext of *sealed* (ciphertext + tag); raises :class:`AuthenticationError`.

    The tag is compared in constant time before anything is decrypted."""
    if len(sealed) < TAG_SIZE:
        raise AuthenticationError("sealed data shorter than a tag")
    import hmac  # the gateway's side only: launchers never import it

    ciphertext, tag = sealed[:-TAG_SIZE], sealed[-TAG_SIZE:]
    if not hmac.compare_digest(_aead_tag(key, nonce, ciphertext, aad), tag):
        raise AuthenticationError("authentication tag mismatch")
    return chacha20_xor(key, 1, nonce, ciphertext)


# -- frames ----------------------------------------------------------------------------------
def frame_aad(kernel_id_bytes: bytes) -> bytes:
    """The AAD of a version-1 frame: binds the version and the kernel id to the ciphertext."""
    return MAGIC + bytes([VERSION, len(kernel_id_bytes)]) + kernel_id_bytes


def seal_frame(
    kernel_id: str, key: bytes, payload: Mapping[str, Any], nonce: bytes | None = None
) -> bytes:
    """The frame that carries the JSON object *payload* for *kernel_id*, sealed with *key*.

    *nonce* is for tests (known-answer vectors); leave it None: a fresh random one is drawn.
    Raises :class:`ResponseError` (``too_large``) when the body would exceed :data:`MAX_BODY`.
    """
    kid = kernel_id.encode("ascii")
    if not 0 < len(kid) <= MAX_KERNEL_ID:
        raise ValueError("kernel id must be 1-128 ASCII characters")
    if len(key) != KEY_SIZE:
        raise ValueError("the response key must be 32 bytes")
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    plaintext = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")
    sealed = aead_encrypt(key, nonce, plaintext, frame_aad(kid))
    body = bytes([len(kid)]) + kid + nonce + sealed
    if len(body) > MAX_BODY:
        raise ResponseError("too_large", f"the response is {len(body)} bytes (max {MAX_BODY})")
    return HEADER.pack(MAGIC, VERSION, len(body)) + body


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """The 32-byte key of ``KF_RESPONSE_KEY``; raises ValueError (never showing the value)."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{KEY_ENV} is not valid base64") from None
    if len(key) != KEY_SIZE:
        raise ValueError(f"{KEY_ENV} must decode to {KEY_SIZE} bytes, not {len(key)}")
    return key


def split_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); raises ValueError (the gateway checks
    its advertised address with it too)."""
    host, sep, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not sep or not host or not 0 < port < 65536:
        raise ValueError(f"{text!r} is not of the form host:port")
    return host, port


def read_env(environ: Mapping[str, str] | None = None) -> tuple[str, int, bytes, str]:
    """(host, port, key, kernel_id) from the launch environment; raises :class:`ResponseError`
    (``bad_env``) saying which variable is missing or wrong."""
    env = os.environ if environ is None else environ
    missing = [name for name in RESPONSE_ENV if not env.get(name)]
    if missing:
        raise ResponseError("bad_env", "missing environment variable(s): " + ", ".join(missing))
    try:
        host, port = split_address(env[ADDRESS_ENV])
        key = decode_key(env[KEY_ENV])
        kernel_id = env[KERNEL_ID_ENV]
        kernel_id.encode("ascii")
    except (ValueError, UnicodeError) as exc:
        raise ResponseError("bad_env", str(exc)) from None
    return host, port, key, kernel_id


# -- sending ---------------------------------------------------------------------------------
def send_frame(host: str, port: int, frame: bytes, timeout: float) -> str:
    """Send *frame* on a new connection and return the listener's reply line (OSError when
    the connection fails or the listener closes it without a reply)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(frame)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while b"\n" not in reply and len(reply) <= MAX_REPLY:
            chunk = sock.recv(MAX_REPLY)
            if not chunk:
                break
            reply += chunk
    if b"\n" not in reply:
        raise ConnectionError("the listener closed the connection without a reply")
    return reply.split(b"\n", 1)[0].decode("ascii", "replace").strip() or "empty_reply"


def deliver(
    frame: bytes, host: str, port: int, timeout: float = 30.0, log: Log | None = None
) -> None:
    """Send *frame* until the listener answers, retrying connection failures (same frame,
    growing pause) until *timeout* seconds have passed. Returns normally when the listener
    accepted it; raises :class:`ResponseError` with the listener's reason otherwise."""
    deadline = time.monotonic() + timeout
    pause = 0.1
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            code = send_frame(host, port, frame, max(min(remaining, 10.0), 0.1))
        except OSError as exc:
            code, problem = "unreachable", f"was not reached: {exc}"
        else:
            problem = f"refused: {code}"
        if code == REPLY_OK or (code in ("replayed", "duplicate") and attempt > 1):
            return  # a retry told "seen that" / "answered already": only our frame can be
        if code not in RETRIED or time.monotonic() + pause >= deadline:
            raise ResponseError(code, f"the response listener {host}:{port} {problem}")
        if log is not None:
            log(f"the response listener {host}:{port} {problem} (attempt {attempt})")
        time.sleep(pause)  # nothing to wait on but time: the listener is elsewhere
        pause = min(pause * 2, 2.0)


def respond(
    payload: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    log: Log | None = None,
) -> None:
    """Seal *payload* (connection info, or ``{"error": ...}``) for the launch described by the
    environment and deliver it; ``pid`` and ``timestamp`` are added when absent."""
    host, port, key, kernel_id = read_env(environ)
    body = dict(payload)
    body.setdefault("pid", os.getpid())
    body["timestamp"] = time.time()
    deliver(seal_frame(kernel_id, key, body), host, port, timeout, log)


def connection_payload(info: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a connection file that the listener takes."""
    keep = (*PORT_NAMES, "ip", "key", "signature_scheme", "transport", "kernel_name")
    out = {name: info[name] for name in keep if name in info}
    if info.get("curve_publickey") and info.get("curve_secretkey"):
        out["curve_publickey"] = info["curve_publickey"]
        out["curve_secretkey"] = info["curve_secretkey"]
    return out


def main(argv: list[str] | None = None) -> int:
    """``python respond.py CONNECTION_FILE [--pid PID]``: send a connection file's contents."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("connection_file")
    parser.add_argument("--pid", type=int, default=None, help="the kernel's pid (default: ours)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds; default 30")
    args = parser.parse_args(argv)
    with open(args.connection_file, encoding="utf-8") as f:
        info = json.load(f)
    payload = connection_payload(info)
    if args.pid is not None:
        payload["pid"] = args.pid
    try:
        respond(payload, timeout=args.timeout, log=lambda m: print(m, file=sys.stderr))
    except ResponseError as exc:
        print(f"kernelfleet respond: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
