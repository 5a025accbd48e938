"""The parts of the real-browser tests: a private network, the servers, Chromium, kernelspecs.

Both servers run as subprocesses exactly as a user starts them: ``kernelfleet serve`` with a
token, and a stock frontend (``jupyter lab`` or ``jupyter notebook``) pointed at it with
``--gateway-url`` and ``JUPYTER_GATEWAY_AUTH_TOKEN``. Chromium is driven by playwright over a
pipe. Every wait is on DOM state (kernel status, cell outputs, dialogs) or a server's log line,
never a fixed sleep.

Everything runs in a network namespace of its own (:class:`PrivateNetwork`) when we are root:
Chromium aborts in-flight requests with ``ERR_NETWORK_CHANGED`` whenever its namespace's
addresses change, and on a shared machine other tests add and remove bridges all the time.
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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import add_kernelspec

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
BINDIR = Path(sys.executable).parent

#: Marks of every browser test module (``pytestmark = BROWSER``).
BROWSER = [
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


def artifacts_dir() -> Path:
    """Where screenshots are kept after the test: ``$KF_TEST_ARTIFACTS``, by default
    /tmp/kernelfleet-test-artifacts/browser."""
    default = "/tmp/kernelfleet-test-artifacts/browser"
    path = Path(os.environ.get("KF_TEST_ARTIFACTS") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


class PrivateNetwork:
    """A network namespace with only loopback, for both servers, their kernels and Chromium.

    Chromium aborts in-flight requests with ``ERR_NETWORK_CHANGED`` whenever the host's
    addresses change (on a shared machine: network namespaces and bridges coming and going,
    e.g. the SSH testbed); inside a namespace of its own it sees no such change. Playwright
    drives Chromium over a pipe, so nothing else needs to cross the namespace boundary.
    :meth:`attach` adds one more link (to an SSH testbed's bridge) before anything starts.
    Without root (or util-linux's unshare/nsenter) everything runs in the host's namespace.
    """

    def __init__(self, holder: subprocess.Popen[bytes] | None) -> None:
        self.holder = holder
        self.links: list[str] = []

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

    @property
    def private(self) -> bool:
        return self.holder is not None

    def wrap(self, argv: list[str]) -> list[str]:
        if self.holder is None:
            return argv
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--", *argv]

    def attach(self, bridge: str, address: str, link: str) -> None:
        """Put this namespace on *bridge* with *address* (``a.b.c.d/nn``): a veth pair whose
        outer end *link* joins the bridge and whose inner end is ``eth0`` here. Call it before
        Chromium starts; the pair goes away with the namespace."""
        assert self.holder is not None, "attach() needs the private namespace (root)"
        if Path(f"/sys/class/net/{link}").exists():  # left behind by a crashed run
            _run("ip", "link", "del", link)
        _run("ip", "link", "add", link, "type", "veth", "peer", "name", f"{link}p")
        self.links.append(link)
        _run("sysctl", "-qw", f"net.ipv6.conf.{link}.disable_ipv6=1")
        _run("ip", "link", "set", f"{link}p", "netns", str(self.holder.pid))
        _run("ip", "link", "set", link, "master", bridge, "up")
        inside = ["ip", "link", "set", f"{link}p", "name", "eth0"]
        _run(*self.wrap(inside))
        _run(*self.wrap(["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1"]))
        _run(*self.wrap(["ip", "addr", "add", address, "dev", "eth0"]))
        _run(*self.wrap(["ip", "link", "set", "eth0", "up"]))

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
        for link in self.links:  # normally gone with the namespace already
            if Path(f"/sys/class/net/{link}").exists():
                subprocess.run(["ip", "link", "del", link], check=False, capture_output=True)


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


# -- the two frontends --------------------------------------------------------------------


@dataclass(frozen=True)
class Frontend:
    """A stock Jupyter frontend, started as ``jupyter <command> --gateway-url=…``."""

    id: str
    command: str
    extra_args: tuple[str, ...]
    notebook_route: str  # where a notebook file opens: <route><path>

    def notebook_url(self, server: Server, path: str) -> str:
        return f"{server.url}{self.notebook_route}{path}"


LAB = Frontend(
    "lab",
    "jupyter-lab",
    (
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ),
    "/lab/tree/",
)
NOTEBOOK = Frontend("notebook", "jupyter-notebook", (), "/notebooks/")
FRONTENDS = [LAB, NOTEBOOK]


# -- a private Jupyter world ----------------------------------------------------------------


def jupyter_world(tmp_path: Path) -> dict[str, str]:
    """Environment for both servers: private kernelspecs (a local ``python3`` with a logo),
    config, data, runtime, Lab settings and workspaces under *tmp_path*."""
    stock = {"display_name": "Python 3", "metadata": {"debugger": True}}  # as ipykernel's own
    add_kernelspec(tmp_path / "jupyter-path", "python3", stock)
    (tmp_path / "jupyter-path" / "kernels" / "python3" / "logo-64x64.png").write_bytes(PNG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "KF_", "KERNEL_"))}
    env.update(
        JUPYTER_PATH=str(tmp_path / "jupyter-path"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
        KF_DATA_DIR=str(tmp_path / "kf-data"),
        KF_CONFIG_DIR=str(tmp_path / "kf-config"),  # no admin config of this machine
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    # No "get notified about Jupyter news?" toast over the page (and its screenshots).
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    return env


def add_ssh_kernelspec(
    jupyter_path: Path, name: str, display_name: str, config: dict[str, Any]
) -> None:
    """A ``kernelfleet-ssh`` kernelspec with provisioner *config* (``remote_hosts``, …)."""
    provisioner = {"provisioner_name": "kernelfleet-ssh", "config": config}
    add_kernelspec(
        jupyter_path,
        name,
        {"display_name": display_name, "metadata": {"kernel_provisioner": provisioner}},
    )


def write_notebook(root: Path, name: str, kernel: str, display_name: str) -> str:
    """An empty notebook (one code cell) bound to kernelspec *kernel*; returns its path."""
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": "c0",
                "metadata": {},
                "outputs": [],
                "source": "",
            }
        ],
        "metadata": {
            "kernelspec": {"name": kernel, "display_name": display_name, "language": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / name).write_text(json.dumps(nb))
    return name


# -- both servers -------------------------------------------------------------------------


@dataclass
class Servers:
    gateway: Server
    frontend: Server
    kind: Frontend
    root: Path  # the frontend's notebook directory


@contextlib.asynccontextmanager
async def running_servers(
    kind: Frontend,
    env: dict[str, str],
    network: PrivateNetwork,
    tmp_path: Path,
    gateway_env: dict[str, str] | None = None,
) -> AsyncIterator[Servers]:
    """Our gateway and a stock frontend using it, both listening on 127.0.0.1 of *network*."""
    gw_port, fe_port = free_port(), free_port()
    root = tmp_path / "notebooks"
    root.mkdir(exist_ok=True)
    started: list[Server] = []
    try:
        gateway = spawn(
            "kernelfleet",
            network.wrap(
                [
                    str(BINDIR / "kernelfleet"),
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
            dict(env, **(gateway_env or {})),
            tmp_path / "gateway.log",
            f"http://127.0.0.1:{gw_port}",
        )
        started.append(gateway)
        frontend = spawn(
            kind.command,
            network.wrap(
                [
                    str(BINDIR / kind.command),
                    "--no-browser",
                    "--allow-root",
                    "--ip",
                    "127.0.0.1",
                    f"--port={fe_port}",
                    "--ServerApp.port_retries=0",
                    f"--gateway-url={gateway.url}",
                    "--IdentityProvider.token=",
                    "--ServerApp.password=",
                    f"--ServerApp.root_dir={root}",
                    *kind.extra_args,
                ]
            ),
            dict(env, JUPYTER_GATEWAY_AUTH_TOKEN=GATEWAY_TOKEN),
            tmp_path / f"{kind.id}.log",
            f"http://127.0.0.1:{fe_port}",
        )
        started.append(frontend)
        await asyncio.gather(
            gateway.wait_for_log(rf"listening on http://127\.0\.0\.1:{gw_port}/", 60),
            frontend.wait_for_log(r"Jupyter Server [\d.]+ is running at", 90),
        )
        yield Servers(gateway, frontend, kind, root)
    finally:
        for server in reversed(started):
            stop(server)
        for server in started:
            print(f"----- {server.name} log (tail) -----\n{server.tail()}")


# -- Chromium -------------------------------------------------------------------------------


@dataclass
class Browser:
    context: Any
    page: Any
    expect: Any
    console: list[str]  # every page's console messages and uncaught errors, in order

    async def screenshots(self, name: str) -> list[Path]:
        """Save a screenshot of every open page to the artifacts directory; return the paths."""
        paths = []
        for i, page in enumerate(self.context.pages):
            path = artifacts_dir() / (f"{name}.png" if i == 0 else f"{name}-tab{i + 1}.png")
            with contextlib.suppress(Exception):
                await page.screenshot(path=str(path))
                paths.append(path)
        return paths


@contextlib.asynccontextmanager
async def browser(network: PrivateNetwork, tmp_path: Path) -> AsyncIterator[Browser]:
    """A fresh headless Chromium (its own profile) with one page."""
    from playwright.async_api import async_playwright, expect

    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    try:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                str(profile),
                executable_path=network.browser_executable(tmp_path),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 800},
            )
            try:
                console: list[str] = []
                context.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                context.on("weberror", lambda e: console.append(f"uncaught: {e.error}"))
                page = context.pages[0] if context.pages else await context.new_page()
                context.set_default_timeout(STEP_MS)
                expect.set_options(timeout=STEP_MS)
                yield Browser(context, page, expect, console)
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
