"""The parts of the dashboard's browser tests: ``kernelfleet serve`` as a user starts it, in the
tests' private network namespace (tests/browser/harness.py explains why), Chromium there too,
and a few page helpers. The API is called from a second tab at the gateway's origin (the test
process cannot reach the private namespace; Chromium can), so the dashboard's own tab is never
touched by what the test does through the API.

Kernel environments are built from the package index, which the private namespace cannot
reach, so their tests run the gateway in the test process instead (:func:`envs_gateway`, with
the environments API and the dashboard, as ``kernelfleet serve`` installs them) and make its
port reachable from inside the namespace (:func:`reachable_from`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import socket
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from kernelfleet.dashboard.app import install as install_dashboard
from kernelfleet.dashboard.core import Dashboard
from kernelfleet.envs.api import install as install_envs
from kernelfleet.gateway.app import Gateway
from tests.browser.harness import (
    BINDIR,
    GATEWAY_TOKEN,
    PrivateNetwork,
    Server,
    artifacts_dir,
    free_port,
    spawn,
    stop,
)
from tests.conftest import make_config
from tests.envs.conftest import EnvDirs, env_config

ADMIN = "carol"
ADMIN_TOKEN = "tok-carol"
USER_TOKEN = "tok-alice"
#: A user name an attacker would like to see rendered as HTML (a name from the gateway's own
#: configuration: config names are trusted, yet the dashboard must still show it as text).
HOSTILE_USER = '<script>window.__pwned="owner"</script><b>mallory</b>'
HOSTILE_TOKEN = "tok-mallory"
USERS = {USER_TOKEN: "alice", ADMIN_TOKEN: ADMIN, HOSTILE_TOKEN: HOSTILE_USER}


def shots_dir() -> Path:
    """Where the screenshots go: ``$KF_TEST_ARTIFACTS/dashboard`` (by default
    /tmp/kernelfleet-test-artifacts/browser/dashboard)."""
    path = artifacts_dir() / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def shot(page: Any, name: str) -> Path:
    path = shots_dir() / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


@contextlib.asynccontextmanager
async def running_gateway(
    env: dict[str, str], network: PrivateNetwork, tmp_path: Path, extra: dict[str, str]
) -> AsyncIterator[Server]:
    """``kernelfleet serve`` with the dashboard, users alice, carol (admin) and a hostile one."""
    port = free_port()
    gateway_env = dict(
        env,
        KF_USER_TOKENS=json.dumps(USERS),
        KF_ADMIN_USERS=ADMIN,
        KF_DASHBOARD_LIVE_INTERVAL="0.3",
        KF_DASHBOARD_HOST_CHECK_INTERVAL="1",
        **extra,
    )
    server = spawn(
        "kernelfleet",
        network.wrap(
            [
                str(BINDIR / "kernelfleet"),
                "serve",
                "--ip",
                "127.0.0.1",
                "--port",
                str(port),
                "--port-retries",
                "0",
                "--token",
                GATEWAY_TOKEN,
            ]
        ),
        gateway_env,
        tmp_path / "gateway.log",
        f"http://127.0.0.1:{port}",
    )
    try:
        await server.wait_for_log(rf"listening on http://127\.0\.0\.1:{port}/", 60)
        yield server
    finally:
        stop(server)
        print(f"----- gateway log (tail) -----\n{server.tail()}")


def audit_lines(env: dict[str, str]) -> list[dict[str, Any]]:
    path = Path(env["KF_DATA_DIR"]) / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# Run in the API tab: a request to the gateway's REST API with a token, as any client sends it.
API_CALL = """
async ([method, path, token, body]) => {
  const response = await fetch(path, {
    method,
    headers: {Authorization: `token ${token}`, 'Content-Type': 'application/json'},
    body: body === null ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return [response.status, text];
}
"""


class Api:
    """The Kernel Gateway API, called from a tab of its own at the gateway's origin."""

    def __init__(self, page: Any, gateway: Server) -> None:
        self.page = page
        self.gateway = gateway

    @classmethod
    async def open(cls, context: Any, gateway: Server) -> Api:
        page = await context.new_page()
        await page.goto(f"{gateway.url}/healthz")
        return cls(page, gateway)

    async def call(
        self, method: str, path: str, token: str, body: Any = None, expect: int = 200
    ) -> Any:
        status, text = await self.page.evaluate(API_CALL, [method, path, token, body])
        assert status == expect, f"{method} {path}: {status} {text}"
        return json.loads(text) if text else None

    async def start_kernel(self, token: str, name: str = "python3") -> str:
        model = await self.call("POST", "/api/kernels", token, {"name": name}, expect=201)
        return str(model["id"])

    async def kernels(self, token: str = GATEWAY_TOKEN) -> list[str]:
        return [k["id"] for k in await self.call("GET", "/api/kernels", token)]


class Site(Protocol):
    """Where a gateway is: ``url`` without a trailing slash (a :class:`Server`, an :class:`At`)."""

    @property
    def url(self) -> str: ...


class At:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")


async def log_in(page: Any, expect: Any, gateway: Site, token: str = ADMIN_TOKEN) -> None:
    await page.goto(f"{gateway.url}/admin")
    await expect(page).to_have_url(f"{gateway.url}/admin/login?next=%2Fadmin")
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await expect(page.locator("h1")).to_contain_text("Overview")


def chatty_argv(line: str) -> list[str]:
    """A kernel that first writes *line* to its stderr (its log), then is an ipykernel."""
    code = (
        "import sys; sys.stderr.write(sys.argv.pop(1) + '\\n'); sys.stderr.flush(); "
        "from ipykernel import kernelapp; kernelapp.launch_new_instance()"
    )
    return [sys.executable, "-c", code, line, "-f", "{connection_file}"]


# -- kernel environments: a gateway in this process -----------------------------------------

#: The users of :func:`envs_gateway`: carol is an admin, alice is not.
ENV_USERS = {
    "Authenticator": {
        "user_tokens": {ADMIN_TOKEN: ADMIN, USER_TOKEN: "alice"},
        "admin_users": {ADMIN},
    }
}


@contextlib.asynccontextmanager
async def envs_gateway(
    dirs: EnvDirs, *, env: dict[str, Any] | None = None, **sections: dict[str, Any]
) -> AsyncIterator[tuple[Gateway, Dashboard]]:
    """A whole gateway in this process serving the environments API and the dashboard with
    its environment pages, as ``kernelfleet serve`` does."""
    gw = Gateway(
        config=make_config(
            **{**ENV_USERS, **sections, "EnvSettings": env_config(dirs, **(env or {}))}
        )
    )
    dash = install_dashboard(gw, envs=install_envs(gw))
    assert dash is not None
    await gw.start()
    try:
        yield gw, dash
    finally:
        await gw.stop(mode="shutdown")


CLONE_NEWNET = 0x40000000


def _listen_inside(network: PrivateNetwork, port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:*port* of *network*'s namespace. A thread of its own
    enters the namespace (setns changes the calling thread only) and ends once it made it."""
    assert network.holder is not None
    namespace = f"/proc/{network.holder.pid}/ns/net"
    made: list[socket.socket | BaseException] = []

    def enter() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(namespace, "rb") as ns:
                if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns into the private network failed")
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
            sock.setblocking(False)
            made.append(sock)
        except BaseException as exc:
            made.append(exc)

    thread = threading.Thread(target=enter, name="enter-private-network")
    thread.start()
    thread.join()
    (result,) = made
    if isinstance(result, BaseException):
        raise result
    return result


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


@contextlib.asynccontextmanager
async def reachable_from(network: PrivateNetwork, port: int) -> AsyncIterator[None]:
    """Make 127.0.0.1:*port* inside *network* lead to 127.0.0.1:*port* of this process (a
    gateway in the test process), byte for byte: Chromium in the namespace then uses the
    gateway's own URL, and the gateway sees the Host and Origin a browser sends. Nothing to do
    when the network is not private (no root): Chromium shares our namespace then."""
    if not network.private:
        yield
        return
    connections: set[asyncio.Task[Any]] = set()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            connections.discard(task)
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()
            connections.discard(task)

    sock = _listen_inside(network, port)
    server = await asyncio.start_server(forward, sock=sock)
    try:
        yield
    finally:
        server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()
