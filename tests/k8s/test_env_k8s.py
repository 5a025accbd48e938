"""A kernel environment for pods: the kernel image plus one layer holding the environment,
imported into the node's containerd, and a kernel pod started from it that imports the
environment's packages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernelfleet.client import stdout_of
from tests.conftest import client_for
from tests.contract_backends.helpers import execute_ok
from tests.envs import conftest as envs
from tests.envs.conftest import EnvDirs, env_gateway, finished
from tests.k8s.cluster import K8sCluster
from tests.k8s.kernels import KERNELS_NAMESPACE, Identity, gateway_config, kernel_pods

env_dirs = envs.env_dirs  # the fixture of tests/envs

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(300)]


async def test_a_kernel_pod_runs_the_environment_layered_on_its_image(
    k8s_cluster: K8sCluster,
    k8s_env: Path,
    identity: Identity,
    kernel_image: str,
    env_dirs: EnvDirs,
    tmp_path: Path,
) -> None:
    spec = {**identity.settings(), "namespace": KERNELS_NAMESPACE, "launch_timeout": 120}
    settings = {"image_base": "python", "containerd_socket": str(k8s_cluster.containerd_socket)}
    async with env_gateway(env_dirs, env=settings, **gateway_config(tmp_path)) as gw:
        c = client_for(gw)
        status, body = await c.request(
            "POST",
            "/api/envs",
            {"name": "podded", "packages": ["toolz==1.0.*"], "python": "3.11", "kind": "k8s",
             "spec": spec},
        )  # fmt: skip
        assert status == 202, body
        job = await finished(c, body["job"])
        assert job["ok"], (job["error"], job["lines"][-6:])
        record = await c.call("GET", "/api/envs/podded")
        digest = record["sha256"][:12]
        assert record["image"] == f"kernelfleet.env/podded:{digest}"
        assert any(record["image"] in ref for ref in k8s_cluster.images())
        model = await c.start_kernel("podded")
        kid = model["id"]
        ws = await c.connect(kid)
        try:
            _, iopub = await execute_ok(
                ws, "import sys, json, toolz; print(json.dumps([sys.prefix, toolz.__version__]))"
            )
            prefix, version = json.loads(stdout_of(iopub))
            assert prefix == f"/opt/kernelfleet/envs/podded/{digest}"
            assert version.startswith("1.0")
            (pod,) = kernel_pods(k8s_cluster, kid)
            assert pod["spec"]["containers"][0]["image"].endswith(f"podded:{digest}")
        finally:
            ws.close()
            await c.shutdown_kernel(kid)
