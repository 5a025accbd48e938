"""A real JupyterHub for tests: its own process, free ports, a temporary directory for its
database and cookie secret, the DummyAuthenticator, and SimpleLocalProcessSpawner starting
``jupyterhub-singleuser`` (jupyter_server with JupyterLab) as root in a per-user home under that
directory, pointed at a gateway with ``--gateway-url`` through the spawner's environment.

The proxy is configurable-http-proxy from ``$KF_TEST_CACHE`` (``make hub-deps``). A service
token with the ``admin:users``, ``admin:servers`` and ``tokens`` scopes lets the test create
users' tokens and start their servers through the Hub's REST API.

Every process the Hub starts (the proxy, the single-user servers) carries :attr:`marker` in its
environment: :meth:`JupyterHub.stop` and the conftest kill, by pid, whatever still has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

from tests.gatewayproc import free_port

REPO = Path(__file__).resolve().parents[2]
#: The variable whose value marks a test Hub's processes.
MARKER = "KF_TEST_JUPYTERHUB"
#: Hubs started and not yet stopped; the conftest stops what a failed test left.
RUNNING: list[JupyterHub] = []

CONFIG = """
import sys
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.db_url = "sqlite:///{dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{dir}/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = "{dir}/jupyterhub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {users!r}
c.JupyterHub.load_groups = {groups!r}
c.JupyterHub.services = [{{"name": "kf-test", "api_token": {service_token!r}}}]
c.JupyterHub.load_roles = [
    {{
        "name": "kf-test",
        "scopes": ["admin:users", "admin:servers", "tokens"],
        "services": ["kf-test"],
    }}
]
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{dir}/home/{{username}}"
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = ["--ServerApp.allow_root=True"]
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
# What the README tells an admin to set: the gateway, and the user's own Hub token for it.
c.Spawner.environment = {{
    "JUPYTER_GATEWAY_URL": {gateway_url!r},
    "JUPYTER_GATEWAY_AUTH_TOKEN": lambda spawner: spawner.api_token,
    "JUPYTER_GATEWAY_REQUEST_TIMEOUT": "60",
    {marker!r}: {marker_value!r},
    # Test only: each single-user server forges another user's name.
    "KERNEL_USERNAME": lambda spawner: {forged!r}[spawner.user.name],
}}
"""


class JupyterHub:
    """One Hub process; :meth:`start` it, always :meth:`stop` it."""

    def __init__(
        self,
        directory: Path,
        *,
        gateway_url: str,
        chp: str,
        users: dict[str, str],
        groups: dict[str, list[str]],
    ) -> None:
        """*users* maps each user to the ``KERNEL_USERNAME`` their server forges."""
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hub_port, self.proxy_port, proxy_api_port = free_port(), free_port(), free_port()
        self.service_token = secrets.token_hex(16)
        self.marker = secrets.token_hex(8)
        config = CONFIG.format(
            proxy_port=self.proxy_port,
            hub_port=self.hub_port,
            proxy_api_port=proxy_api_port,
            chp=chp,
            dir=self.dir,
            users=set(users),
            groups={name: {"users": members} for name, members in groups.items()},
            service_token=self.service_token,
            singleuser=str(Path(sys.executable).with_name("jupyterhub-singleuser")),
            gateway_url=gateway_url,
            marker=MARKER,
            marker_value=self.marker,
            forged=users,
        )
        self.config = self.dir / "jupyterhub_config.py"
        self.config.write_text(config)
        self.log_path = self.dir / "jupyterhub.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        """The Hub's REST API, as the gateway reaches it (not through the proxy)."""
        return f"http://127.0.0.1:{self.hub_port}/hub/api"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KF_", "JUPYTER"))}
        env[MARKER] = self.marker
        with open(self.log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(self.config)],
                cwd=self.dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        RUNNING.append(self)
        return proc

    async def start(self, within: float = 60) -> None:
        self.proc = proc = self._spawn()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"JupyterHub exited:\n{self.output()}")
            try:
                response = await self.request("GET", f"{self.public_url}/hub/api/")
                if response.code == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"JupyterHub did not start in {within} s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    async def request(
        self, method: str, url: str, token: str | None = None, body: Any = None
    ) -> HTTPResponse:
        """*url* on the Hub or through its proxy, with *token* (default: the service's)."""
        request = HTTPRequest(
            url,
            method=method,
            headers={"Authorization": f"token {token or self.service_token}"},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=60,
        )
        return await AsyncHTTPClient().fetch(request, raise_error=False)

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.request(method, self.api_url + path, body=body)
        assert response.code < 300, f"{method} {path}: {response.code} {response.body[:300]!r}"
        return json.loads(response.body) if response.body else None

    async def new_token(self, user: str) -> str:
        """A new API token of *user* (as the user would make on the Hub's token page)."""
        model = await self.api("POST", f"/users/{user}/tokens", {"note": "kernelfleet test"})
        return str(model["token"])

    async def start_server(self, user: str, within: float = 60) -> None:
        await self.api("POST", f"/users/{user}/server")
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            model = await self.api("GET", f"/users/{user}")
            server = model.get("servers", {}).get("")
            if server and server.get("ready"):
                return
            await asyncio.sleep(0.25)
        raise AssertionError(f"{user}'s server did not start in {within} s:\n{self.output()}")

    async def stop(self, within: float = 30) -> list[int]:
        """Stop the Hub (it stops its servers and proxy), then kill what is left; return the
        pids that had to be killed."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, within)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)
        if self in RUNNING:
            RUNNING.remove(self)
        return kill_marked(self.marker)


def marked_pids(marker: str) -> list[int]:
    """Live processes whose environment has ``KF_TEST_JUPYTERHUB=<marker>``."""
    needle = f"{MARKER}={marker}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and b") Z " not in stat:
            pids.append(int(entry))
    return pids


def kill_marked(marker: str) -> list[int]:
    pids = marked_pids(marker)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def proxy_command() -> str | None:
    """configurable-http-proxy from the test cache (``make hub-deps``), or None."""
    result = subprocess.run(
        ["sh", str(REPO / "scripts" / "hub-deps.sh"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    path = result.stdout.strip()
    return path if result.returncode == 0 and os.access(path, os.X_OK) else None
