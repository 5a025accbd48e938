"""Kernels as Swarm services (one replica, restart condition none) on the test engine, made a
one-node swarm: placement, the whole lifecycle, and reattach after a gateway restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kernelfleet.client import result_of, stdout_of
from kernelfleet.gateway.app import Gateway
from kernelfleet.provisioners.docker import DockerProvisioner
from tests.conftest import client_for, make_config, temp_gateway
from tests.contract_backends.helpers import eventually, execute_ok, within
from tests.docker.engine import DockerEngine
from tests.docker.kernels import kernel_containers, kernel_services, write_docker_spec
from tests.k8s.kernels import gateway_config

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


async def nothing_left(engine: DockerEngine, kernel_id: str) -> None:
    def found() -> list[object]:
        return [*kernel_services(engine, kernel_id), *kernel_containers(engine, kernel_id)]

    await eventually(
        lambda: asyncio.to_thread(found), lambda f: not f, "no service or container left", 30
    )


async def test_a_kernel_service_is_placed_runs_restarts_survives_a_gateway_restart_and_goes(
    docker_swarm: DockerEngine, docker_env: Path, docker_kernel_image: str, tmp_path: Path
) -> None:
    write_docker_spec(
        docker_env,
        "dsw",
        docker_swarm,
        docker_kernel_image,
        swarm=True,
        placement=["node.role==manager"],
        memory="512Mi",
    )
    config = gateway_config(tmp_path)
    first = Gateway(config=make_config(**config))
    await first.start()
    try:
        c = client_for(first)
        kid = (await c.start_kernel("dsw", env={"KERNEL_USERNAME": "alice"}))["id"]
        record = first.registry.records[kid]
        prov = record.manager.provisioner if record.manager else None
        assert isinstance(prov, DockerProvisioner) and prov.is_service
        name = f"kf-{kid}"
        (service,) = kernel_services(docker_swarm, kid)
        spec = service["Spec"]
        assert spec["Name"] == name
        template = spec["TaskTemplate"]
        assert template["Placement"]["Constraints"] == ["node.role==manager"]
        assert template["RestartPolicy"]["Condition"] == "none"
        assert template["Resources"]["Limits"]["MemoryBytes"] == 512 * 2**20
        model = await c.call("GET", f"/api/kernels/{kid}")
        assert model["docker"]["service"] == name and model["docker"]["ip"].startswith("10.92.")

        ws = await c.connect(kid)
        try:
            _, iopub = await execute_ok(ws, "import socket; print(socket.gethostname())")
            assert stdout_of(iopub).strip() == name, iopub
            cell = asyncio.ensure_future(ws.execute("import time; time.sleep(60)"))
            await asyncio.sleep(1.5)
            await c.call("POST", f"/api/kernels/{kid}/interrupt", {}, expect=204)
            async with within("the interrupted cell", 20):
                reply, _ = await cell
            assert reply["ename"] == "KeyboardInterrupt", reply
        finally:
            ws.close()

        await c.call("POST", f"/api/kernels/{kid}/restart", {})
        assert prov.container == f"kf-{kid}-r1"
        await eventually(
            lambda: asyncio.to_thread(kernel_services, docker_swarm, kid),
            lambda found: [s["Spec"]["Name"] for s in found] == [f"kf-{kid}-r1"],
            "only the restarted service",
            30,
        )
        ws = await c.connect(kid)
        try:
            await execute_ok(ws, "kept = 6 * 7")
        finally:
            ws.close()
        status, logs = await c.request("GET", f"/api/kernels/{kid}/logs")
        assert status == 200 and "kernelfleet launcher" in str(logs), str(logs)[-2000:]
    finally:
        await first.stop(mode="leave")

    async with temp_gateway(**config) as second:
        c = client_for(second)
        assert [k["id"] for k in await c.call("GET", "/api/kernels")] == [kid]
        ws = await c.connect(kid)
        try:
            _, iopub = await execute_ok(ws, "kept")
            assert result_of(iopub) == "42"  # the same service's kernel, its state there
        finally:
            ws.close()
        await c.shutdown_kernel(kid)
    await nothing_left(docker_swarm, kid)


async def test_a_service_no_node_can_take_fails_with_swarms_reason(
    docker_swarm: DockerEngine, docker_env: Path, docker_kernel_image: str, tmp_path: Path
) -> None:
    write_docker_spec(
        docker_env,
        "dnowhere",
        docker_swarm,
        docker_kernel_image,
        swarm=True,
        placement=["node.labels.gpu==yes"],
        launch_timeout=40,
    )
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        status, body = await client_for(gw).request(
            "POST", "/api/kernels", {"name": "dnowhere", "env": {}}
        )
    assert status == 503, body
    assert "no Swarm node can take" in body["message"], body
    assert "gpu" in body["message"] or "constraint" in body["message"], body
    await eventually(
        lambda: asyncio.to_thread(kernel_services, docker_swarm),
        lambda found: not found,
        "no service left",
        30,
    )
