"""``kernelfleet spec migrate`` of Docker kernelspecs, end to end on the test engine: Gateway
Provisioners' own ``jupyter docker-spec install`` (a container spec and, with ``--swarm``, a
Swarm service spec; GP installed at test time, see tests/gpspecs.py) and an Enterprise Gateway
``DockerProcessProxy`` spec written by hand from EG's documented format are refused by a real
in-process gateway with the fix in the error, migrated by the command an admin runs, and a
kernel of each migrated spec then starts through that same gateway in a container (or a
service) of the engine, runs code there, and leaves no container or service behind.

Their specs name the image (``image_name``, set to the test kernel image) and nothing of the
engine: the gateway's own settings say which engine (``KF_DOCKER_HOST``, as EG's ``DOCKER_HOST``)
and the network (the default bridge), as on an admin's gateway.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.client import GatewayClient, stdout_of
from kernelfleet.gateway.app import Gateway
from kernelfleet.provisioners.docker import DockerProvisioner
from tests.conftest import client_for, temp_gateway
from tests.contract_backends.helpers import eventually, execute_ok, within
from tests.docker.engine import DockerEngine
from tests.docker.kernels import kernel_containers, kernel_services
from tests.gpspecs import eg_argv, eg_spec, findings, load, migrate_cli, render
from tests.k8s.kernels import gateway_config

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

GP_NAME = "gp_docker_python"
GP_SWARM = "gp_docker_swarm_python"
EG_NAME = "python_docker"
PROBE = "import os, socket; print(socket.gethostname(), os.environ['KERNEL_ID'])"


def eg_docker_spec(kernels: Path, image: str) -> Path:
    """EG's python_docker as its docs write it: launch_docker.py with the
    ``--RemoteProcessProxy.*`` options, the image in the process proxy's config."""
    launcher = kernels / EG_NAME / "scripts" / "launch_docker.py"
    argv = eg_argv("python", str(launcher), kernel_class_name="ipykernel.ipkernel.IPythonKernel")
    return eg_spec(
        kernels,
        EG_NAME,
        "docker_swarm.DockerProcessProxy",
        config={"image_name": image},
        argv=argv,
        display_name="Python on Docker",
    )


async def run_in_the_engine(
    client: GatewayClient, gw: Gateway, engine: DockerEngine, name: str, *, service: bool
) -> str:
    """Start a kernel of spec *name*, check it runs in its own container (as a Swarm service
    when *service*), shut it down and wait until nothing of it is left: its host name."""
    kid = (await client.start_kernel(name))["id"]
    try:
        record = gw.registry.records[kid]
        prov = record.manager.provisioner if record.manager else None
        assert isinstance(prov, DockerProvisioner) and prov.is_service == service, prov
        if service:
            assert [s["Spec"]["Name"] for s in kernel_services(engine, kid)] == [f"kf-{kid}"]
        else:
            assert [c["Names"] for c in kernel_containers(engine, kid)] == [[f"/kf-{kid}"]]
        ws = await client.connect(kid)
        try:
            _, iopub = await execute_ok(ws, PROBE)
        finally:
            ws.close()
        hostname, got_kid = stdout_of(iopub).split()
        assert got_kid == kid and hostname == f"kf-{kid}", iopub
    finally:
        await client.shutdown_kernel(kid)

    def left() -> list[Any]:
        return [*kernel_services(engine, kid), *kernel_containers(engine, kid)]

    await eventually(
        lambda: asyncio.to_thread(left), lambda found: not found, f"nothing of {kid} left", 30
    )
    return str(hostname)


async def test_gp_and_eg_docker_specs_are_refused_then_migrated_and_run_in_the_engine(
    docker_swarm: DockerEngine,
    docker_env: Path,
    docker_kernel_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, image = docker_swarm, docker_kernel_image
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    kernels = theirs / "share" / "jupyter" / "kernels"
    await asyncio.gather(
        asyncio.to_thread(
            render, "docker-spec", theirs, "--kernel-name", GP_NAME, "--image-name", image
        ),
        asyncio.to_thread(
            render,
            "docker-spec",
            theirs,
            "--kernel-name",
            GP_SWARM,
            "--image-name",
            image,
            "--swarm",
        ),
    )
    for name, provisioner in (
        (GP_NAME, "docker-provisioner"),
        (GP_SWARM, "docker-swarm-provisioner"),
    ):
        stanza = load(kernels / name)["metadata"]["kernel_provisioner"]
        assert stanza["provisioner_name"] == provisioner and stanza["config"]["image_name"] == image
    eg_docker_spec(kernels, image)
    originals = {name: load(kernels / name) for name in (GP_NAME, GP_SWARM, EG_NAME)}

    monkeypatch.setenv(
        "JUPYTER_PATH", f"{ours / 'share' / 'jupyter'}:{theirs / 'share' / 'jupyter'}"
    )
    monkeypatch.setenv("KF_DOCKER_HOST", engine.host)
    # the catalog re-reads the Jupyter path on each request (2 s by default)
    config = gateway_config(tmp_path, KernelSpecCatalog={"refresh_seconds": 0})
    async with temp_gateway(**config) as gw:
        client = client_for(gw)
        # not migrated yet: refused at once, the fix in the error, nothing started (GP's
        # originals are hidden by jupyter_client instead, their provisioners not being
        # installed: see tests/gateway/test_not_migrated.py)
        before = len(kernel_containers(engine)) + len(kernel_services(engine))
        status, body = await client.request("POST", "/api/kernels", {"name": EG_NAME})
        assert status == 500, body
        assert body["reason"] == "Kernelspec Not Migrated", body
        assert f"'kernelfleet spec migrate {EG_NAME}'" in body["message"], body
        assert "DockerProcessProxy" in body["message"], body
        assert len(kernel_containers(engine)) + len(kernel_services(engine)) == before

        report = await asyncio.to_thread(migrate_cli, ours, GP_NAME, GP_SWARM, EG_NAME)
        for name, field in (
            (GP_NAME, "kernel_provisioner.config.image_name"),
            (GP_SWARM, "kernel_provisioner.config.image_name"),
            (EG_NAME, "process_proxy.config.image_name"),
        ):
            assert findings(report, name, "docker")[field] == (
                "mapped",
                f"--image={image}",
            ), name
        assert findings(report, GP_SWARM, "docker")["docker-swarm-provisioner"] == (
            "mapped",
            "--swarm",
        )
        assert {name: load(kernels / name) for name in originals} == originals  # untouched
        for name in originals:
            migrated = load(ours / "share" / "jupyter" / "kernels" / name)
            stanza = migrated["metadata"]["kernel_provisioner"]
            assert stanza["provisioner_name"] == "kernelfleet-docker", migrated
            assert stanza["config"]["image"] == image
            assert stanza["config"].get("swarm", False) == (name == GP_SWARM), migrated

        # the same names now start the migrated specs: containers, and a Swarm service
        async with within("the kernels of the migrated specs", 120):
            await asyncio.gather(
                run_in_the_engine(client, gw, engine, GP_NAME, service=False),
                run_in_the_engine(client, gw, engine, GP_SWARM, service=True),
                run_in_the_engine(client, gw, engine, EG_NAME, service=False),
            )
        assert await client.call("GET", "/api/kernels") == []
