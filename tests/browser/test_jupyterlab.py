"""A stock JupyterLab (``jupyter lab --gateway-url``) on our gateway, driven in headless Chromium.

Both servers run as subprocesses exactly as a user starts them: ``kernelfleet serve`` with a
token, and ``jupyter lab`` pointed at it with ``JUPYTER_GATEWAY_AUTH_TOKEN``. The browser opens
a new notebook from the launcher, runs ``1+1`` and a cell that prints, interrupts a
``time.sleep(60)``, restarts the kernel and checks that state is gone — every wait is on DOM
state (kernel status text, cell outputs), never a fixed sleep.

JupyterLab 4 first asks for the kernel websocket with the v1 subprotocol; jupyter_server in
gateway mode fails that handshake, and its half-open upstream connection stays open, so the
gateway sees two websockets for the same kernel and session id (contract.md, "The
second-websocket race"). This test passes only if ours handles that at start and at restart.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import BROWSER, LAB, Browser, PrivateNetwork, Server, running_servers

pytestmark = BROWSER


@pytest.fixture
async def lab(
    world: dict[str, str], network: PrivateNetwork, tmp_path: Path
) -> AsyncIterator[Server]:
    """Our gateway and a stock JupyterLab using it; yields the Lab server."""
    async with running_servers(LAB, world, network, tmp_path) as servers:
        yield servers.frontend


# Records every kernel status text the status bar shows ("Python 3 | Busy", …) in order.
STATUS_RECORDER = """
() => {
  window.__kfStatuses = [];
  const record = () => {
    for (const el of document.querySelectorAll('.jp-StatusBar-TextItem')) {
      const text = el.textContent.trim();
      if (/^Python 3 \\| /.test(text)) {
        const last = window.__kfStatuses[window.__kfStatuses.length - 1];
        if (text !== last) window.__kfStatuses.push(text);
      }
    }
  };
  new MutationObserver(record).observe(document.body,
    {subtree: true, childList: true, characterData: true});
  record();
}
"""


async def test_jupyterlab_notebook_through_our_gateway(lab: Server, chromium: Browser) -> None:
    await drive_notebook(chromium.page, chromium.expect, lab.url)


async def drive_notebook(page: Any, expect: Any, lab_url: str) -> None:
    await page.goto(f"{lab_url}/lab?reset")
    card = page.locator('.jp-LauncherCard[data-category="Notebook"][title="Python 3"]')
    # The logo came from our gateway via Lab's kernelspec resource proxy.
    logo = card.locator("img.jp-Launcher-kernelIcon")
    await expect(logo).to_have_attribute("src", re.compile(r"/kernelspecs/python3/logo-64x64"))
    assert await logo.evaluate("img => img.complete && img.naturalWidth === 1")
    await page.evaluate(STATUS_RECORDER)
    await card.click()

    status = page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"^Python 3 \| "))
    await expect(status).to_have_text("Python 3 | Idle")
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")

    async def run_cell(index: int, code: str) -> Any:
        cell = cells.nth(index)
        await expect(cells).to_have_count(index + 1)
        editor = cell.locator(".cm-content")
        await editor.click()
        await page.keyboard.type(code)
        await expect(editor).to_have_text(code)
        await page.keyboard.press("Shift+Enter")
        return cell

    cell = await run_cell(0, "1+1")
    await expect(cell.locator(".jp-OutputArea-output")).to_have_text("2")
    await expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[1]:")

    cell = await run_cell(1, "x = 41; print('hello from kernelfleet', x + 1)")
    await expect(cell.locator(".jp-OutputArea-output")).to_have_text("hello from kernelfleet 42")
    await expect(status).to_have_text("Python 3 | Idle")

    cell = await run_cell(2, "import time; print('zzz'); time.sleep(60)")
    await expect(status).to_have_text("Python 3 | Busy")
    await expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[*]:")
    # Interrupt once the cell is inside sleep() (its output is there), as a user would.
    await expect(cell.locator(".jp-OutputArea")).to_contain_text("zzz")
    await page.locator('jp-button[data-command="notebook:interrupt-kernel"]').click()
    await expect(cell.locator(".jp-OutputArea")).to_contain_text("KeyboardInterrupt")
    await expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[3]:")
    await expect(status).to_have_text("Python 3 | Idle")

    seen_before_restart = await page.evaluate("window.__kfStatuses.length")
    await page.locator('jp-button[data-command="notebook:restart-kernel"]').click()
    dialog = page.locator(".jp-Dialog")
    await expect(dialog).to_contain_text("Restart Kernel?")
    await dialog.locator("button.jp-mod-accept").click()
    await expect(dialog).to_have_count(0)
    # Idle *after* Restarting: the next cell must go to the new kernel.
    await page.wait_for_function(
        "n => window.__kfStatuses.slice(n).includes('Python 3 | Restarting')",
        arg=seen_before_restart,
    )
    await expect(status).to_have_text("Python 3 | Idle")

    cell = await run_cell(3, "print('x' in globals(), 2 * 21)")
    await expect(cell.locator(".jp-OutputArea-output")).to_have_text("False 42")
    await expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[1]:")  # a fresh kernel
    await expect(status).to_have_text("Python 3 | Idle")

    # No "The kernel appears to have died" dialog after a requested restart.
    await expect(page.locator(".jp-Dialog")).to_have_count(0)

    statuses: list[str] = await page.evaluate("window.__kfStatuses")
    print("kernel statuses seen:", statuses)
    seen = {s.split(" | ", 1)[1] for s in statuses}
    assert {"Idle", "Busy", "Restarting"} <= seen, statuses
    assert "Dead" not in seen, statuses
    assert statuses[-1] == "Python 3 | Idle", statuses
