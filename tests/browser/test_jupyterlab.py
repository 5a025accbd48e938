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

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
GATEWAY_TOKEN = "browser-test-token"
#: Upper bound for one UI step (kernel start, a cell run, a restart) on a loaded 2-core machine.
STEP_MS = 30_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"{CHROMIUM} is missing: install Debian's chromium package (make system-deps)",
    ),
]

# 1x1 PNG: the python3 kernelspec's logo, to check that logos flow through Lab to the browser.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8ffff3f0005fe02fea7d6a4e30000000049454e44ae426082"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateNetwork:
    """A network namespace with only loopback, for both servers, their kernels and Chromium.

    Chromium aborts in-flight requests with ``ERR_NETWORK_CHANGED`` whenever the host's
    addresses change (on a shared machine: network namespaces and bridges coming and going,
    e.g. the SSH testbed); inside a namespace of its own it sees no such change. Playwright
    drives Chromium over a pipe, so nothing else needs to cross the namespace boundary.
    Without root (or util-linux's unshare/nsenter) everything runs in the host's namespace.
    """

    def __init__(self, holder: subprocess.Popen[bytes] | None) -> None:
        self.holder = holder

    @classmethod
    def create(cls) -> PrivateNetwork:
        tools = all(shutil.which(t) for t in ("unshare", "nsenter", "ip"))
        if os.geteuid() != 0 or not tools:
            return cls(None)
        holder = subprocess.Popen(
            [
                "unshare",
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && echo up && exec sleep 3600",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert holder.stdout is not None
        with holder.stdout:
            up = holder.stdout.readline().strip() == b"up"
        if not up:
            holder.kill()
            holder.wait()
            return cls(None)
        return cls(holder)

    def wrap(self, argv: list[str]) -> list[str]:
        if self.holder is None:
            return argv
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--", *argv]

    def browser_executable(self, directory: Path) -> str:
        if self.holder is None:
            return CHROMIUM
        script = directory / "chromium-in-private-network"
        script.write_text(f'#!/bin/sh\nexec {" ".join(self.wrap([CHROMIUM]))} "$@"\n')
        script.chmod(0o755)
        return str(script)

    def close(self) -> None:
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait()


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_for_log(self, pattern: str, within: float) -> None:
        """Wait until the server logs *pattern* (it is then listening)."""
        deadline = time.monotonic() + within
        while not re.search(pattern, self.tail(400)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {within}s:\n{self.tail()}")
            await asyncio.sleep(0.1)


def spawn(name: str, argv: list[str], env: dict[str, str], log: Path, url: str) -> Server:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown reaches its kernels too
        )
    return Server(name, proc, log, url)


def stop(server: Server) -> None:
    """SIGTERM (the gateway then shuts its kernels down), SIGKILL the group if it lingers."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(timeout=5)


@pytest.fixture
def servers_env(tmp_path: Path) -> dict[str, str]:
    """A private Jupyter world: kernelspec, config, data, runtime, Lab settings and workspaces."""
    jp = tmp_path / "jupyter-path"
    kdir = jp / "kernels" / "python3"
    kdir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3",
        "language": "python",
        "metadata": {},
    }
    (kdir / "kernel.json").write_text(json.dumps(spec))
    (kdir / "logo-64x64.png").write_bytes(PNG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "KF_", "KERNEL_"))}
    env.update(
        JUPYTER_PATH=str(jp),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
        KF_DATA_DIR=str(tmp_path / "kf-data"),
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    return env


@pytest.fixture
def network() -> Iterator[PrivateNetwork]:
    net = PrivateNetwork.create()
    yield net
    net.close()


@pytest.fixture
async def lab(
    servers_env: dict[str, str], network: PrivateNetwork, tmp_path: Path
) -> AsyncIterator[Server]:
    """Our gateway and a stock JupyterLab using it; yields the Lab server."""
    bindir = Path(sys.executable).parent
    gw_port, lab_port = free_port(), free_port()
    root = tmp_path / "notebooks"
    root.mkdir()
    started: list[Server] = []
    try:
        gateway = spawn(
            "kernelfleet",
            network.wrap(
                [
                    str(bindir / "kernelfleet"),
                    "serve",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(gw_port),
                    "--port-retries",
                    "0",
                    "--token",
                    GATEWAY_TOKEN,
                ]
            ),
            servers_env,
            tmp_path / "gateway.log",
            f"http://127.0.0.1:{gw_port}",
        )
        started.append(gateway)
        lab_env = dict(servers_env, JUPYTER_GATEWAY_AUTH_TOKEN=GATEWAY_TOKEN)
        jupyter_lab = spawn(
            "jupyter lab",
            network.wrap(
                [
                    str(bindir / "jupyter-lab"),
                    "--no-browser",
                    "--allow-root",
                    "--ip",
                    "127.0.0.1",
                    f"--port={lab_port}",
                    "--ServerApp.port_retries=0",
                    f"--gateway-url={gateway.url}",
                    "--IdentityProvider.token=",
                    "--ServerApp.password=",
                    f"--ServerApp.root_dir={root}",
                    "--LabApp.news_url=None",
                    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                ]
            ),
            lab_env,
            tmp_path / "lab.log",
            f"http://127.0.0.1:{lab_port}",
        )
        started.append(jupyter_lab)
        await asyncio.gather(
            gateway.wait_for_log(rf"listening on http://127\.0\.0\.1:{gw_port}/", 60),
            jupyter_lab.wait_for_log(r"Jupyter Server [\d.]+ is running at", 90),
        )
        yield jupyter_lab
    finally:
        for server in reversed(started):
            stop(server)
        for server in started:
            print(f"----- {server.name} log (tail) -----\n{server.tail()}")


@pytest.fixture
def user_data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "chromium-profile"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def chromium(user_data_dir: Path, executable: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            yield context
        finally:
            await context.close()


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


async def test_jupyterlab_notebook_through_our_gateway(
    lab: Server, network: PrivateNetwork, user_data_dir: Path, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    async with chromium(user_data_dir, network.browser_executable(tmp_path)) as context:
        page = context.pages[0] if context.pages else await context.new_page()
        page.set_default_timeout(STEP_MS)
        expect.set_options(timeout=STEP_MS)
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        try:
            await drive_notebook(page, expect, lab.url)
        except BaseException:
            with contextlib.suppress(Exception):
                await page.screenshot(path=str(tmp_path / "failure.png"))
            print(f"screenshot: {tmp_path / 'failure.png'}")
            print("----- browser console -----\n" + "\n".join(console[-80:]))
            raise


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
