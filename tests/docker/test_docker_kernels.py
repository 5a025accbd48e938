"""Python kernels in containers of the real test engine, through a real in-process gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kernelfleet.client import result_of, stdout_of
from kernelfleet.provisioners.docker import DockerProvisioner
from kernelfleet.provisioners.docker_spec import LABEL_KERNEL, LABEL_USER
from tests.conftest import client_for, temp_gateway
from tests.contract_backends.helpers import eventually, execute_ok, within
from tests.docker.engine import DockerEngine
from tests.docker.kernels import inspect, kernel_containers, write_docker_spec
from tests.k8s.kernels import gateway_config

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


async def no_containers_left(engine: DockerEngine, kernel_id: str | None = None) -> None:
    await eventually(
        lambda: asyncio.to_thread(kernel_containers, engine, kernel_id),
        lambda found: not found,
        f"no container of kernel {kernel_id or '(any)'} left",
        30,
    )


def cgroup_value(controller: str, container_id: str, name: str) -> str:
    """A cgroup v1 file of the container, read from this machine."""
    found = list(Path(f"/sys/fs/cgroup/{controller}").glob(f"**/{container_id}/{name}"))
    assert found, f"no {controller} cgroup of {container_id[:12]}"
    return found[0].read_text().strip()


async def test_a_python_kernel_container_runs_code_interrupts_restarts_and_leaves_nothing(
    docker_engine: DockerEngine, docker_env: Path, docker_kernel_image: str, tmp_path: Path
) -> None:
    write_docker_spec(
        docker_env,
        "dpy",
        docker_engine,
        docker_kernel_image,
        memory="256Mi",
        cpus="0.5",
        pids=200,
    )
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        c = client_for(gw)
        model = await c.start_kernel("dpy", env={"KERNEL_USERNAME": "alice"})
        kid = model["id"]
        record = gw.registry.records[kid]
        prov = record.manager.provisioner if record.manager else None
        assert isinstance(prov, DockerProvisioner)
        name = prov.container
        assert name == f"kf-{kid}"
        info = inspect(docker_engine, name)
        labels = info["Config"]["Labels"]
        assert labels[LABEL_KERNEL] == kid and labels[LABEL_USER] == "alice", labels
        host = info["HostConfig"]
        assert host["CapDrop"] == ["ALL"] and host["AutoRemove"] is False
        got = await c.call("GET", f"/api/kernels/{kid}")
        assert got["docker"]["container"] == name and got["docker"]["ip"].startswith("10.92.0.")

        # the limits, as the kernel's cgroups hold them
        cid = info["Id"]
        assert cgroup_value("memory", cid, "memory.limit_in_bytes") == str(256 * 2**20)
        assert cgroup_value("cpu", cid, "cpu.cfs_quota_us") == "50000"
        assert cgroup_value("pids", cid, "pids.max") == "200"

        ws = await c.connect(kid)
        try:
            code = "import os, socket; print(socket.gethostname(), os.getuid(), os.getgid())"
            _, iopub = await execute_ok(ws, code)
            assert stdout_of(iopub).split() == [name, "1000", "1000"], iopub
            cell = asyncio.ensure_future(ws.execute("import time; time.sleep(60)"))
            await asyncio.sleep(1.5)
            await c.call("POST", f"/api/kernels/{kid}/interrupt", {}, expect=204)
            async with within("the interrupted cell", 20):
                reply, _ = await cell
            assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
            _, iopub = await execute_ok(ws, "x = 41; x + 1")
            assert result_of(iopub) == "42"
        finally:
            ws.close()

        status, logs = await c.request("GET", f"/api/kernels/{kid}/logs")
        assert status == 200 and "kernelfleet launcher" in str(logs), str(logs)[-2000:]

        await c.call("POST", f"/api/kernels/{kid}/restart", {})
        assert prov.container == f"kf-{kid}-r1"
        ws = await c.connect(kid)
        try:
            _, iopub = await execute_ok(ws, "'x' in dir()")
            assert result_of(iopub) == "False"
        finally:
            ws.close()
        assert [c["Names"] for c in kernel_containers(docker_engine, kid)] == [[f"/kf-{kid}-r1"]]

        await c.shutdown_kernel(kid)
        await no_containers_left(docker_engine, kid)


async def test_impersonation_runs_the_container_as_the_users_uid_and_refuses_root(
    docker_engine: DockerEngine, docker_env: Path, docker_kernel_image: str, tmp_path: Path
) -> None:
    write_docker_spec(
        docker_env,
        "dimp",
        docker_engine,
        docker_kernel_image,
        impersonation_enabled=True,
        user_ids={"bob": "2001:3001", "toor": "0"},
        host_users=True,
    )
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        c = client_for(gw)
        for user, words in (
            ("toor", "uid or gid 0"),
            ("root", "not allowed to start kernels"),  # the gateway's own unauthorized_users
            ("nosuchuser-kf", "no account"),
        ):
            got, body = await c.request(
                "POST", "/api/kernels", {"name": "dimp", "env": {"KERNEL_USERNAME": user}}
            )
            assert got == 403 and words in body["message"], (user, body)
        assert not kernel_containers(docker_engine)
        kid = (await c.start_kernel("dimp", env={"KERNEL_USERNAME": "bob"}))["id"]
        ws = await c.connect(kid)
        try:
            _, iopub = await execute_ok(ws, "import os; print(os.getuid(), os.getgid())")
            assert stdout_of(iopub).split() == ["2001", "3001"], iopub
        finally:
            ws.close()
        await c.shutdown_kernel(kid)
    await no_containers_left(docker_engine)


async def test_a_cell_past_the_memory_limit_kills_the_kernel_which_is_reported_dead_with_why(
    docker_engine: DockerEngine, docker_env: Path, docker_kernel_image: str, tmp_path: Path
) -> None:
    write_docker_spec(docker_env, "doom", docker_engine, docker_kernel_image, memory="128Mi")
    config = gateway_config(tmp_path, KernelMonitor={"restart_dead_kernels": False})
    async with temp_gateway(**config) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel("doom"))["id"]
        ws = await c.connect(kid)
        try:
            await ws.send(ws.execute_request("blocks = [bytearray(2**20) for _ in range(600)]"))
            async with within("the notice of the kernel's death", 60):
                notice = await ws.wait_for(
                    lambda m: m["msg_type"] == "stream" and "kernelfleet" in m["content"]["text"]
                )
            assert "ran out of memory" in notice["content"]["text"], notice
            async with within("the dead status", 10):
                await ws.wait_for(
                    lambda m: (
                        m["msg_type"] == "status" and m["content"]["execution_state"] == "dead"
                    )
                )
        finally:
            ws.close()
        model = await c.call("GET", f"/api/kernels/{kid}")
        assert model["execution_state"] == "dead", model
        record = gw.registry.records[kid]
        assert record.reason is not None and "out of memory" in record.reason, record.reason
        # the machine is fine: the gateway answers, and another kernel starts and runs
        other = (await c.start_kernel("doom"))["id"]
        ws = await c.connect(other)
        try:
            _, iopub = await execute_ok(ws, "6 * 7")
            assert result_of(iopub) == "42"
        finally:
            ws.close()
        await c.shutdown_kernel(other)
        await c.shutdown_kernel(kid)
    await no_containers_left(docker_engine)
