"""Encryption at rest of the secrets in kernel records (HMAC keys, CurveZMQ keys, kernel env).

AES-256-GCM with a random 96-bit nonce per value; the key lives in a file outside the store
(mode 0600, created on first use), so a copy of the database alone reveals no kernel's keys.
Gateways that share a store must share the key file.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "kf1:"


class SecretBoxError(ValueError):
    """A value could not be decrypted (wrong key file, or tampered with)."""


def _create_key(path: str) -> bytes:
    """A new key at *path*, or the one another process (a replica starting at the same time)
    put there first: written whole to a private file, then linked into place, which fails if
    the name exists, so no reader ever sees half a key."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    raw = base64.b64encode(secrets.token_bytes(32))
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw + b"\n")
        os.link(tmp, path)
    except FileExistsError:
        with open(path, "rb") as fh:
            raw = fh.read().strip()
    finally:
        os.unlink(tmp)
    return raw


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the secret key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: str) -> SecretBox:
        """Load the key at *path*, creating it (0600, parent 0700) if it does not exist."""
        try:
            with open(path, "rb") as fh:
                raw = fh.read().strip()
        except FileNotFoundError:
            raw = _create_key(path)
        return cls(base64.b64decode(raw))

    def seal(self, value: Any, *, context: str) -> str:
        """Encrypt the JSON of *value*, bound to *context* (e.g. the kernel id)."""
        nonce = secrets.token_bytes(12)
        data = json.dumps(value, separators=(",", ":")).encode()
        sealed = self._aead.encrypt(nonce, data, context.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, token: str, *, context: str) -> Any:
        if not token.startswith(PREFIX):
            raise SecretBoxError("not a sealed value")
        raw = base64.b64decode(token[len(PREFIX) :])
        try:
            data = self._aead.decrypt(raw[:12], raw[12:], context.encode())
        except Exception:
            raise SecretBoxError(
                "cannot decrypt a kernel record: the secret key file differs from the one "
                "that wrote it"
            ) from None
        return json.loads(data)
