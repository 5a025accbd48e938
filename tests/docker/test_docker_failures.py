"""Docker kernels that cannot start fail the request at once with the engine's words, and
kernels outlive a killed gateway (the next one reattaches them)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.client import result_of
from tests.conftest import client_for, temp_gateway
from tests.contract_backends.helpers import eventually, execute_ok
from tests.docker.engine import DockerEngine
from tests.docker.kernels import GATEWAY_IP, kernel_containers, write_docker_spec
from tests.gatewayproc import GatewayProcess
from tests.k8s.kernels import gateway_config

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

TIMEOUT = 40


async def start_fails(gw: Any, name: str) -> tuple[int, Any, float]:
    c = client_for(gw)
    began = time.monotonic()
    status, body = await c.request("POST", "/api/kernels", {"name": name, "env": {}})
    return status, body, time.monotonic() - began


async def nothing_left(engine: DockerEngine) -> None:
    await eventually(
        lambda: asyncio.to_thread(kernel_containers, engine),
        lambda found: not found,
        "no kernel container left",
        30,
    )


async def test_a_container_that_crashes_at_start_fails_with_its_exit_status_and_log(
    docker_engine: DockerEngine, docker_env: Path, docker_kernel_image: str, tmp_path: Path
) -> None:
    write_docker_spec(
        docker_env,
        "dcrash",
        docker_engine,
        docker_kernel_image,
        launch_timeout=TIMEOUT,
        launcher="/opt/kernelfleet/no-such-launcher.py",
    )
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        status, body, took = await start_fails(gw, "dcrash")
    print(f"crashing container: failed in {took:.1f} s")
    assert status == 500, body
    assert "exit status 2" in body["message"], body
    assert "no-such-launcher" in body["message"] and took < TIMEOUT / 2, (took, body)
    await nothing_left(docker_engine)


async def test_a_missing_image_fails_at_once_and_nothing_is_pulled(
    docker_engine: DockerEngine, docker_env: Path, tmp_path: Path
) -> None:
    since = str(int(time.time()) - 1)
    write_docker_spec(
        docker_env, "dmissing", docker_engine, "kernelfleet.test/no-such-image:1.0",
        launch_timeout=TIMEOUT,
    )  # fmt: skip
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        status, body, took = await start_fails(gw, "dmissing")
    print(f"missing image: failed in {took:.1f} s")
    assert status == 500, body
    message = body["message"]
    assert "no-such-image:1.0 is not on the Docker engine" in message, body
    assert "never pulls" in message and took < 5, (took, body)
    until = str(int(time.time()) + 1)
    events = docker_engine.docker(
        "events", "--since", since, "--until", until, "--filter", "type=image",
        "--format", "{{.Action}} {{.Actor.ID}}",
    ).stdout  # fmt: skip
    assert "pull" not in events, events
    await nothing_left(docker_engine)


async def test_a_stopped_engine_fails_the_launch_with_the_fix(
    docker_engine: DockerEngine, docker_env: Path, docker_kernel_image: str, tmp_path: Path
) -> None:
    write_docker_spec(
        docker_env, "dstopped", docker_engine, docker_kernel_image, launch_timeout=TIMEOUT
    )
    await asyncio.to_thread(docker_engine.stop_engine)
    try:
        async with temp_gateway(**gateway_config(tmp_path)) as gw:
            status, body, took = await start_fails(gw, "dstopped")
    finally:
        await asyncio.to_thread(docker_engine.start_engine)
    print(f"stopped engine: failed in {took:.1f} s")
    assert status == 500, body
    assert "cannot be reached" in body["message"] and "KF_DOCKER_HOST" in body["message"], body
    assert took < TIMEOUT / 2, took


async def test_a_killed_gateways_three_containers_are_reattached_by_the_next_gateway(
    docker_engine: DockerEngine, docker_env: Path, docker_kernel_image: str, tmp_path: Path
) -> None:
    write_docker_spec(docker_env, "dre", docker_engine, docker_kernel_image)
    env = {
        "JUPYTER_PATH": str(docker_env),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "KF_DATA_DIR": str(tmp_path / "gwdata"),
        "KF_CONFIG_DIR": str(tmp_path / "cfg"),
        "KF_SECRET_KEY_FILE": str(tmp_path / "gwdata" / "store.key"),
        "KF_IP": "127.0.0.1",
        "KF_MONITOR_INTERVAL": "0.5",
        "KF_RESPONSE_IP": GATEWAY_IP,
        "KF_RESPONSE_PORT": "0",
    }
    first = GatewayProcess(env)
    kids: list[str] = []
    try:
        for _ in range(3):
            kids.append((await first.client.start_kernel("dre"))["id"])
        for i, kid in enumerate(kids):
            ws = await first.client.connect(kid)
            try:
                await execute_ok(ws, f"state = {i} * 7")
            finally:
                ws.close()
    finally:
        first.kill()
    assert all(kernel_containers(docker_engine, k) for k in kids)

    second = GatewayProcess(env)
    try:
        listed = {k["id"] for k in await second.client.call("GET", "/api/kernels")}
        assert listed == set(kids), second.output()
        for i, kid in enumerate(kids):
            ws = await second.client.connect(kid)
            try:
                _, iopub = await execute_ok(ws, "state")
                assert result_of(iopub) == str(i * 7)  # the same containers, their state there
            finally:
                ws.close()
        for kid in kids:
            await second.client.shutdown_kernel(kid)
        await nothing_left(docker_engine)
    finally:
        assert second.stop() == 0, second.output()
