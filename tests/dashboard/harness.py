"""The parts of the dashboard's browser tests: ``kernelfleet serve`` as a user starts it, in the
tests' private network namespace (tests/browser/harness.py explains why), Chromium there too,
and a few page helpers. The API is called from a second tab at the gateway's origin (the test
process cannot reach the private namespace; Chromium can), so the dashboard's own tab is never
touched by what the test does through the API.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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


async def log_in(page: Any, expect: Any, gateway: Server, token: str = ADMIN_TOKEN) -> None:
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
