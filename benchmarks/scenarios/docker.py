"""A kernel container through the gateway against ``docker run`` of the same image, same run.

The run brings up the test suite's private Docker engine (tests/docker/engine.py; root and
Debian's docker.io needed), loads the Python kernel image, and stops the engine at the end.

- **bare**: what ``docker run`` does, through the Engine API: create and start a container of
  the same image whose command writes a connection file we chose and execs ipykernel, then
  send ``kernel_info_request`` to its bridge address until the first reply (the address is
  known from the start response's inspect: Docker assigns it before the process runs).
- **kernelfleet**: POST /api/kernels of a ``kernelfleet-docker`` kernelspec → the first
  ``kernel_info_reply`` on its websocket, through a gateway process.

Target: ≤ 1.15x the bare limit (issue 13). Alternated bare / gateway, n = 20 (quick: 3).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import resource
import secrets
import statistics
import sys
import time
import uuid
from typing import Any

from benchmarks.common import Metric, ScenarioResult, summary
from benchmarks.scenarios import Context, details_of, scenario
from benchmarks.scenarios.fleet import _env
from benchmarks.scenarios.k8s import PORTS, _kernel_info
from benchmarks.scenarios.local import _attempts, _start_all

DOCKER_START_TARGET = 1.15
_STATE: dict[str, Any] = {}


def _missing() -> str | None:
    try:
        from tests.docker.engine import missing_requirements
    except ImportError:
        return "tests/docker/engine.py not importable"
    return missing_requirements()


def _engine() -> tuple[Any, str]:
    """(engine, image): started once per benchmark run."""
    if "engine" not in _STATE:
        from kernelfleet.images.build import build_image
        from tests.docker.engine import DockerEngine

        engine = DockerEngine().up()
        _STATE["engine"] = engine
        atexit.register(teardown)
        archive, ref = build_image("python")
        if ref not in engine.images():
            engine.load_image(archive)
        _STATE["image"] = ref
    return _STATE["engine"], _STATE["image"]


def teardown() -> None:
    engine = _STATE.pop("engine", None)
    if engine is not None:
        engine.down()


async def _bare_start(api: Any, image: str) -> float:
    conn = {
        **PORTS,
        "ip": "0.0.0.0",
        "key": secrets.token_hex(16),
        "transport": "tcp",
        "signature_scheme": "hmac-sha256",
    }
    script = 'printf %s "$CONN" > /tmp/k.json && exec python3 -m ipykernel_launcher -f /tmp/k.json'
    body = {
        "Image": image,
        "Entrypoint": ["/bin/sh", "-c", script],
        "Cmd": [],
        "Env": [f"CONN={json.dumps(conn)}"],
        "User": "1000:1000",
        "HostConfig": {"NetworkMode": "bridge"},
    }
    name = f"kf-bench-bare-{uuid.uuid4().hex[:10]}"
    loop = asyncio.get_running_loop()
    began = time.perf_counter()
    await api.post("/containers/create", body, name=name)
    try:
        await api.post(f"/containers/{name}/start")
        info = await api.get(f"/containers/{name}/json")
        ip = info["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        await _kernel_info(ip, conn, loop.time() + 60)
        return time.perf_counter() - began
    finally:
        await api.delete(f"/containers/{name}", force="1")


@scenario(
    "docker_cold_start",
    "kernel container: POST → kernel_info vs docker run of the same image → kernel_info",
    group="docker",
    requires=_missing,
)
async def docker_cold_start(ctx: Context) -> ScenarioResult:
    from kernelfleet.transport.docker_api import DockerApi, Endpoint
    from tests.docker.kernels import GATEWAY_IP, write_docker_spec

    n = ctx.n(20, 3)
    engine, image = await asyncio.to_thread(_engine)
    write_docker_spec(ctx.env.jupyter_path, "docker_python", engine, image)
    api = DockerApi(Endpoint(engine.host))
    with _env({"KF_RESPONSE_IP": GATEWAY_IP, "KF_RESPONSE_PORT": "0"}):
        gw = await ctx.gateway("gateway-docker")
    bare: list[float] = []
    kernel: list[float] = []
    failures: list[str] = []
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)

    async def one_bare() -> None:
        bare.append(await _attempts(lambda: _bare_start(api, image), failures))

    async def one_kernel() -> None:
        async def go() -> float:
            k = ctx.gateway_kernel(gw, kernel_name="docker_python")
            (t,) = await _start_all([k])
            await k.shutdown()
            return float(t["first_reply"])

        kernel.append(await _attempts(go, failures))

    try:
        await one_bare()  # warm-up of both paths (page cache, the events stream)
        await one_kernel()
        bare.clear()
        kernel.clear()
        for i in range(n):
            first, second = (one_bare, one_kernel) if i % 2 == 0 else (one_kernel, one_bare)
            await first()
            await second()
    finally:
        await ctx.release_kernels()
        await ctx.stop_gateway("gateway-docker")
        await api.close()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    b, k = summary(bare), summary(kernel)
    paired = [y / x for x, y in zip(bare, kernel, strict=True)]
    return ScenarioResult(
        "docker_cold_start",
        [
            Metric(
                "kernel container start p50", "s", b["p50"], k["p50"], DOCKER_START_TARGET, "max"
            ),
            Metric(
                "container start, median of paired ratios",
                "x",
                None,
                statistics.median(paired),
                note="kernel_i / bare_i of back-to-back starts",
            ),
            Metric(
                "benchmark client CPU",
                "s",
                None,
                round(client_cpu, 2),
                note=f"of {sum(bare) + sum(kernel):.0f} s measured: not the bottleneck",
            ),
        ],
        {
            "bare": b,
            "kernel": k,
            "samples": details_of({"bare": bare, "kernel": kernel}),
            "failed_starts_retried": failures,
            "python": sys.executable,
            "pid": os.getpid(),
        },
    )
