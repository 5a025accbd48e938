"""The dashboard's pure security parts: signed sessions and their expiry, CSRF tokens, the
cross-origin check, the cookie attributes, the key file."""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from kernelfleet.dashboard import guard
from kernelfleet.dashboard.session import SessionCodec, load_key

KEY = b"k" * 32
NOW = 1_800_000_000.0


def codec(key: bytes = KEY) -> SessionCodec:
    return SessionCodec(key)


def test_a_session_reads_back_until_it_expires() -> None:
    c = codec()
    session = c.issue("carol", "user", c.fingerprint("tok"), now=NOW, lifetime=3600)
    value = c.encode(session)
    assert c.decode(value, now=NOW + 10) == session
    assert c.decode(value, now=NOW + 3599) == session
    assert c.decode(value, now=NOW + 3600) is None


def test_the_cookie_holds_neither_the_token_nor_anything_that_authenticates() -> None:
    c = codec()
    session = c.issue("carol", "user", c.fingerprint("secret-token"), now=NOW, lifetime=60)
    value = c.encode(session)
    payload = base64.urlsafe_b64decode(value.split(".")[0] + "==")
    assert b"secret-token" not in payload and b"secret-token" not in value.encode()
    assert c.fingerprint("secret-token") != c.fingerprint("other-token")
    assert codec(b"x" * 32).fingerprint("secret-token") != c.fingerprint("secret-token")


def test_every_other_spelling_of_the_signatures_last_character_is_refused() -> None:
    c = codec()
    value = c.encode(c.issue("carol", "shared", "fp", now=NOW, lifetime=60))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for char in alphabet.replace(value[-1], ""):  # base64 ignores the last one's spare bits
        assert c.decode(value[:-1] + char, now=NOW) is None, char
    assert c.decode(value, now=NOW) is not None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),  # the signature
        lambda v: "f" + v[1:],  # the payload
        lambda v: v.replace(".", ""),  # no signature at all
        lambda v: v + ".x",
        lambda v: "",
    ],
)
def test_a_changed_or_cut_cookie_is_no_session(tamper: object) -> None:
    c = codec()
    value = c.encode(c.issue("carol", "shared", "fp", now=NOW, lifetime=60))
    assert c.decode(tamper(value), now=NOW) is None  # type: ignore[operator]


def test_a_session_signed_with_another_key_or_made_up_is_refused() -> None:
    c = codec()
    other = codec(b"o" * 32)
    forged = other.encode(other.issue("mallory", "shared", "", now=NOW, lifetime=60))
    assert c.decode(forged, now=NOW) is None
    # a longer lifetime written into a real session breaks its signature
    real = c.issue("carol", "open", "", now=NOW, lifetime=60)
    payload, mac = c.encode(real).split(".")
    longer = c.encode(replace(real, expires=NOW + 10**9)).split(".")[0]
    assert c.decode(f"{longer}.{mac}", now=NOW + 120) is None
    assert c.decode(f"{payload}.{mac}", now=NOW) == real


def test_csrf_tokens_belong_to_one_session() -> None:
    c = codec()
    one = c.issue("carol", "user", "", now=NOW, lifetime=60)
    two = c.issue("carol", "user", "", now=NOW, lifetime=60)
    assert c.csrf_ok(one, c.csrf_token(one))
    assert not c.csrf_ok(one, c.csrf_token(two))
    assert not c.csrf_ok(one, None) and not c.csrf_ok(one, "")
    assert not codec(b"o" * 32).csrf_ok(one, c.csrf_token(one))


def test_the_login_forms_token_matches_only_its_nonce() -> None:
    c = codec()
    nonce = "n" * 24
    assert c.login_ok(nonce, c.login_token(nonce))
    assert not c.login_ok("m" * 24, c.login_token(nonce))
    assert not c.login_ok(None, c.login_token(nonce))
    assert not c.login_ok("bad nonce!", c.login_token("bad nonce!"))
    assert c.login_token(nonce) != c.csrf_token(c.issue("u", "open", "", now=NOW, lifetime=1))


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SessionCodec(b"short")


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({}, False),  # no browser headers: left to the CSRF token
        ({"Sec-Fetch-Site": "same-origin"}, False),
        ({"Sec-Fetch-Site": "none"}, False),  # typed by the user
        ({"Origin": "http://127.0.0.1:8888"}, False),
        ({"Origin": "HTTP://127.0.0.1:8888"}, False),
        ({"Sec-Fetch-Site": "same-site"}, True),  # another port or subdomain: SameSite passes it
        ({"Sec-Fetch-Site": "cross-site"}, True),
        ({"Origin": "http://127.0.0.1:9999"}, True),
        ({"Origin": "https://127.0.0.1:8888"}, True),
        ({"Origin": "null"}, True),  # a sandboxed frame or a data: page
        ({"Origin": "null", "Sec-Fetch-Site": "same-site"}, True),
        ({"Origin": "null", "Sec-Fetch-Site": "same-origin"}, False),  # our no-referrer pages
        ({"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"}, True),
    ],
)
def test_the_cross_origin_check(headers: dict[str, str], refused: bool) -> None:
    own = guard.own_origin("http", "127.0.0.1:8888")
    problem = guard.cross_origin_problem(headers, own)
    assert (problem is not None) == refused, problem


def test_cookie_attributes_are_httponly_strict_and_secure_on_https() -> None:
    plain = guard.cookie_attributes(path="/admin", secure=False, max_age=60)
    assert plain == {"path": "/admin", "httponly": True, "samesite": "Strict", "max_age": 60}
    tls = guard.cookie_attributes(path="/gw/admin", secure=True, max_age=None)
    assert tls == {"path": "/gw/admin", "httponly": True, "samesite": "Strict", "secure": True}


def test_the_csp_allows_no_inline_code_and_no_framing() -> None:
    csp = guard.CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert guard.SECURITY_HEADERS["X-Content-Type-Options"] == "nosniff"
    assert guard.SECURITY_HEADERS["Referrer-Policy"] == "no-referrer"


def test_the_key_file_is_made_private_once_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "secret" / "dashboard.key"
    key = load_key(str(path))
    assert len(key) == 32 and load_key(str(path)) == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    path.write_text("not base64!")
    with pytest.raises(ValueError, match="base64"):
        load_key(str(path))
