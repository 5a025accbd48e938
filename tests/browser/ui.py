"""What a user does in an open notebook, the same in JupyterLab 4 and Notebook 7.

Both frontends are built from JupyterLab's notebook widgets, so a notebook's DOM is the same:
cells, CodeMirror editors, output areas, the toolbar's execution indicator (whose
``data-status`` is the kernel's status), dialogs. Only the chrome around it differs (Lab's
status bar and side panels; Notebook 7's header, menus and a right-hand area opened from View).
"""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from tests.browser.harness import LAB, Browser, Frontend, Servers

# Records, from page load on, every "<kernel name> | <status>" the notebook toolbar shows (its
# kernel-name button and its execution indicator's data-status). The indicator says "idle"
# before any kernel is there, so "ready" is: idle *after* a status that was not.
RECORDER = """
(() => {
  window.__kfStatuses = [];
  const record = () => {
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    const indicator = panel && panel.querySelector('.jp-Notebook-ExecutionIndicator');
    const name = panel && panel.querySelector('.jp-Toolbar-kernelName');
    if (!indicator || !name) return;
    const entry = name.textContent.trim() + ' | ' + indicator.getAttribute('data-status');
    const seen = window.__kfStatuses;
    if (seen[seen.length - 1] !== entry) seen.push(entry);
  };
  const start = () => {
    new MutationObserver(record).observe(document.body, {subtree: true, childList: true,
      characterData: true, attributes: true, attributeFilter: ['data-status']});
    record();
  };
  if (document.body) start(); else document.addEventListener('DOMContentLoaded', start);
})();
"""

#: What Notebook 7 throws when it fails to set up a notebook it opens (see opened_and_settled).
FRONTEND_RACE = "Cannot read properties of undefined (reading 'schema')"

# True once the kernel *name* reached "idle" after some other status, from entry *since* on.
SETTLED = """
([name, since]) => {
  const seen = (window.__kfStatuses || []).slice(since);
  const moved = seen.some(e => e.startsWith(name + ' | ') && !e.endsWith(' | idle'));
  return moved && seen[seen.length - 1] === name + ' | idle';
}
"""


class NotebookUI:
    """One notebook open in *browser*'s page."""

    def __init__(self, browser: Browser, kind: Frontend) -> None:
        self.page = browser.page
        self.expect = browser.expect
        self.console = browser.console
        self.kind = kind
        self.panel = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        self.cells = self.panel.locator(".jp-Notebook .jp-Cell")
        self.indicator = self.panel.locator(".jp-Notebook-ExecutionIndicator")
        self.dialog = self.page.locator(".jp-Dialog")

    async def open(self, servers: Servers, path: str) -> None:
        await self.page.add_init_script(RECORDER)
        await self.page.goto(self.kind.notebook_url(servers.frontend, path))
        await self.expect(self.cells.first).to_be_visible()

    async def status(self, status: str) -> None:
        """Wait until the toolbar shows the kernel in *status* (idle, busy, dead, …)."""
        await self.expect(self.indicator).to_have_attribute("data-status", status)

    async def statuses(self) -> list[str]:
        """Every "<kernel name> | <status>" the toolbar showed since the page loaded."""
        seen: list[str] = await self.page.evaluate("window.__kfStatuses")
        return seen

    async def settled(self, kernel: str, since: int = 0) -> None:
        """Wait until kernel *kernel* (display name) is idle after another status, counting
        from the *since*-th recorded status: ready after a start or a restart."""
        await self.page.wait_for_function(SETTLED, arg=[kernel, since])

    async def opened_and_settled(self, servers: Servers, path: str, kernel: str) -> None:
        """Open notebook *path* and wait until its new kernel *kernel* is idle.

        Notebook 7 sometimes fails to set up a notebook it opens ("Cannot read properties of
        undefined (reading 'schema')" after "[yjs#509] Not same Y.Doc": its shared model was
        not ready) and then never shows a kernel status. That page is opened again, once, as
        a user would; the kernel, already started for the session, is the same."""
        await self.open(servers, path)
        try:
            await self.settled(kernel)
        except PlaywrightTimeoutError:
            if not any(FRONTEND_RACE in line for line in self.console):
                raise
            await self.page.reload()
            await self.expect(self.cells.first).to_be_visible()
            await self.settled(kernel)

    async def enter(self, index: int, code: str) -> Any:
        """Put *code* into cell *index* (the last cell), as pasted: no auto-indent."""
        await self.expect(self.cells).to_have_count(index + 1)
        cell = self.cells.nth(index)
        await cell.locator(".cm-content").click()
        await self.page.keyboard.insert_text(code)
        lines = cell.locator(".cm-line")
        await self.expect(lines).to_have_count(code.count("\n") + 1)
        await self.expect(lines.last).to_have_text(code.rsplit("\n", 1)[-1])
        return cell

    async def run(self, index: int, code: str) -> Any:
        """Enter *code* into cell *index* and run it with Shift+Enter; returns the cell."""
        cell = await self.enter(index, code)
        await self.page.keyboard.press("Shift+Enter")
        return cell

    async def menu(self, menu: str, item: str) -> None:
        """Choose *item* from the menu bar's *menu* (File, View, Kernel, …)."""
        await self.page.locator(".lm-MenuBar-itemLabel", has_text=menu).first.click()
        entry = self.page.locator(".lm-Menu:not(.lm-mod-hidden) .lm-Menu-item", has_text=item)
        await entry.first.click()

    async def restart_from_toolbar(self) -> None:
        """Click the toolbar's Restart and confirm the "Restart Kernel?" dialog."""
        await self.panel.locator('jp-button[data-command="notebook:restart-kernel"]').click()
        await self.expect(self.dialog).to_contain_text("Restart Kernel?")
        await self.dialog.locator("button.jp-mod-accept").click()
        await self.expect(self.dialog).to_have_count(0)


async def dialog_texts(page: Any) -> list[str]:
    """The text of every open dialog's body (title excluded), as shown."""
    bodies = page.locator(".jp-Dialog .jp-Dialog-body")
    return [await bodies.nth(i).inner_text() for i in range(await bodies.count())]


async def toast_texts(page: Any) -> list[str]:
    """The text of every notification toast on the page."""
    toasts = page.locator(".Toastify__toast")
    return [await toasts.nth(i).inner_text() for i in range(await toasts.count())]


async def new_notebook(browser: Browser, kind: Frontend, servers: Servers, display: str) -> Any:
    """Make a new notebook for the kernelspec shown as *display*, the way each frontend offers
    it: Lab's launcher card, Notebook 7's New menu on its file tree (which opens the notebook
    in a new tab). Returns the page the notebook is in."""
    page, expect = browser.page, browser.expect
    if kind is LAB:
        await page.goto(f"{servers.frontend.url}/lab?reset")
        card = page.locator(f'.jp-LauncherCard[data-category="Notebook"][title="{display}"]')
        await card.click()
        return page
    await page.goto(f"{servers.frontend.url}/tree")
    await page.locator('[data-jp-item-name="new-dropdown"] .lm-MenuBar-item').click()
    item = page.locator(".lm-Menu:not(.lm-mod-hidden) .lm-Menu-item", has_text=display)
    await expect(item).to_have_count(1)
    async with browser.context.expect_page() as opened:
        await item.click()
    tab = await opened.value
    await tab.wait_for_load_state()
    return tab


# The characters of an element that are inside its own box (not clipped or scrolled away).
SHOWN_CHARACTERS = """
(el) => {
  const box = el.getBoundingClientRect();
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  const range = document.createRange();
  let shown = '';
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let i = 0; i < node.length; i++) {
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const r = range.getBoundingClientRect();
      if (r.left >= box.left - 1 && r.right <= box.right + 1 &&
          r.top >= box.top - 1 && r.bottom <= box.bottom + 1) shown += node.data[i];
    }
    shown += '\\n';
  }
  return shown;
}
"""


async def shown_text(locator: Any) -> str:
    """What of *locator*'s text a user sees without scrolling (runs of whitespace as one)."""
    text: str = await locator.evaluate(SHOWN_CHARACTERS)
    return " ".join(text.split())


#: Words that say why a host cannot be used (a JavaScript and Python regular expression).
CAUSE = r"unreachable|not reachable|no host is reachable|\bdown\b|refused"


class NotShown(AssertionError):
    """The user is not shown an error that says what failed and why early enough."""


def check_shown(text: str, *names: str, within: int = 110) -> None:
    """*text* (as the user reads it) has every one of *names* and a cause (CAUSE) within its
    first *within* characters; else :class:`NotShown`."""
    head = " ".join(text.split())[:within]
    missing = [name for name in names if name not in head]
    if not re.search(CAUSE, head, re.IGNORECASE):
        missing.append("a cause")
    if missing:
        raise NotShown(f"{', '.join(missing)} not in the first {within} characters of {text!r}")


# The first shown text (dialog body, toast, cell output) whose first *within* characters
# contain *needle* and match CAUSE, or false.
ERROR_SHOWN = """
([needle, cause, within]) => {
  const re = new RegExp(cause, 'i');
  const shown = document.querySelectorAll(
    '.jp-Dialog .jp-Dialog-body, .Toastify__toast, .jp-OutputArea-output');
  for (const el of shown) {
    const head = el.innerText.replace(/\\s+/g, ' ').trim().slice(0, within);
    if (head.includes(needle) && re.test(head)) return el.innerText;
  }
  return false;
}
"""


async def error_shown(page: Any, needle: str, within: int = 110) -> str:
    """Wait until the page shows an error naming *needle* and a cause (CAUSE) within its first
    *within* characters, in a dialog, a toast or a cell's output; return its text."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        handle = await page.wait_for_function(ERROR_SHOWN, arg=[needle, CAUSE, within])
    except PlaywrightTimeout:
        raise NotShown(f"nothing shown names {needle} and a cause") from None
    text: str = await handle.json_value()
    return text


async def what_is_shown(browser: Browser, name: str) -> list[str]:
    """Print and return the dialogs and toasts of every page; keep screenshots as *name*."""
    texts: list[str] = []
    for page in browser.context.pages:
        texts += [f"dialog: {t}" for t in await dialog_texts(page)]
        texts += [f"toast: {t}" for t in await toast_texts(page)]
    print(f"----- {name}: what the user sees -----")
    for text in texts or ["(no dialog, no toast)"]:
        print(text)
    for path in await browser.screenshots(name):
        print(f"screenshot: {path}")
    return texts
