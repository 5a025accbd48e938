"""The metrics as a real Prometheus sees them: Debian's ``prometheus`` (2.42) started by the
test scrapes the in-process gateway with the metrics token each second, and what its query API
answers is checked against the gateway's own API while kernels start and stop and a websocket
opens and closes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from tornado.httpclient import AsyncHTTPClient

from kernelfleet.client import GatewayClient
from tests.conftest import client_for, temp_gateway
from tests.testbed import skip_or_fail

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SCRAPE_TOKEN = "scrape-token-for-the-test"
HOSTILE = 'evil"} 1\n<script>'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Prometheus:
    """One Prometheus server and its query API."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    async def get(self, path: str) -> Any:
        resp = await AsyncHTTPClient().fetch(self.url + path, raise_error=False)
        assert resp.code == 200, (path, resp.code, resp.body[:500])
        return json.loads(resp.body)["data"]

    async def query(self, expr: str) -> float | None:
        """The value of *expr* (one series, or none: None)."""
        result = (await self.get("/api/v1/query?" + urlencode({"query": expr})))["result"]
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    async def targets(self) -> str:
        return json.dumps((await self.get("/api/v1/targets"))["activeTargets"], indent=1)

    async def until(self, expr: str, expected: float | Callable[[], Awaitable[float]]) -> float:
        """Wait (a few scrapes) until *expr* equals *expected*: a number, or what the gateway's
        API says now."""
        last: float | None = None
        want = None
        for _ in range(150):
            want = expected if isinstance(expected, int | float) else await expected()
            last = await self.query(expr)
            if last == want:
                return last
            await asyncio.sleep(0.2)
        raise AssertionError(
            f"{expr} is {last} in Prometheus, the API says {want}\ntargets: "
            f"{await self.targets()}\nlog: {self.log.read_text()[-2000:]}"
        )


@contextlib.asynccontextmanager
async def prometheus(tmp_path: Path, target: str, metrics_path: str) -> AsyncIterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        skip_or_fail(
            "Prometheus",
            "Debian's prometheus package is not installed (apt-get install --no-install-recommends "
            "prometheus, or make system-deps)",
        )
    token = tmp_path / "scrape.token"
    token.write_text(SCRAPE_TOKEN)
    token.chmod(0o600)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "kernelfleet",
                        "metrics_path": metrics_path,
                        "authorization": {"type": "Bearer", "credentials_file": str(token)},
                        "static_configs": [{"targets": [target]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        server = Prometheus(f"http://127.0.0.1:{port}", log)
        for _ in range(150):
            if proc.returncode is not None:
                raise AssertionError(f"prometheus exited ({proc.returncode}): {log.read_text()}")
            with contextlib.suppress(OSError):
                resp = await AsyncHTTPClient().fetch(server.url + "/-/ready", raise_error=False)
                if resp.code == 200:
                    break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"prometheus never became ready: {log.read_text()}")
        yield server
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def running_in_api(client: GatewayClient, name: str | None = None) -> float:
    """Kernels the API lists as alive (of kernelspec *name*, or all)."""
    kernels = await client.call("GET", "/api/kernels")
    return float(
        sum(
            1
            for k in kernels
            if k["execution_state"] not in ("starting", "dead") and name in (None, k["name"])
        )
    )


async def test_prometheus_scrapes_what_the_api_shows(kernelspec_dir: Path, tmp_path: Path) -> None:
    async with temp_gateway(Metrics={"metrics_token": SCRAPE_TOKEN}) as gw:
        admin = client_for(gw)

        async def running() -> float:
            return await running_in_api(admin)

        async def running_python3() -> float:
            return await running_in_api(admin, "python3")

        async def connections() -> float:
            return float(sum(k["connections"] for k in await admin.call("GET", "/api/kernels")))

        async with prometheus(tmp_path, f"127.0.0.1:{gw.bound_port}", "/metrics") as prom:
            # scraped with the metrics token (a 401 would make `up` 0)
            await prom.until('up{job="kernelfleet"}', 1)
            await prom.until('kernelfleet_build_info{version!=""}', 1)

            first = (await admin.start_kernel())["id"]
            second = (await admin.start_kernel())["id"]
            running_expr = 'sum(kernelfleet_kernels{state="running"})'
            assert await prom.until(running_expr, running) == 2
            await prom.until(
                'sum(kernelfleet_kernels{state="running", kernelspec="python3", backend="local"})',
                running_python3,
            )
            await prom.until(
                'sum(kernelfleet_kernel_starts_total{kernelspec="python3", outcome="ok"})', 2
            )
            await prom.until(
                'sum(kernelfleet_kernel_start_duration_seconds_count{backend="local"})', 2
            )

            # a refused start with a hostile kernelspec name: counted, its name no label
            status, _ = await admin.request("POST", "/api/kernels", {"name": HOSTILE})
            assert status in (400, 404)
            await prom.until(
                'sum(kernelfleet_kernel_starts_total{outcome="refused", kernelspec=""})', 1
            )
            assert await prom.query('count({kernelspec=~".*(evil|script).*"})') is None

            # one websocket, with a cell run through it
            sock = await admin.connect(first)
            try:
                reply, _ = await sock.execute("print(6 * 7)")
                assert reply["status"] == "ok"
                assert await prom.until("kernelfleet_websocket_connections", connections) == 1
                sent = 'kernelfleet_websocket_messages_total{direction="from_client"}'
                assert (await prom.query(sent) or 0) >= 1
                received = 'kernelfleet_websocket_bytes_total{direction="to_client"}'
                assert (await prom.query(received) or 0) > 0
            finally:
                sock.close()
            await prom.until("kernelfleet_websocket_connections", 0)
            assert await connections() == 0

            # stopping kernels: the counts follow the API down to 0 (not to "no data")
            await admin.shutdown_kernel(first)
            assert await prom.until(running_expr, running) == 1
            await prom.until(
                'kernelfleet_kernel_actions_total{action="shutdown", outcome="ok", cause=""}', 1
            )
            await admin.shutdown_kernel(second)
            assert await prom.until(running_expr, running) == 0
            assert await prom.query('count(kernelfleet_kernels{state="running"})') == 1
