"""Dashboard sessions and CSRF tokens: signed values, no server-side store (pure but for
:func:`load_key`).

The session cookie never holds a token. It holds a :class:`Session` (the admin's name, a random
session id, when it was issued and when it expires, and how the admin logged in) as base64url
JSON, followed by an HMAC-SHA256 of it under the dashboard key. A changed byte, a value signed
with another key, or an expired session reads as no session at all.

``via`` and ``fp`` bind the session to the credential it was made from: ``fp`` is an HMAC of
the token under the same key (a fingerprint, not the token: the cookie reveals nothing that
authenticates to the API), so the gateway can end the session when that token is no longer
configured, or no longer an admin's (:meth:`kernelfleet.dashboard.core.Dashboard.still_admin`).

CSRF tokens are derived, not stored: the HMAC of the session id (``csrf|<sid>``), so a page
holds the token of its own session and nothing else matches it. Before login there is no
session; the login form's token is the HMAC of a random nonce kept in a short-lived cookie of
its own (:meth:`SessionCodec.login_token`). Every HMAC input starts with its purpose, so no
signed value of one kind can stand for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass

#: How a session's admin logged in: the shared token, a per-user token, or an open gateway
#: (``auth_enabled`` off); "other" for credentials the dashboard cannot re-check.
VIAS = ("shared", "user", "open", "other")
_SID = re.compile(r"[A-Za-z0-9_-]{16,64}")
KEY_BYTES = 32


@dataclass(frozen=True)
class Session:
    user: str
    sid: str
    issued: float
    expires: float
    via: str
    fp: str = ""

    def expired(self, now: float) -> bool:
        return now >= self.expires


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Signs and checks sessions, CSRF tokens and credential fingerprints with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < KEY_BYTES:
            raise ValueError(f"the dashboard key must be at least {KEY_BYTES} bytes")
        self._key = key

    def _mac(self, purpose: str, data: bytes) -> bytes:
        return hmac.new(self._key, purpose.encode() + b"|" + data, hashlib.sha256).digest()

    # -- sessions -----------------------------------------------------------------------------

    def issue(self, user: str, via: str, fp: str, *, now: float, lifetime: float) -> Session:
        if via not in VIAS:
            raise ValueError(f"unknown login method {via!r}")
        return Session(user, secrets.token_urlsafe(18), now, now + lifetime, via, fp)

    def encode(self, session: Session) -> str:
        payload = _b64(json.dumps(asdict(session), separators=(",", ":")).encode())
        return f"{payload}.{_b64(self._mac('session', payload.encode()))}"

    def decode(self, value: str | None, *, now: float) -> Session | None:
        """The session in cookie *value*, or None if it is missing, forged or expired."""
        if not value or value.count(".") != 1 or len(value) > 4096:
            return None
        payload, mac = value.split(".")
        # compared as text: base64 decoding ignores a last character's spare bits, so two
        # spellings would decode to one signature
        expected = _b64(self._mac("session", payload.encode()))
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            return None
        try:
            fields = json.loads(_unb64(payload))
            session = Session(
                user=str(fields["user"]),
                sid=str(fields["sid"]),
                issued=float(fields["issued"]),
                expires=float(fields["expires"]),
                via=str(fields["via"]),
                fp=str(fields.get("fp", "")),
            )
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None
        if not _SID.fullmatch(session.sid) or session.via not in VIAS or session.expired(now):
            return None
        return session

    # -- CSRF -------------------------------------------------------------------------------

    def csrf_token(self, session: Session) -> str:
        return _b64(self._mac("csrf", session.sid.encode()))

    def csrf_ok(self, session: Session, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(
            (presented or "").encode(), self.csrf_token(session).encode()
        )

    def login_token(self, nonce: str) -> str:
        """The login form's CSRF token for the nonce in its cookie."""
        return _b64(self._mac("login", nonce.encode()))

    def login_ok(self, nonce: str | None, presented: str | None) -> bool:
        if not nonce or not presented or not _SID.fullmatch(nonce):
            return False
        return hmac.compare_digest(presented.encode(), self.login_token(nonce).encode())

    # -- credentials ----------------------------------------------------------------------

    def fingerprint(self, token: str) -> str:
        """What the session keeps of the token it was made from (not the token)."""
        return _b64(self._mac("credential", token.encode()))[:32]


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def load_key(path: str) -> bytes:
    """The key in file *path* (base64), created (0600, directory 0700) if it does not exist."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read().strip()
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        raw = base64.b64encode(secrets.token_bytes(KEY_BYTES))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another gateway made it in the meantime: use theirs
            return load_key(path)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw + b"\n")
    try:
        key = base64.b64decode(raw, validate=True)
    except binascii.Error:
        raise ValueError(f"{path} holds no base64 key; delete it to make a new one") from None
    if len(key) < KEY_BYTES:
        raise ValueError(f"{path} holds a key shorter than {KEY_BYTES} bytes")
    return key
