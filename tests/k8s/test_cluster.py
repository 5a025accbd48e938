"""The Kubernetes testbed itself (tests/k8s/cluster.py): real pods on the real node, the pod
network both ways, namespace deletion, the local registry and the gateway-style identity."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.k8s import node
from tests.k8s.cluster import ApiError, K8sCluster
from tests.testbed import wait_for

pytestmark = pytest.mark.k8s


@pytest.fixture
def namespace(k8s_cluster: K8sCluster) -> Iterator[str]:
    """A fresh namespace, deleted after the test (without waiting)."""
    name = f"kf-ct-{uuid.uuid4().hex[:8]}"
    k8s_cluster.api("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    wait_for(
        lambda: k8s_cluster.api("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        20,
        f"no default ServiceAccount in {name}",
    )
    yield name
    k8s_cluster.api("DELETE", f"/api/v1/namespaces/{name}")


def create_pod(
    cluster: K8sCluster,
    namespace: str,
    name: str,
    image: str,
    command: list[str] | None = None,
    pull: str = "Never",
) -> None:
    container: dict[str, Any] = {"name": "main", "image": image, "imagePullPolicy": pull}
    if command:
        container["command"] = command
    pod = {
        "metadata": {"name": name},
        "spec": {
            "containers": [container],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
        },
    }
    cluster.api("POST", f"/api/v1/namespaces/{namespace}/pods", pod)


def waiting_reason(cluster: K8sCluster, namespace: str, name: str) -> str | None:
    pod = cluster.pod(namespace, name) or {}
    for status in pod.get("status", {}).get("containerStatuses") or []:
        waiting = status.get("state", {}).get("waiting") or {}
        if waiting.get("reason") not in (None, "ContainerCreating"):
            return f"{waiting['reason']}: {waiting.get('message', '')}"
    return None


def test_the_node_is_ready_and_the_sysctls_are_restored(k8s_cluster: K8sCluster) -> None:
    got = k8s_cluster.api("GET", f"/api/v1/nodes/{k8s_cluster.node_name}")
    info = got["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.35.4", info
    assert info["containerRuntimeVersion"].startswith("containerd://1.6"), info
    assert {"type": "InternalIP", "address": "10.98.0.1"} in got["status"]["addresses"]
    assert set(k8s_cluster.images()) >= {node.PAUSE_IMAGE, node.BUSYBOX_IMAGE}
    now = node.read_sysctls()
    now.pop("net.ipv4.ip_forward")  # every pod start sets it again (the bridge CNI plugin)
    assert now == {k: v for k, v in k8s_cluster.sysctls_before.items() if k in now}
    print("timings", k8s_cluster.timings, "rss MiB", k8s_cluster.daemon_rss_mb())
    print("sysctls before", k8s_cluster.sysctls_before, "kubelet", k8s_cluster.sysctls_kubelet)


def test_a_service_account_token_is_a_real_non_admin_identity(
    k8s_cluster: K8sCluster, namespace: str, tmp_path: Path
) -> None:
    token = k8s_cluster.service_account_token(namespace, "gw", seconds=600)
    config = k8s_cluster.kubeconfig(tmp_path / "gw.kubeconfig", token)
    assert config.stat().st_mode & 0o777 == 0o600
    kubectl = [str(k8s_cluster.bins / "kubectl"), f"--kubeconfig={config}"]
    who = subprocess.run([*kubectl, "auth", "whoami", "-o", "json"], capture_output=True, text=True)
    assert who.returncode == 0, who.stderr
    user = json.loads(who.stdout)["status"]["userInfo"]["username"]
    assert user == f"system:serviceaccount:{namespace}:gw"
    denied = subprocess.run([*kubectl, "get", "pods", "-n", namespace], capture_output=True)
    assert denied.returncode != 0 and b"Forbidden" in denied.stderr, denied.stderr
    with pytest.raises(ApiError) as info:
        k8s_cluster.api("GET", f"/api/v1/namespaces/{namespace}/pods", token=token)
    assert info.value.code == 403


def test_a_pause_pod_runs_on_the_pod_network(k8s_cluster: K8sCluster, namespace: str) -> None:
    create_pod(k8s_cluster, namespace, "pause", node.PAUSE_IMAGE)
    pod = k8s_cluster.wait_pod(namespace, "pause", 30)
    ip = ipaddress.ip_address(pod["status"]["podIP"])
    assert ip in ipaddress.ip_network(node.POD_CIDR), ip
    assert pod["spec"]["nodeName"] == k8s_cluster.node_name


def test_the_host_and_a_pod_reach_each_other(k8s_cluster: K8sCluster, namespace: str) -> None:
    server = socket.create_server((k8s_cluster.node_ip, 0))
    server.settimeout(30)
    port = server.getsockname()[1]
    received: list[bytes] = []

    def accept() -> None:
        with server, server.accept()[0] as conn:
            conn.settimeout(10)
            received.append(conn.recv(100))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    script = (
        f"echo from-the-pod | nc {k8s_cluster.node_ip} {port}; "
        "mkdir /tmp/www && echo served-by-the-pod > /tmp/www/index.html && "
        "exec httpd -f -p 8080 -h /tmp/www"
    )
    create_pod(k8s_cluster, namespace, "web", node.BUSYBOX_IMAGE, ["/bin/sh", "-c", script])
    pod = k8s_cluster.wait_pod(namespace, "web", 30)
    thread.join(30)
    assert received == [b"from-the-pod\n"]
    url = f"http://{pod['status']['podIP']}:8080/index.html"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def fetch() -> bytes:
        with opener.open(url, timeout=2) as resp:
            return bytes(resp.read())

    assert wait_for(fetch, 20, f"no answer from {url}") == b"served-by-the-pod\n"


def test_a_deleted_namespace_goes_away_with_its_pods(k8s_cluster: K8sCluster) -> None:
    name = f"kf-ct-gone-{uuid.uuid4().hex[:6]}"
    k8s_cluster.api("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    wait_for(
        lambda: k8s_cluster.api("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        20,
        "no default ServiceAccount",
    )
    create_pod(k8s_cluster, name, "sleeper", node.BUSYBOX_IMAGE, ["sleep", "600"])
    k8s_cluster.wait_pod(name, "sleeper", 30)
    started = time.monotonic()
    k8s_cluster.api("DELETE", f"/api/v1/namespaces/{name}")

    def gone() -> bool:
        try:
            k8s_cluster.api("GET", f"/api/v1/namespaces/{name}")
        except ApiError as exc:
            return exc.code == 404
        return False

    wait_for(gone, 60, f"namespace {name} still there")
    print(f"namespace gone in {time.monotonic() - started:.1f} s")
    assert k8s_cluster.pod(name, "sleeper") is None


def test_a_pull_from_the_local_registry_and_a_missing_tag(
    k8s_cluster: K8sCluster, namespace: str
) -> None:
    tag = f"t{uuid.uuid4().hex[:8]}"
    archive = k8s_cluster.images_dir / "busybox.tar"
    ref = k8s_cluster.push_image(archive, "kf-test/busybox", tag)
    assert ref == f"10.98.0.1:5000/kf-test/busybox:{tag}"
    create_pod(k8s_cluster, namespace, "pulled", ref, ["sleep", "600"], pull="IfNotPresent")
    k8s_cluster.wait_pod(namespace, "pulled", 60)
    assert ref in k8s_cluster.images()

    missing = f"{k8s_cluster.registry}/kf-test/busybox:no-such-tag"
    create_pod(k8s_cluster, namespace, "missing", missing, ["sleep", "600"], pull="IfNotPresent")
    reason = wait_for(lambda: waiting_reason(k8s_cluster, namespace, "missing"), 60, "no error")
    assert reason.startswith(("ErrImagePull", "ImagePullBackOff")), reason
    assert "not found" in reason, reason

    create_pod(k8s_cluster, namespace, "never", "kernelfleet.test/nope:1", ["true"])
    reason = wait_for(lambda: waiting_reason(k8s_cluster, namespace, "never"), 30, "no error")
    assert reason.startswith("ErrImageNeverPull"), reason
