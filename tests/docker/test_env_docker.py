"""A kernel environment for container kernels: the kernel image plus one layer holding the
environment, loaded into the real test engine, and a kernel started from it that imports the
environment's packages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernelfleet.client import stdout_of
from tests.conftest import client_for
from tests.contract_backends.helpers import execute_ok
from tests.docker.engine import DockerEngine
from tests.docker.kernels import settings
from tests.envs import conftest as envs
from tests.envs.conftest import EnvDirs, env_gateway, finished
from tests.k8s.kernels import gateway_config

env_dirs = envs.env_dirs  # the fixture of tests/envs

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


async def test_a_container_kernel_runs_the_environment_layered_on_its_image(
    docker_engine: DockerEngine,
    docker_env: Path,
    docker_kernel_image: str,
    env_dirs: EnvDirs,
    tmp_path: Path,
) -> None:
    spec = settings(docker_engine, docker_kernel_image)
    del spec["image"]  # the environment's image
    async with env_gateway(
        env_dirs, env={"image_base": "python"}, **gateway_config(tmp_path)
    ) as gw:
        c = client_for(gw)
        status, body = await c.request(
            "POST",
            "/api/envs",
            {"name": "boxed", "packages": ["toolz==1.0.*"], "python": "3.11", "kind": "docker",
             "spec": spec},
        )  # fmt: skip
        assert status == 202, body
        job = await finished(c, body["job"])
        assert job["ok"], (job["error"], job["lines"][-6:])
        record = await c.call("GET", "/api/envs/boxed")
        assert record["image"] == f"kernelfleet.env/boxed:{record['sha256'][:12]}"
        assert record["image"] in docker_engine.images()
        model = await c.start_kernel("boxed")
        ws = await c.connect(model["id"])
        try:
            _, iopub = await execute_ok(
                ws, "import sys, json, toolz; print(json.dumps([sys.prefix, toolz.__version__]))"
            )
            prefix, version = json.loads(stdout_of(iopub))
            assert prefix == f"/opt/kernelfleet/envs/boxed/{record['sha256'][:12]}"
            assert version.startswith("1.0")
        finally:
            ws.close()
            await c.shutdown_kernel(model["id"])
        status, _ = await c.request("DELETE", "/api/envs/boxed")
        assert status == 204
        assert record["image"] not in docker_engine.images()
