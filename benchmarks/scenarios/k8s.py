"""A kernel pod through the gateway against the same image started as a plain pod, same run.

The run brings up the test suite's one-node Kubernetes cluster (tests/k8s/cluster.py; root and
the binaries of ``scripts/k8s-deps.sh`` needed), imports the Python kernel image, and stops the
cluster at the end.

- **bare**: a pod of the same image, created through the API as cluster admin, whose command
  writes a connection file we chose and execs ipykernel: from the create request to the first
  ``kernel_info_reply`` on the pod's IP (watched through the API, as kubectl would). The IP
  arrives with the kubelet's status report, a few hundred ms after the pod runs: the
  gateway's kernels report back through the response listener instead, so kernelfleet may
  well beat this limit (``bare_pod_ip_seen`` in the details shows by how much).
- **kernelfleet**: POST /api/kernels of a ``kernelfleet-k8s`` kernelspec → the first
  ``kernel_info_reply`` on its websocket, through a gateway process acting as the
  least-privilege service account of deploy/kubernetes.

Target: ≤ 1.15x the bare limit (issue 12). Alternated bare / gateway, n = 8 (quick: 3).
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
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import Metric, ScenarioResult, summary
from benchmarks.scenarios import Context, details_of, scenario
from benchmarks.scenarios.fleet import _env
from benchmarks.scenarios.local import _attempts, _start_all

K8S_START_TARGET = 1.15
BARE_NAMESPACE = "kf-bench-bare"
PORTS = {"shell_port": 51001, "iopub_port": 51002, "stdin_port": 51003}
PORTS |= {"control_port": 51004, "hb_port": 51005}
_STATE: dict[str, Any] = {}


def _missing() -> str | None:
    try:
        from tests.k8s.fixture import k8s_requirements
    except ImportError:
        return "tests/k8s/fixture.py not importable"
    found = k8s_requirements()
    return found if isinstance(found, str) else None


def _cluster() -> tuple[Any, Any, str]:
    """(cluster, identity, image): started once per benchmark run."""
    if "cluster" not in _STATE:
        from kernelfleet.images.build import build_image
        from tests.k8s.cluster import K8sCluster
        from tests.k8s.fixture import k8s_requirements
        from tests.k8s.kernels import Identity

        bins = k8s_requirements()
        assert isinstance(bins, Path), bins
        cluster = K8sCluster(bins).up()
        _STATE["cluster"] = cluster
        atexit.register(teardown)
        archive, ref = build_image("python")
        cluster.import_image(archive)
        identity = Identity(cluster, Path(tempfile.mkdtemp(prefix="kf-bench-k8s-")))
        identity.apply("namespace.yaml", "rbac-shared.yaml")
        identity.refresh()
        cluster.kubectl("create", "namespace", BARE_NAMESPACE)
        _STATE["identity"], _STATE["image"] = identity, ref
    return _STATE["cluster"], _STATE["identity"], _STATE["image"]


def teardown() -> None:
    cluster = _STATE.pop("cluster", None)
    if cluster is not None:
        cluster.down()


def _bare_pod(name: str, image: str, conn: dict[str, Any]) -> dict[str, Any]:
    """A plain pod of *image*: writes *conn* as its connection file, then execs ipykernel."""
    script = 'printf %s "$CONN" > /tmp/k.json && exec python3 -m ipykernel_launcher -f /tmp/k.json'
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": BARE_NAMESPACE},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "kernel",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/bin/sh", "-c", script],
                    "env": [{"name": "CONN", "value": json.dumps(conn)}],
                }
            ],
        },
    }


async def _kernel_info(ip: str, conn: dict[str, Any], deadline: float) -> None:
    """Send kernel_info_request to the kernel at *ip* until it answers (it may not listen yet)."""
    from jupyter_client.asynchronous import AsyncKernelClient

    loop = asyncio.get_running_loop()
    while True:
        client = AsyncKernelClient()
        client.load_connection_info({**conn, "ip": ip})
        client.start_channels(iopub=False, stdin=False, hb=False, control=False)
        try:
            await client.kernel_info(reply=True, timeout=0.25)
            return
        except TimeoutError:
            if loop.time() > deadline:
                raise
        finally:
            client.stop_channels()


async def _bare_start(api: Any, image: str, ip_seen: list[float]) -> float:
    from kernelfleet.transport.k8s_api import ns_path

    name = f"bare-{uuid.uuid4().hex[:10]}"
    conn = {
        **PORTS,
        "ip": "0.0.0.0",
        "key": secrets.token_hex(16),
        "transport": "tcp",
        "signature_scheme": "hmac-sha256",
    }
    loop = asyncio.get_running_loop()
    began = time.perf_counter()
    created = await api.create(ns_path(BARE_NAMESPACE, "pods"), _bare_pod(name, image, conn))
    try:
        version = created["metadata"]["resourceVersion"]
        ip = ""
        async with asyncio.timeout(60):
            async for _, pod in api.watch(
                ns_path(BARE_NAMESPACE, "pods"), version, fieldSelector=f"metadata.name={name}"
            ):
                ip = (pod.get("status") or {}).get("podIP") or ""
                if ip:
                    break
        ip_seen.append(time.perf_counter() - began)
        await _kernel_info(ip, conn, loop.time() + 60)
        return time.perf_counter() - began
    finally:
        await api.delete(ns_path(BARE_NAMESPACE, "pods", name), grace=0)


@scenario(
    "k8s_cold_start",
    "kernel pod: POST → kernel_info vs the same image as a plain pod → kernel_info",
    group="k8s",
    requires=_missing,
)
async def k8s_cold_start(ctx: Context) -> ScenarioResult:
    from kernelfleet.transport.k8s_api import Connection, KubeApi
    from tests.k8s.kernels import write_k8s_spec

    n = ctx.n(8, 3)
    cluster, identity, image = await asyncio.to_thread(_cluster)
    write_k8s_spec(ctx.env.jupyter_path, "k8s_python", identity, image)
    token = Path(tempfile.mkdtemp(prefix="kf-bench-admin-")) / "token"
    token.write_text(cluster.admin_token)
    api = KubeApi(
        Connection(server=cluster.api_url, token_file=str(token), ca_file=str(cluster.ca_file))
    )
    with _env({"KF_RESPONSE_IP": cluster.node_ip, "KF_RESPONSE_PORT": "0"}):
        gw = await ctx.gateway("gateway-k8s")
    bare: list[float] = []
    kernel: list[float] = []
    ip_seen: list[float] = []
    failures: list[str] = []
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)

    async def one_bare() -> None:
        bare.append(await _attempts(lambda: _bare_start(api, image, ip_seen), failures))

    async def one_kernel() -> None:
        async def go() -> float:
            k = ctx.gateway_kernel(gw, kernel_name="k8s_python")
            (t,) = await _start_all([k])
            await k.shutdown()
            return float(t["first_reply"])

        kernel.append(await _attempts(go, failures))

    try:
        await one_bare()  # warm-up of both paths (first pod on the node, first watch)
        await one_kernel()
        bare.clear()
        kernel.clear()
        ip_seen.clear()
        for i in range(n):
            first, second = (one_bare, one_kernel) if i % 2 == 0 else (one_kernel, one_bare)
            await first()
            await second()
    finally:
        await ctx.release_kernels()
        await ctx.stop_gateway("gateway-k8s")
        await api.close()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    b, k = summary(bare), summary(kernel)
    paired = [y / x for x, y in zip(bare, kernel, strict=True)]
    return ScenarioResult(
        "k8s_cold_start",
        [
            Metric("kernel pod start p50", "s", b["p50"], k["p50"], K8S_START_TARGET, "max"),
            Metric(
                "pod start, median of paired ratios",
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
            # the bare client learns the pod's IP from the API (the kubelet's status report);
            # the gateway's kernels call back instead, which is why the gateway can be faster
            "bare_pod_ip_seen": summary(ip_seen),
            "failed_starts_retried": failures,
            "python": sys.executable,
            "pid": os.getpid(),
        },
    )
