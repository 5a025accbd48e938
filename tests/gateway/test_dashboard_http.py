"""The admin dashboard through the real gateway (tornado's HTTP client, real kernels): login and
logout, admins only, the session cookie's flags, CSRF and cross-origin refusals, the security
headers, actions recorded in the audit log as the dashboard's, and the live event stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from kernelfleet.dashboard.app import install
from kernelfleet.dashboard.core import Dashboard
from kernelfleet.gateway.app import Gateway
from tests.conftest import TOKEN, client_for, make_config

USERS = {
    "Authenticator": {
        "user_tokens": {"tok-alice": "alice", "tok-carol": "carol"},
        "admin_users": {"carol"},
    }
}


@contextlib.asynccontextmanager
async def dashboard_gateway(**sections: dict[str, Any]) -> AsyncIterator[tuple[Gateway, Dashboard]]:
    gw = Gateway(config=make_config(**{**USERS, **sections}))
    dash = install(gw)
    assert dash is not None
    await gw.start()
    try:
        yield gw, dash
    finally:
        await gw.stop(mode="shutdown")


class Browser:
    """Just enough of a browser: a cookie jar, no redirects followed, its own origin."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.base = gw.url.rstrip("/")
        self.origin = re.match(r"https?://[^/]+", self.base).group(0)  # type: ignore[union-attr]
        self.cookies: dict[str, str] = {}

    async def fetch(
        self, path: str, method: str = "GET", body: str | None = None, **headers: str
    ) -> HTTPResponse:
        sent = {k.replace("_", "-"): v for k, v in headers.items()}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        resp = await AsyncHTTPClient().fetch(
            self.base + path,
            method=method,
            body=body if body is not None else ("" if method == "POST" else None),
            headers=sent,
            follow_redirects=False,
            raise_error=False,
        )
        for raw in resp.headers.get_list("Set-Cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                if not morsel.value or morsel["max-age"] == "0":  # tornado's clear_cookie
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return resp

    async def login(self, token: str) -> HTTPResponse:
        form = await self.fetch("/admin/login")
        assert form.code == 200, form.body
        csrf = re.search(rb'name="_csrf" value="([^"]+)"', form.body)
        assert csrf is not None
        body = urlencode({"_csrf": csrf.group(1).decode(), "token": token})
        return await self.fetch("/admin/login", "POST", body, Origin=self.origin)

    async def csrf(self) -> str:
        page = await self.fetch("/admin/kernels")
        assert page.code == 200, page.body
        found = re.search(rb'data-csrf="([^"]+)"', page.body)
        assert found is not None
        return found.group(1).decode()


def set_cookie(resp: HTTPResponse, name: str) -> str:
    return next(c for c in resp.headers.get_list("Set-Cookie") if c.startswith(f"{name}="))


def audit_lines(gw: Gateway) -> list[dict[str, Any]]:
    path = Path(gw.audit.path)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_pages_want_a_login_and_the_api_endpoints_a_401(kernelspec_dir: Path) -> None:
    async with dashboard_gateway() as (gw, _):
        web = Browser(gw)
        page = await web.fetch("/admin/kernels")
        assert page.code == 302
        assert page.headers["Location"] == "/admin/login?next=%2Fadmin%2Fkernels"
        api = await web.fetch("/admin/api/events")
        assert api.code == 401 and json.loads(api.body)["reason"] == "Unauthorized"
        # ?token= is not a dashboard credential (a token never goes into a URL here)
        assert (await web.fetch(f"/admin/kernels?token={TOKEN}")).code == 302


async def test_every_page_has_a_strict_csp_and_the_other_security_headers(
    kernelspec_dir: Path,
) -> None:
    async with dashboard_gateway() as (gw, _):
        web = Browser(gw)
        for path in ("/admin/login", "/admin/kernels"):
            resp = await web.fetch(path)
            csp = resp.headers["Content-Security-Policy"]
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert "frame-ancestors 'none'" in csp
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Referrer-Policy"] == "no-referrer"
            assert resp.headers["Cache-Control"] == "no-store"
        js = await web.fetch("/admin/static/dashboard.js")
        assert js.code == 200 and js.headers["X-Content-Type-Options"] == "nosniff"
        assert b"innerHTML" not in js.body  # text from the server goes in as textContent
        page = (await web.fetch("/admin/login")).body.decode()
        assert "<script>" not in page and "style=" not in page  # nothing inline for CSP to block


async def test_login_keeps_a_signed_httponly_strict_session_not_the_token(
    kernelspec_dir: Path,
) -> None:
    async with dashboard_gateway() as (gw, _):
        web = Browser(gw)
        resp = await web.login("tok-carol")
        assert resp.code == 303 and resp.headers["Location"] == "/admin"
        cookie = set_cookie(resp, "kf_admin_session")
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert "httponly" in flags and "samesite=strict" in flags and "path=/admin" in flags
        assert "secure" not in flags  # plain HTTP here; HTTPS gets Secure (unit-tested)
        assert "tok-carol" not in cookie and TOKEN not in cookie
        assert "kf_admin_login" not in web.cookies  # the login form's nonce is spent
        page = await web.fetch("/admin")
        assert page.code == 200 and b"Hosts" in page.body and b"carol" in page.body
        # logging out ends the session, also for a copy of the cookie
        stolen = dict(web.cookies)
        csrf = await web.csrf()
        out = await web.fetch("/admin/logout", "POST", f"_csrf={csrf}", Origin=web.origin)
        assert out.code == 303
        web.cookies = stolen
        assert (await web.fetch("/admin/kernels")).code == 302


async def test_a_wrong_token_and_a_non_admin_are_refused_with_what_to_do(
    kernelspec_dir: Path,
) -> None:
    async with dashboard_gateway() as (gw, _):
        web = Browser(gw)
        wrong = await web.login("nope")
        assert wrong.code == 401 and b"not valid for this gateway" in wrong.body
        assert "kf_admin_session" not in web.cookies
        alice = await web.login("tok-alice")
        assert alice.code == 403
        assert b"is not one" in alice.body and b"KF_ADMIN_USERS" in alice.body
        assert "kf_admin_session" not in web.cookies
        # the same for a non-admin's token in the Authorization header
        api = await web.fetch("/admin/api/events", Authorization="token tok-alice")
        assert api.code == 403 and json.loads(api.body)["reason"] == "Admins Only"
        # a login form posted without its token (or from elsewhere) is refused
        web.cookies.clear()
        body = urlencode({"token": "tok-carol"})
        assert (await web.fetch("/admin/login", "POST", body, Origin=web.origin)).code == 403


async def test_a_session_ends_when_its_admin_is_no_longer_one(kernelspec_dir: Path) -> None:
    async with dashboard_gateway() as (gw, _):
        web = Browser(gw)
        assert (await web.login("tok-carol")).code == 303
        assert (await web.fetch("/admin/kernels")).code == 200
        gw.auth.admin_users = set()  # what a config reload does
        assert (await web.fetch("/admin/kernels")).code == 302


async def test_state_changes_need_the_csrf_token_and_the_dashboards_own_origin(
    kernelspec_dir: Path,
) -> None:
    async with dashboard_gateway() as (gw, _):
        kid = (await client_for(gw, token="tok-alice").start_kernel())["id"]
        web = Browser(gw)
        assert (await web.login("tok-carol")).code == 303
        csrf = await web.csrf()
        url = f"/admin/api/kernels/{kid}/shutdown"

        no_token = await web.fetch(url, "POST", Origin=web.origin)
        assert no_token.code == 403 and json.loads(no_token.body)["reason"] == "CSRF Check Failed"
        wrong = await web.fetch(url, "POST", Origin=web.origin, X_CSRF_Token=csrf[:-2] + "xx")
        assert wrong.code == 403
        other_origin = await web.fetch(url, "POST", Origin="http://evil.example", X_CSRF_Token=csrf)
        assert other_origin.code == 403
        assert json.loads(other_origin.body)["reason"] == "Cross-Origin Request"
        same_site = await web.fetch(url, "POST", Sec_Fetch_Site="same-site", X_CSRF_Token=csrf)
        assert same_site.code == 403
        assert kid in gw.registry.records and gw.registry.records[kid].alive  # untouched

        ok = await web.fetch(
            url, "POST", Origin=web.origin, Sec_Fetch_Site="same-origin", X_CSRF_Token=csrf
        )
        assert ok.code == 200, ok.body
        assert kid not in gw.registry.records
        async with asyncio.timeout(10):
            while not [e for e in audit_lines(gw) if e["action"] == "shutdown"]:
                await asyncio.sleep(0.05)
        (stop,) = [e for e in audit_lines(gw) if e["action"] == "shutdown"]
        assert (stop["actor"], stop["admin"], stop["source"]) == ("carol", True, "dashboard")
        assert (stop["owner"], stop["kernel_id"], stop["outcome"]) == ("alice", kid, "ok")
        # the refused attempts changed nothing, so the audit log has no other shutdown


async def test_scripts_use_the_authorization_header_without_csrf(kernelspec_dir: Path) -> None:
    async with dashboard_gateway() as (gw, _):
        kid = (await client_for(gw, token="tok-alice").start_kernel())["id"]
        web = Browser(gw)
        log = await web.fetch(f"/admin/api/kernels/{kid}/log", Authorization="token tok-carol")
        assert log.code == 200 and json.loads(log.body)["kernel_id"] == kid
        done = await web.fetch(
            f"/admin/api/kernels/{kid}/interrupt", "POST", Authorization=f"token {TOKEN}"
        )
        assert done.code == 200, done.body
        assert json.loads(done.body)["kernel"]["owner"] == "alice"


async def test_the_event_stream_starts_with_a_snapshot_and_pushes_a_new_kernel(
    kernelspec_dir: Path,
) -> None:
    async with dashboard_gateway(DashboardSettings={"live_interval": 0.2}) as (gw, _):
        seen: list[tuple[str, Any]] = []
        got = asyncio.Event()
        buffer = b""

        def on_chunk(chunk: bytes) -> None:
            nonlocal buffer
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                fields = dict(
                    line.split(": ", 1) for line in block.decode().splitlines() if ": " in line
                )
                if "event" in fields:
                    seen.append((fields["event"], json.loads(fields["data"])))
                    got.set()

        stream = asyncio.ensure_future(
            AsyncHTTPClient().fetch(
                gw.url + "admin/api/events",
                headers={"Authorization": "token tok-carol"},
                streaming_callback=on_chunk,
                request_timeout=60,
                raise_error=False,
            )
        )
        try:
            async with asyncio.timeout(30):
                while not seen:
                    await got.wait()
                    got.clear()
                kind, snapshot = seen[0]
                assert kind == "snapshot" and snapshot["kernels"] == []
                assert snapshot["overview"]["total"] == 0
                began = time.monotonic()
                kid = (await client_for(gw, token="tok-alice").start_kernel())["id"]
                while not any(
                    k == "kernel" and d["id"] == kid and d["state"] == "idle" for k, d in seen
                ):
                    await got.wait()
                    got.clear()
            row = next(d for k, d in seen if k == "kernel" and d["id"] == kid)
            assert row["owner"] == "alice" and row["spec"] == "python3" and row["host"] == "local"
            assert any(k == "event" and d["action"] == "start" for k, d in seen)
            assert time.monotonic() - began < 30
        finally:
            stream.cancel()
            with contextlib.suppress(BaseException):
                await stream


async def test_server_rendered_pages_escape_user_names(kernelspec_dir: Path) -> None:
    hostile = '<script>alert("owner")</script>'
    tokens = {"tok-carol": "carol", "tok-evil": hostile}
    async with dashboard_gateway(
        Authenticator={"user_tokens": tokens, "admin_users": {"carol"}}
    ) as (
        gw,
        _,
    ):
        await client_for(gw, token="tok-evil").start_kernel()
        page = await Browser(gw).fetch("/admin/kernels", Authorization="token tok-carol")
        assert page.code == 200
        assert hostile.encode() not in page.body
        assert b"&lt;script&gt;alert(&#34;owner&#34;)&lt;/script&gt;" in page.body


async def test_the_dashboard_lives_under_the_base_url(kernelspec_dir: Path) -> None:
    async with dashboard_gateway(Gateway={"base_url": "/gw/"}) as (gw, _):
        web = Browser(gw)
        web.base = web.origin + "/gw"
        first = await web.fetch("/admin")
        assert (
            first.code == 302 and first.headers["Location"] == "/gw/admin/login?next=%2Fgw%2Fadmin"
        )
        resp = await web.login("tok-carol")
        assert resp.code == 303 and resp.headers["Location"] == "/gw/admin"
        assert "path=/gw/admin" in set_cookie(resp, "kf_admin_session").lower()
        assert (await web.fetch("/admin/specs")).code == 200
