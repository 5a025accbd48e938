"""``input()`` and the debugger, in stock JupyterLab 4 and Notebook 7 on our gateway.

Both need more than the shell and iopub channels: ``input()`` sends an ``input_request`` on
stdin and waits for the ``input_reply`` the output area's input box sends (its socket must share
the shell socket's ZMQ identity, commit 3791f65); the debugger sends DAP requests as
``debug_request`` on the control channel and gets ``debug_event``s (``stopped``) on iopub.

Notebook 7 (7.6) has the same debugger as Lab: the bug button in the notebook toolbar, the
breakpoint gutter, a "Paused in Debugger" bar; its panel (variables, call stack, breakpoints)
opens from View → Debugger Panel instead of opening by itself. The kernelspec must say
``"metadata": {"debugger": true}`` (ipykernel's own does) or both keep the button disabled.
"""

from __future__ import annotations

import re
from typing import Any

from tests.browser.harness import BROWSER, NOTEBOOK, Browser, Frontend, Servers, write_notebook
from tests.browser.ui import NotebookUI

pytestmark = BROWSER

#: A breakpoint goes on line 3, inside f(): there ``n`` and ``total`` are locals.
DEBUGGED = "def f(n):\n    total = n * 2\n    return total + 1\n\nprint('result', f(20))"
BREAK_LINE = 3


async def open_python_notebook(ui: NotebookUI, servers: Servers) -> None:
    path = write_notebook(servers.root, "features.ipynb", "python3", "Python 3")
    await ui.opened_and_settled(servers, path, "Python 3")


async def test_input_is_answered_in_the_output_area(
    frontend: Frontend, servers: Servers, chromium: Browser
) -> None:
    ui = NotebookUI(chromium, frontend)
    await open_python_notebook(ui, servers)
    cell = await ui.run(0, "name = input('name? ')\nprint('hello', name, len(name))")

    box = cell.locator(".jp-OutputArea .jp-Stdin-input")
    await ui.expect(box).to_be_visible()
    await ui.expect(cell.locator(".jp-Stdin-prompt")).to_have_text("name? ")
    await ui.status("busy")  # the kernel waits in input()
    await box.click()
    await box.press_sequentially("Ada Lovelace")
    await box.press("Enter")

    output = cell.locator(".jp-OutputArea")
    await ui.expect(output).to_contain_text("hello Ada Lovelace 12")
    await ui.expect(box).to_have_count(0)  # the box became the echoed answer
    await ui.expect(output).to_contain_text("name? Ada Lovelace")
    await ui.expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[1]:")
    await ui.status("idle")

    # The kernel has the value, not only the page.
    cell = await ui.run(1, "print(repr(name))")
    await ui.expect(cell.locator(".jp-OutputArea-output")).to_have_text("'Ada Lovelace'")


async def test_debugger_stops_at_a_breakpoint_shows_locals_and_continues(
    frontend: Frontend, servers: Servers, chromium: Browser
) -> None:
    ui = NotebookUI(chromium, frontend)
    page, expect = ui.page, ui.expect
    await open_python_notebook(ui, servers)

    bug = ui.panel.locator(".jp-DebuggerBugButton")
    await expect(bug).to_have_attribute("aria-disabled", "false")  # the kernel can debug
    await bug.click()
    await expect(bug).to_have_attribute("aria-pressed", "true")
    sidebar = page.locator(".jp-DebuggerSidebar")
    if frontend is NOTEBOOK:  # Lab opens the panel itself; Notebook 7 from its View menu
        await ui.menu("View", "Debugger Panel")
    await expect(sidebar).to_be_visible()

    cell = await ui.enter(0, DEBUGGED)
    await set_breakpoint(ui, cell, BREAK_LINE)
    listed = sidebar.locator(".jp-DebuggerBreakpoints-body .jp-DebuggerBreakpoint")
    await expect(listed).to_have_count(1)
    await expect(listed.locator(".jp-DebuggerBreakpoint-line")).to_have_text(str(BREAK_LINE))

    await cell.locator(".cm-content").click()
    await page.keyboard.press("Shift+Enter")
    # Stopped on the breakpoint: the line is highlighted, f() is on top of the call stack,
    # and the variables panel shows f's locals.
    await expect(page.locator(".jp-DebuggerPausedOverlay")).to_contain_text("Paused in Debugger")
    await expect(cell.locator(".cm-line.jp-DebuggerEditor-highlight")).to_have_text(
        "    return total + 1"
    )
    frames = sidebar.locator(".jp-DebuggerCallstack-body .jp-DebuggerCallstackFrame-name")
    await expect(frames.first).to_have_text("f")
    await expect(frames).to_contain_text(["f", "<module>"])
    local = sidebar.locator(".jp-DebuggerVariables-body.jp-debuggerVariables-local")
    await expect(local).to_contain_text(re.compile(r"\btotal\W*40\b"))
    await expect(local).to_contain_text(re.compile(r"\bn\W*20\b"))
    await expect(cell.locator(".jp-OutputArea-output")).to_have_count(0)  # print() not yet run
    await expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[*]:")
    for path in await chromium.screenshots(f"debugger-stopped-{frontend.id}"):
        print(f"screenshot: {path}")

    await sidebar.locator('jp-button[data-command="debugger:continue"]').click()
    await expect(cell.locator(".jp-OutputArea-output")).to_have_text("result 41")
    await expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[1]:")
    await expect(page.locator(".jp-DebuggerPausedOverlay")).to_have_count(0)
    await expect(frames).to_have_count(0)
    await ui.status("idle")


async def set_breakpoint(ui: NotebookUI, cell: Any, line: int) -> None:
    """Click the breakpoint gutter beside *line* of *cell*'s editor (1-based)."""
    target = cell.locator(".cm-line").nth(line - 1)
    gutter = cell.locator(".cm-gutter.cm-breakpoint-gutter")
    line_box = await target.bounding_box()
    gutter_box = await gutter.bounding_box()
    assert line_box is not None and gutter_box is not None
    await ui.page.mouse.click(
        gutter_box["x"] + gutter_box["width"] / 2, line_box["y"] + line_box["height"] / 2
    )
    shown = cell.locator(
        '.cm-breakpoint-gutter .cm-gutterElement:not([style*="hidden"]) [aria-label="Breakpoint"]'
    )
    await ui.expect(shown).to_have_count(1)
