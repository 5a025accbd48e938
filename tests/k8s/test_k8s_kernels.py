"""Python kernels as pods of the real test cluster, through a real in-process gateway that acts
as the least-privilege service account of deploy/kubernetes (never as cluster admin)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kernelfleet.client import result_of, stdout_of
from kernelfleet.provisioners.k8s import K8sProvisioner
from kernelfleet.provisioners.k8s_backend import K8sBackend
from kernelfleet.provisioners.k8s_pod import LABEL_KERNEL, LABEL_USER
from tests.conftest import client_for, temp_gateway
from tests.contract_backends.helpers import eventually, execute_ok, within
from tests.k8s.cluster import K8sCluster
from tests.k8s.kernels import (
    KERNELS_NAMESPACE,
    Identity,
    gateway_config,
    kernel_pods,
    namespaces,
    no_pods_left,
    write_k8s_spec,
)

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(240)]


def secrets_of(cluster: K8sCluster, kernel_id: str) -> list[str]:
    out = cluster.kubectl(
        "get", "secrets", "-A", "-l", f"{LABEL_KERNEL}={kernel_id}", "-o", "name"
    ).stdout
    return out.split()


async def test_a_python_kernel_pod_runs_code_interrupts_restarts_and_leaves_nothing(
    k8s_cluster: K8sCluster, k8s_env: Path, identity: Identity, kernel_image: str, tmp_path: Path
) -> None:
    write_k8s_spec(k8s_env, "kpy", identity, kernel_image)
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        c = client_for(gw)
        model = await c.start_kernel("kpy", env={"KERNEL_USERNAME": "alice"})
        kid = model["id"]
        record = gw.registry.records[kid]
        prov = record.manager.provisioner if record.manager else None
        assert isinstance(prov, K8sProvisioner)
        pod_name = prov.pod
        assert pod_name == f"kf-{kid}"
        pod = k8s_cluster.pod(KERNELS_NAMESPACE, pod_name)
        assert pod is not None
        labels = pod["metadata"]["labels"]
        assert labels[LABEL_KERNEL] == kid and labels[LABEL_USER] == "alice", labels
        spec = pod["spec"]
        assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
        ctx = spec["containers"][0]["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"] == {"drop": ["ALL"]}
        # the response key is in a Secret (gone once the kernel answered), not in the pod spec
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert "secretKeyRef" in env["KF_RESPONSE_KEY"]["valueFrom"], env
        await eventually(
            lambda: asyncio.to_thread(secrets_of, k8s_cluster, kid),
            lambda found: not found,
            "the launch's secret deleted after the answer",
            15,
        )
        got = await c.call("GET", f"/api/kernels/{kid}")
        assert got["kubernetes"]["pod"] == pod_name and got["kubernetes"]["node"], got

        ws = await c.connect(kid)
        try:
            code = "import os, socket; print(socket.gethostname(), os.getuid(), os.getgid())"
            _, iopub = await execute_ok(ws, code)
            assert stdout_of(iopub).split() == [pod_name, "1000", "1000"], iopub
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

        # restart: a new pod; the old one goes
        await c.call("POST", f"/api/kernels/{kid}/restart", {})
        assert prov.pod == f"kf-{kid}-r1"
        ws = await c.connect(kid)
        try:
            _, iopub = await execute_ok(ws, "'x' in dir()")
            assert result_of(iopub) == "False"
        finally:
            ws.close()
        await eventually(
            lambda: asyncio.to_thread(k8s_cluster.pod, KERNELS_NAMESPACE, pod_name),
            lambda found: found is None,
            "the pod before the restart deleted",
            30,
        )

        await c.shutdown_kernel(kid)
        await no_pods_left(k8s_cluster, kid)
        assert not secrets_of(k8s_cluster, kid)


async def test_impersonation_runs_the_pod_as_the_mapped_uid_and_refuses_others(
    k8s_cluster: K8sCluster, k8s_env: Path, identity: Identity, kernel_image: str, tmp_path: Path
) -> None:
    write_k8s_spec(
        k8s_env,
        "kimp",
        identity,
        kernel_image,
        impersonation_enabled=True,
        user_ids={"bob": "2001:3001", "toor": "0"},
    )
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        c = client_for(gw)
        for user, status, words in (("carol", 403, "no uid"), ("toor", 403, "uid or gid 0")):
            got, body = await c.request(
                "POST", "/api/kernels", {"name": "kimp", "env": {"KERNEL_USERNAME": user}}
            )
            assert got == status and words in body["message"], body
        model = await c.start_kernel("kimp", env={"KERNEL_USERNAME": "bob"})
        kid = model["id"]
        ws = await c.connect(kid)
        try:
            _, iopub = await execute_ok(ws, "import os; print(os.getuid(), os.getgid())")
            assert stdout_of(iopub).split() == ["2001", "3001"], iopub
        finally:
            ws.close()
        await c.shutdown_kernel(kid)
        await no_pods_left(k8s_cluster, kid)


async def test_a_namespace_per_kernel_is_created_with_its_quota_and_deleted_with_it(
    k8s_cluster: K8sCluster, k8s_env: Path, identity: Identity, kernel_image: str, tmp_path: Path
) -> None:
    identity.apply("rbac-per-kernel.yaml")
    try:
        write_k8s_spec(k8s_env, "kns", identity, kernel_image, namespace_mode="per-kernel")
        async with temp_gateway(**gateway_config(tmp_path)) as gw:
            c = client_for(gw)
            kid = (await c.start_kernel("kns"))["id"]
            assert namespaces(k8s_cluster, kid) == [f"kf-{kid}"]
            quota = k8s_cluster.kubectl(
                "get", "resourcequota", "-n", f"kf-{kid}", "-o", "jsonpath={.items[0].spec.hard}"
            ).stdout
            assert '"pods":"2"' in quota, quota
            ws = await c.connect(kid)
            try:
                _, iopub = await execute_ok(ws, "6 * 7")
                assert result_of(iopub) == "42"
            finally:
                ws.close()
            await c.shutdown_kernel(kid)
            await eventually(
                lambda: asyncio.to_thread(namespaces, k8s_cluster, kid),
                lambda found: not found,
                "the kernel's namespace deleted",
                60,
            )
    finally:
        identity.remove("rbac-per-kernel.yaml")


async def test_a_request_chooses_an_allowed_namespace_and_an_unbound_one_is_named_in_the_error(
    k8s_cluster: K8sCluster, k8s_env: Path, identity: Identity, kernel_image: str, tmp_path: Path
) -> None:
    for ns in ("kf-team-a", "kf-team-b"):
        k8s_cluster.kubectl("create", "namespace", ns, check=False)
    identity.apply("rbac-namespace.yaml", namespace="kf-team-a")  # not kf-team-b
    write_k8s_spec(
        k8s_env,
        "kchoose",
        identity,
        kernel_image,
        allowed_namespaces=["kf-team-a", "kf-team-b"],
    )
    async with temp_gateway(**gateway_config(tmp_path)) as gw:
        c = client_for(gw)
        status, body = await c.request(
            "POST", "/api/kernels", {"name": "kchoose", "env": {"KERNEL_NAMESPACE": "kube-system"}}
        )
        assert status == 403 and "kube-system" in body["message"], body
        status, body = await c.request(
            "POST", "/api/kernels", {"name": "kchoose", "env": {"KERNEL_NAMESPACE": "kf-team-b"}}
        )
        assert status == 403, body
        assert "kf-team-b" in body["message"] and "may not" in body["message"], body
        model = await c.start_kernel("kchoose", env={"KERNEL_NAMESPACE": "kf-team-a"})
        kid = model["id"]
        pods = kernel_pods(k8s_cluster, kid)
        assert [p["metadata"]["namespace"] for p in pods] == ["kf-team-a"]
        await c.shutdown_kernel(kid)
        await no_pods_left(k8s_cluster, kid)


async def test_ten_concurrent_kernel_pods_are_all_usable_then_all_gone(
    k8s_cluster: K8sCluster, k8s_env: Path, identity: Identity, kernel_image: str, tmp_path: Path
) -> None:
    write_k8s_spec(k8s_env, "kten", identity, kernel_image, launch_timeout=120, memory="128Mi")
    config = gateway_config(tmp_path, KernelRegistry={"max_kernels": 20})
    async with temp_gateway(**config) as gw:
        c = client_for(gw)
        models = await asyncio.gather(*(c.start_kernel("kten") for _ in range(10)))
        kids = [m["id"] for m in models]
        provs = [gw.registry.records[k].manager.provisioner for k in kids]  # type: ignore[union-attr]
        backend = provs[0].backend  # type: ignore[union-attr]
        assert isinstance(backend, K8sBackend)
        assert all(p.backend is backend for p in provs)  # type: ignore[union-attr]
        assert len(backend._loops) == 1  # one watch for every kernel

        async def square(kid: str, n: int) -> str | None:
            ws = await c.connect(kid)
            try:
                _, iopub = await execute_ok(ws, f"{n} * {n}")
                return result_of(iopub)
            finally:
                ws.close()

        got = await asyncio.gather(*(square(k, i) for i, k in enumerate(kids)))
        assert got == [str(i * i) for i in range(10)]
        await asyncio.gather(*(c.shutdown_kernel(k) for k in kids))
        await eventually(
            lambda: asyncio.to_thread(kernel_pods, k8s_cluster),
            lambda pods: not [p for p in pods if p["metadata"]["labels"][LABEL_KERNEL] in kids],
            "no pod of the ten kernels left",
            60,
        )
