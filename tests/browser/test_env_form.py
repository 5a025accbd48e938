"""A kernel environment made from the dashboard in a real browser (Chromium, headless): log in,
fill in the form, watch the build's lines arrive live until it says "ready", then start a
kernel of the environment's kernelspec through the gateway's REST API, import the packages in
it, and see the kernel on the dashboard's kernels page.

The environment is built for real from PyPI, which the tests' private network namespace cannot
reach, so the gateway runs in the test process and its port is made reachable from inside the
namespace (tests/dashboard/harness.py, ``reachable_from``); Chromium stays in the namespace
(tests/browser/harness.py says why).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kernelfleet.client import stdout_of
from kernelfleet.gateway.app import Gateway
from tests.browser.harness import BROWSER, Browser, PrivateNetwork
from tests.conftest import client_for
from tests.dashboard.harness import (
    ADMIN,
    ADMIN_TOKEN,
    USER_TOKEN,
    At,
    envs_gateway,
    log_in,
    reachable_from,
)
from tests.envs.conftest import EnvDirs, env_dirs  # noqa: F401 - the fixture

pytestmark = BROWSER

NAME = "tools"
DISPLAY = "Python with six and toolz"
#: How long the build may take on a loaded machine with a cold uv cache.
BUILD_MS = 150_000

# Records the progress list as the server rendered it (once the page is parsed, before the
# dashboard's script runs) and every line the script adds afterwards, from the event stream.
RECORDER = """
(() => {
  window.__kfRendered = null;
  window.__kfLive = [];
  document.addEventListener('readystatechange', () => {
    const list = document.getElementById('job-lines');
    if (document.readyState !== 'interactive' || !list) return;
    window.__kfRendered = {
      done: document.getElementById('job').dataset.done,
      lines: Array.from(list.children, (li) => li.textContent),
    };
    new MutationObserver((records) => {
      for (const record of records) {
        for (const node of record.addedNodes) {
          if (node.nodeName === 'LI') window.__kfLive.push(node.textContent);
        }
      }
    }).observe(list, {childList: true});
  });
})();
"""


@pytest.fixture
async def gateway(
    env_dirs: EnvDirs,  # noqa: F811 - the fixture imported above
    network: PrivateNetwork,
) -> AsyncIterator[Gateway]:
    async with envs_gateway(env_dirs) as (gw, _):
        port = urlsplit(gw.url).port
        assert port is not None
        async with reachable_from(network, port):
            yield gw


async def test_create_an_environment_with_the_form_watch_it_build_and_use_its_kernel(
    gateway: Gateway,
    chromium: Browser,
    env_dirs: EnvDirs,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    page, expect = chromium.page, chromium.expect
    site = At(gateway.url)
    await log_in(page, expect, site)
    await page.click("nav >> text=Environments")
    await expect(page.locator("#envs")).to_contain_text("No environments yet")
    await page.click("#new-env")
    await expect(page.locator("h1")).to_have_text("New kernel environment")

    await page.fill("#f-name", NAME)
    labels = await page.locator("#f-python option").all_inner_texts()
    (python,) = [label for label in labels if label.startswith("Python 3.11")]
    await page.select_option("#f-python", label=python)
    await page.fill("#f-packages", "six\ntoolz")
    await page.select_option("#f-kind", "local")
    await expect(page.locator('fieldset[data-kind="ssh"]')).to_be_hidden()
    await page.fill("#f-display_name", DISPLAY)
    await page.fill("#f-authorized_users", ADMIN)
    await page.screenshot(path=str(tmp_path / "env-form.png"), full_page=True)
    await page.add_init_script(RECORDER)  # for the progress page the form leads to
    await page.click("#env-submit")

    await expect(page).to_have_url(re.compile(r"/admin/envs/jobs/[0-9a-f]{16}$"))
    status = page.locator("#job-status")
    await expect(status).to_have_text("ready", timeout=BUILD_MS)
    await expect(status).to_have_class("status-ok")
    shot = tmp_path / "env-progress.png"
    await page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 0

    rendered = await page.evaluate("window.__kfRendered")
    live: list[str] = await page.evaluate("window.__kfLive")
    assert rendered is not None and rendered["done"] == "no", rendered  # served while building
    assert any(line.startswith("resolving 3 packages") for line in live), live
    ready = f"environment {NAME} is ready: start kernel '{NAME}'"
    assert live[-1] == ready, live
    assert ready not in rendered["lines"]  # it came through the stream, after the page loaded
    lines = page.locator("#job-lines li")
    assert await lines.all_text_contents() == live  # each line once, in order

    await page.click("#job-envs-link")
    row = page.locator(f'#envs tr[data-env="{NAME}"]')
    await expect(row.locator("td.state")).to_have_text("ready")
    await expect(row.locator("td.owner")).to_have_text(ADMIN)
    await expect(row.locator("td.packages")).to_contain_text("3 requested")
    await expect(page.locator('#env-usage tr[data-owner="carol"]')).to_contain_text("1 of 5")
    await page.screenshot(path=str(tmp_path / "envs.png"), full_page=True)

    # the kernelspec is the creator's choice of users: carol may start it, alice may not
    refused, body = await client_for(gateway, token=USER_TOKEN).request(
        "POST", "/api/kernels", {"name": NAME}
    )
    assert refused == 403, body
    carol = client_for(gateway, token=ADMIN_TOKEN)
    kernel = await carol.start_kernel(NAME)
    ws = await carol.connect(kernel["id"])
    _, iopub = await ws.execute(
        "import six, toolz, sys; print(six.__name__, toolz.__name__, sys.prefix)"
    )
    printed = stdout_of(iopub).split()
    assert printed[:2] == ["six", "toolz"], printed
    assert printed[2].startswith(str(env_dirs.root / NAME)), printed
    ws.close()

    await page.click("nav >> text=Kernels")
    kernel_row = page.locator(f'#kernels tbody tr[data-id="{kernel["id"]}"]')
    await expect(kernel_row.locator("td.spec")).to_have_text(NAME)
    await expect(kernel_row.locator("td.spec")).to_have_attribute("title", DISPLAY)
    await expect(kernel_row.locator("td.owner")).to_have_text(ADMIN)
    await carol.shutdown_kernel(kernel["id"])
    await expect(kernel_row).to_have_count(0)
