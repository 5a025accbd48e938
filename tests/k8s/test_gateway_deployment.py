"""The gateway deployed on the cluster it serves: deploy/kubernetes/gateway.yaml with the gateway
image of this checkout (``kernelfleet image build gateway``), its readiness probe, and a kernel
started through it — reached at the gateway pod's IP (the test cluster has no kube-proxy)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kernelfleet.client import GatewayClient, stdout_of
from tests.contract_backends.helpers import eventually, execute_ok
from tests.k8s.cluster import K8sCluster
from tests.k8s.kernels import GATEWAY_NAMESPACE, MANIFESTS, Identity, kernel_pods

pytestmark = [pytest.mark.k8s, pytest.mark.slow, pytest.mark.timeout(420)]

TOKEN = "deployment-test-token"


def manifests(gateway_image: str, kernel_image: str, cluster: K8sCluster) -> list[dict[str, Any]]:
    """gateway.yaml with this run's images, the token Secret its comment says to create, and
    the API server's address given to the gateway pod itself (no kube-proxy here to route the
    kubernetes Service)."""
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "gateway.yaml").read_text()) if d]
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "kernelfleet-auth", "namespace": GATEWAY_NAMESPACE},
        "stringData": {"token": TOKEN},
    }
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            spec = json.loads(doc["data"]["python.kernel.json"])
            spec["metadata"]["kernel_provisioner"]["config"]["image"] = kernel_image
            doc["data"]["python.kernel.json"] = json.dumps(spec)
        elif doc["kind"] == "Deployment":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            container["image"] = gateway_image
            host, _, port = cluster.api_url.removeprefix("https://").partition(":")
            container["env"] += [
                {"name": "KUBERNETES_SERVICE_HOST", "value": host},
                {"name": "KUBERNETES_SERVICE_PORT", "value": port},
            ]
    return [secret, *docs]


def gateway_pod(cluster: K8sCluster) -> dict[str, Any] | None:
    out = cluster.kubectl(
        "get", "pods", "-n", GATEWAY_NAMESPACE, "-l", "app.kubernetes.io/name=kernelfleet",
        "-o", "json",
    ).stdout  # fmt: skip
    for pod in json.loads(out).get("items") or []:
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
        if conditions.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
            return dict(pod)
    return None


async def test_the_gateway_deployment_becomes_ready_and_starts_a_kernel_pod(
    k8s_cluster: K8sCluster, identity: Identity, kernel_image: str, tmp_path: Path
) -> None:
    from kernelfleet.images.build import build_image

    archive, gateway_image = await asyncio.to_thread(build_image, "gateway")
    if gateway_image not in k8s_cluster.images():
        await asyncio.to_thread(k8s_cluster.import_image, archive)
    applied = tmp_path / "gateway.yaml"
    applied.write_text(yaml.safe_dump_all(manifests(gateway_image, kernel_image, k8s_cluster)))
    k8s_cluster.kubectl("apply", "-f", str(applied))
    try:
        pod = await eventually(
            lambda: asyncio.to_thread(gateway_pod, k8s_cluster),
            lambda found: found is not None,
            "the gateway pod Ready (its readiness probe answered)",
            120,
        )
        assert pod is not None
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        c = GatewayClient(f"http://{pod['status']['podIP']}:8888", token=TOKEN)
        specs = await c.call("GET", "/api/kernelspecs")
        assert "python" in specs["kernelspecs"], specs
        kid = (await c.start_kernel("python"))["id"]
        pods = kernel_pods(k8s_cluster, kid)
        assert len(pods) == 1, pods
        ws = await c.connect(kid)
        try:
            _, iopub = await execute_ok(ws, "import socket; print(socket.gethostname())")
            assert stdout_of(iopub).strip() == pods[0]["metadata"]["name"]
        finally:
            ws.close()
        await c.shutdown_kernel(kid)
        await eventually(
            lambda: asyncio.to_thread(kernel_pods, k8s_cluster, kid),
            lambda left: not left,
            "the kernel pod deleted by the deployed gateway",
            30,
        )
    finally:
        k8s_cluster.kubectl("delete", "-f", str(applied), "--wait=false", check=False)
