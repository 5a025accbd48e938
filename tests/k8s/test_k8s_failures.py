"""Starts that cannot succeed fail fast with the cluster's own reason; a killed gateway's pods are
re-attached by the next one. Real cluster, real scheduler, real kubelet and registry."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.client import result_of, stdout_of
from tests.conftest import client_for, temp_gateway
from tests.contract_backends.helpers import eventually, execute_ok
from tests.gatewayproc import GatewayProcess
from tests.k8s.cluster import K8sCluster
from tests.k8s.kernels import R_ARGV, Identity, gateway_config, kernel_pods, write_k8s_spec

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(240)]

#: Launch timeout of the failure tests: each must fail well before it.
TIMEOUT = 60


async def start_fails(
    gw: Any, name: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], float]:
    c = client_for(gw)
    started = time.monotonic()
    status, body = await c.request("POST", "/api/kernels", {"name": name, "env": env or {}})
    return status, body, time.monotonic() - started


async def nothing_left(cluster: K8sCluster) -> None:
    await eventually(
        lambda: asyncio.to_thread(kernel_pods, cluster),
        lambda pods: not pods,
        "no kernel pod left",
        30,
    )


async def test_a_pod_no_node_can_take_fails_at_once_with_the_schedulers_reason(
    k8s_cluster: K8sCluster, k8s_env: Path, identity: Identity, kernel_image: str, tmp_path: Path
) -> None:
    write_k8s_spec(
        k8s_env, "kbig", identity, kernel_image, launch_timeout=TIMEOUT, max_memory="4Ti"
    )
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        status, body, took = await start_fails(gw, "kbig", {"KERNEL_MEMORY": "2Ti"})
    print(f"unschedulable: failed in {took:.1f} s")
    assert status == 503, body
    assert "Insufficient memory" in body["message"] and took < TIMEOUT / 2, (took, body)
    await nothing_left(k8s_cluster)


async def test_a_per_kernel_quota_exceeded_fails_with_the_quota_named(
    k8s_cluster: K8sCluster, k8s_env: Path, identity: Identity, kernel_image: str, tmp_path: Path
) -> None:
    identity.apply("rbac-per-kernel.yaml")
    try:
        write_k8s_spec(
            k8s_env,
            "kquota",
            identity,
            kernel_image,
            launch_timeout=TIMEOUT,
            namespace_mode="per-kernel",
            namespace_quota={"pods": "2", "limits.memory": "256Mi"},
        )
        async with temp_gateway(**gateway_config(tmp_path)) as gw:
            status, body, took = await start_fails(gw, "kquota", {"KERNEL_MEMORY": "512Mi"})
        print(f"quota exceeded: failed in {took:.1f} s")
        assert status == 503, body
        assert "exceeded quota" in body["message"] and took < TIMEOUT / 2, (took, body)
        await nothing_left(k8s_cluster)

        def kernel_namespaces() -> str:
            selector = "app.kubernetes.io/managed-by=kernelfleet"
            return k8s_cluster.kubectl("get", "ns", "-l", selector, "-o", "name").stdout.strip()

        await eventually(
            lambda: asyncio.to_thread(kernel_namespaces),
            lambda left: not left,
            "the failed kernel's namespace deleted",
            60,
        )
    finally:
        identity.remove("rbac-per-kernel.yaml")


async def test_a_tag_missing_from_the_registry_fails_with_the_pull_error(
    k8s_cluster: K8sCluster, k8s_env: Path, identity: Identity, kernel_image: str, tmp_path: Path
) -> None:
    missing = f"{k8s_cluster.registry}/kernelfleet/kernel-python:no-such-tag"
    write_k8s_spec(k8s_env, "kpull", identity, missing, launch_timeout=TIMEOUT)
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        status, body, took = await start_fails(gw, "kpull")
    print(f"missing tag: failed in {took:.1f} s")
    assert status == 500, body
    message = body["message"]
    assert "ErrImagePull" in message or "ImagePullBackOff" in message, body
    assert "no-such-tag" in message and took < TIMEOUT / 2, (took, body)
    await nothing_left(k8s_cluster)


async def test_a_container_that_cannot_start_its_launcher_fails_with_its_exit(
    k8s_cluster: K8sCluster, k8s_env: Path, identity: Identity, kernel_image: str, tmp_path: Path
) -> None:
    write_k8s_spec(
        k8s_env,
        "kcrash",
        identity,
        kernel_image,
        launch_timeout=TIMEOUT,
        launcher="/opt/kernelfleet/no-such-launcher.py",
    )
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        status, body, took = await start_fails(gw, "kcrash")
    print(f"crashing container: failed in {took:.1f} s")
    assert status == 500, body
    assert "exited with status 2" in body["message"], body
    assert "no-such-launcher" in body["message"] and took < TIMEOUT / 2, (took, body)
    await nothing_left(k8s_cluster)


async def test_an_r_kernel_pulled_from_the_registry_reports_the_pull_and_runs(
    k8s_cluster: K8sCluster, k8s_env: Path, identity: Identity, kernel_image: str, tmp_path: Path
) -> None:
    from kernelfleet.images.build import build_image

    # the R image shares no layer with the imported Python one: a real pull, of ~130 MB
    archive, _ = await asyncio.to_thread(build_image, "r")
    tag = f"pull-{int(time.time())}"
    ref = await asyncio.to_thread(k8s_cluster.push_image, archive, "kernelfleet/kernel-r", tag)
    write_k8s_spec(k8s_env, "kreg", identity, ref, argv=R_ARGV, language="R", launch_timeout=120)
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel("kreg"))["id"]
        record = gw.registry.records[kid]
        prov: Any = record.manager.provisioner if record.manager else None
        assert prov is not None
        assert any(p.startswith("pulling its image") for p in prov.phases), prov.phases
        ws = await c.connect(kid)
        try:
            _, iopub = await execute_ok(ws, "cat(Sys.info()[['nodename']], 6 * 7)")
            assert stdout_of(iopub).split() == [prov.pod, "42"], iopub
        finally:
            ws.close()
        await c.shutdown_kernel(kid)
    await nothing_left(k8s_cluster)


async def test_a_killed_gateways_three_pods_are_reattached_by_the_next_gateway(
    k8s_cluster: K8sCluster, k8s_env: Path, identity: Identity, kernel_image: str, tmp_path: Path
) -> None:
    write_k8s_spec(k8s_env, "kre", identity, kernel_image)
    env = {
        "JUPYTER_PATH": str(k8s_env),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "KF_DATA_DIR": str(tmp_path / "gwdata"),
        "KF_CONFIG_DIR": str(tmp_path / "cfg"),
        "KF_SECRET_KEY_FILE": str(tmp_path / "gwdata" / "store.key"),
        "KF_IP": "127.0.0.1",
        "KF_MONITOR_INTERVAL": "0.5",
        "KF_RESPONSE_IP": k8s_cluster.node_ip,
        "KF_RESPONSE_PORT": "0",
    }
    first = GatewayProcess(env)
    kids: list[str] = []
    try:
        for _ in range(3):
            kids.append((await first.client.start_kernel("kre"))["id"])
        for i, kid in enumerate(kids):
            ws = await first.client.connect(kid)
            try:
                await execute_ok(ws, f"state = {i} * 7")
            finally:
                ws.close()
    finally:
        first.kill()
    assert all(kernel_pods(k8s_cluster, k) for k in kids)

    second = GatewayProcess(env)
    try:
        listed = {k["id"] for k in await second.client.call("GET", "/api/kernels")}
        assert listed == set(kids), second.output()
        for i, kid in enumerate(kids):
            ws = await second.client.connect(kid)
            try:
                _, iopub = await execute_ok(ws, "state")
                assert result_of(iopub) == str(i * 7)  # the same pods, their state there
            finally:
                ws.close()
        for kid in kids:
            await second.client.shutdown_kernel(kid)
        await nothing_left(k8s_cluster)
    finally:
        assert second.stop() == 0, second.output()
