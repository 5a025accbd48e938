"""The admin dashboard in a real browser (Chromium, headless): log in, watch kernels started
through the API appear live, interrupt, restart and shut one down, read its log; hostile user
text stays text; a cross-site POST is refused; the audit log names the admin.

The gateway is ``kernelfleet serve`` with the dashboard, in the private network namespace of
tests/browser (harness.py); the test drives one tab on the dashboard and calls the API from
another, so whatever appears on the dashboard arrived through its live feed.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import BROWSER, Browser, PrivateNetwork, Server, free_port, spawn
from tests.browser.harness import stop as stop_server
from tests.conftest import add_kernelspec
from tests.dashboard.harness import (
    ADMIN,
    HOSTILE_TOKEN,
    HOSTILE_USER,
    USER_TOKEN,
    Api,
    audit_lines,
    chatty_argv,
    log_in,
    running_gateway,
    shot,
)

pytestmark = BROWSER

#: What the "chatty" kernel writes to its log before it starts: markup that must stay text.
LOG_LINE = 'kernel says <script>window.__pwned="log"</script><img src=x onerror="window.__pwned=1">'
CHATTY_DISPLAY = 'Chatty <img src=x onerror="window.__pwned=2">'


@pytest.fixture
async def gateway(
    world: dict[str, str], network: PrivateNetwork, tmp_path: Path
) -> AsyncIterator[Server]:
    add_kernelspec(
        Path(world["JUPYTER_PATH"]),
        "chatty",
        {"argv": chatty_argv(LOG_LINE), "display_name": CHATTY_DISPLAY},
    )
    async with running_gateway(world, network, tmp_path, {}) as server:
        yield server


def row(page: Any, kernel_id: str) -> Any:
    return page.locator(f'#kernels tbody tr[data-id="{kernel_id}"]')


async def until_audited(env: dict[str, str], action: str, kernel_id: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            found = [
                e
                for e in audit_lines(env)
                if e["action"] == action and e.get("kernel_id") == kernel_id
            ]
            if found:
                return found[-1]
            await asyncio.sleep(0.1)


async def test_log_in_watch_kernels_arrive_live_act_on_them_and_read_a_log(
    gateway: Server, chromium: Browser, world: dict[str, str]
) -> None:
    page, expect = chromium.page, chromium.expect
    await page.goto(f"{gateway.url}/admin")
    await expect(page.locator("#token")).to_be_visible()
    await page.fill("#token", "not-a-token")
    await page.click("button[type=submit]")
    await expect(page.locator("#login-error")).to_have_text(
        "That token is not valid for this gateway."
    )
    await shot(page, "01-login-refused")
    await page.fill("#token", USER_TOKEN)  # alice: a user, not an admin
    await page.click("button[type=submit]")
    await expect(page.locator("#error-message")).to_contain_text("'alice' is not one")
    await log_in(page, expect, gateway)

    await page.click("nav >> text=Kernels")
    await expect(page.locator("#live-status")).to_have_text("live")
    await page.evaluate("window.__samePage = 'yes'")  # a reload would lose it

    api = await Api.open(chromium.context, gateway)
    first = await api.start_kernel(USER_TOKEN)
    second = await api.start_kernel(USER_TOKEN, "chatty")
    for kid in (first, second):
        await expect(row(page, kid).locator("td.state")).to_have_text("idle")
        await expect(row(page, kid).locator("td.owner")).to_have_text("alice")
    await expect(row(page, second).locator("td.spec")).to_have_text("chatty")
    await expect(row(page, first).locator("td.memory")).to_have_text(re.compile(r"^\d+ MiB$"))
    assert await page.evaluate("window.__samePage") == "yes"  # arrived live, no reload
    await shot(page, "02-kernels-live")

    # filter and sort
    await page.fill("#filter", "chatty")
    await expect(page.locator("#kernels tbody tr")).to_have_count(1)
    await page.fill("#filter", "")
    await expect(page.locator("#kernels tbody tr")).to_have_count(2)

    await row(page, first).locator("button[data-action=interrupt]").click()
    await expect(page.locator("#notices")).to_contain_text(f"Kernel {first[:8]} interrupted")
    await row(page, first).locator("button[data-action=restart]").click()
    await expect(page.locator("#notices")).to_contain_text(f"Kernel {first[:8]} restarted")
    await expect(row(page, first).locator("td.state")).to_have_text("idle")

    await row(page, second).locator("button[data-action=log]").click()
    await expect(page.locator("#log-text")).to_contain_text("kernel says <script>")
    await shot(page, "03-kernel-log")

    shutdown = row(page, first).locator("button[data-action=shutdown]")
    await shutdown.click()
    await expect(shutdown).to_have_text("Confirm shut down")
    await shutdown.click()
    await expect(row(page, first)).to_have_count(0)  # gone from the table, live
    assert first not in await api.kernels()
    assert await page.evaluate("window.__samePage") == "yes"
    await shot(page, "04-after-shutdown")

    for action in ("interrupt", "restart", "shutdown"):
        entry = await until_audited(world, action, first)
        assert (entry["actor"], entry["source"], entry["outcome"]) == (ADMIN, "dashboard", "ok")
        assert entry["owner"] == "alice" and entry["admin"] is True


async def test_hostile_names_and_logs_render_as_text_and_a_cross_site_post_is_refused(
    gateway: Server,
    chromium: Browser,
    network: PrivateNetwork,
    tmp_path: Path,
    world: dict[str, str],
) -> None:
    page, expect = chromium.page, chromium.expect
    await log_in(page, expect, gateway)
    await page.goto(f"{gateway.url}/admin/kernels")
    await expect(page.locator("#live-status")).to_have_text("live")
    api = await Api.open(chromium.context, gateway)
    kid = await api.start_kernel(HOSTILE_TOKEN, "chatty")

    owner = row(page, kid).locator("td.owner")
    await expect(owner).to_have_text(HOSTILE_USER)  # the markup, as text
    await row(page, kid).locator("button[data-action=log]").click()
    await expect(page.locator("#log-text")).to_contain_text(LOG_LINE)
    assert await page.locator("#kernels script, #kernels b, #log-panel script").count() == 0
    assert await page.locator("#log-panel img, #kernels img").count() == 0
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    await shot(page, "05-hostile-text-inert")

    # The server-rendered pages escape the same text (a reload renders the row on the server).
    await page.goto(f"{gateway.url}/admin/specs")
    await expect(page.locator('tr[data-spec="chatty"] td').nth(1)).to_have_text(CHATTY_DISPLAY)
    assert await page.locator("#specs img").count() == 0
    await page.goto(f"{gateway.url}/admin")
    await expect(page.locator("#by-spec")).to_contain_text("chatty")
    assert await page.evaluate("typeof window.__pwned") == "undefined"

    # A page of another origin (same site: 127.0.0.1, another port, so the SameSite=Strict
    # cookie IS sent) posts a form to the dashboard's shutdown endpoint.
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    target = f"{gateway.url}/admin/api/kernels/{kid}/shutdown"
    (evil_dir / "index.html").write_text(
        "<!doctype html><title>cute cats</title>"
        f'<form id="f" method="post" action="{target}"><input name="x" value="1"></form>'
        "<script>document.getElementById('f').submit()</script>"
    )
    evil = spawn_evil(network, evil_dir, tmp_path)
    try:
        await evil_ready(chromium, evil)
        await page.goto(evil.url + "/index.html")
        await expect(page).to_have_url(target)
        body = page.locator("body")
        await expect(body).to_contain_text("Cross-Origin Request")
        await expect(body).to_contain_text("Nothing was changed")
        await shot(page, "06-cross-site-post-refused")
    finally:
        stop_server(evil)
    assert kid in await api.kernels()  # still running
    assert not [e for e in audit_lines(world) if e["action"] == "shutdown"]


def spawn_evil(network: PrivateNetwork, directory: Path, tmp_path: Path) -> Server:
    port = free_port()
    return spawn(
        "evil",
        network.wrap(
            [
                sys.executable,
                "-m",
                "http.server",
                str(port),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(directory),
            ]
        ),
        {"PATH": "/usr/bin:/bin"},
        tmp_path / "evil.log",
        f"http://127.0.0.1:{port}",
    )


async def evil_ready(chromium: Browser, evil: Server) -> None:
    async with asyncio.timeout(20):
        while True:
            probe = await chromium.context.new_page()
            try:
                await probe.goto(evil.url + "/", timeout=2000)
                return
            except Exception:
                await asyncio.sleep(0.2)
            finally:
                await probe.close()
