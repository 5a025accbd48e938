"""Kernelspecs of the ``kernelfleet-k8s`` provisioner on the test cluster, the gateway's
least-privilege identity (our own RBAC manifests, a real service account token), and what the
tests ask of the cluster (which kernel pods are left)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from kernelfleet.provisioners.k8s_pod import LABEL_KERNEL, OWNED
from kernelfleet.transport.k8s_api import label_selector
from tests.k8s.cluster import K8sCluster

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "kubernetes"
GATEWAY_NAMESPACE = "kernelfleet"
KERNELS_NAMESPACE = "kernelfleet-kernels"
PYTHON_ARGV = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
R_ARGV = ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]


class Identity:
    """The gateway's service account (``kernelfleet/kernelfleet``) with only the RBAC of
    ``deploy/kubernetes``: a token file and the provisioner settings that use it."""

    def __init__(self, cluster: K8sCluster, directory: Path):
        self.cluster = cluster
        directory.mkdir(parents=True, exist_ok=True)
        self.token_file = directory / "token"
        self.kubeconfig = directory / "kubeconfig"

    def apply(self, *manifests: str, namespace: str | None = None) -> None:
        for name in manifests:
            args = ["apply", "-f", str(MANIFESTS / name)]
            if namespace:
                args += ["-n", namespace]
            self.cluster.kubectl(*args)

    def remove(self, *manifests: str, namespace: str | None = None) -> None:
        for name in manifests:
            args = ["delete", "--ignore-not-found", "--wait=false", "-f", str(MANIFESTS / name)]
            if namespace:
                args += ["-n", namespace]
            self.cluster.kubectl(*args)

    def refresh(self) -> None:
        token = self.cluster.service_account_token(GATEWAY_NAMESPACE, "kernelfleet", 7200)
        self.token_file.write_text(token)
        self.token_file.chmod(0o600)
        self.cluster.kubeconfig(self.kubeconfig, token)

    def settings(self) -> dict[str, Any]:
        return {
            "api_server": self.cluster.api_url,
            "token_file": str(self.token_file),
            "ca_file": str(self.cluster.ca_file),
        }


def write_k8s_spec(
    root: Path,
    name: str,
    identity: Identity,
    image: str,
    *,
    argv: list[str] | None = None,
    language: str = "python",
    template: str | None = None,
    **config: Any,
) -> Path:
    """A Kubernetes kernelspec under *root* (shared namespace unless *config* says)."""
    from tests.conftest import add_kernelspec  # tests.conftest imports this module's fixtures

    spec: dict[str, Any] = {
        "argv": argv or PYTHON_ARGV,
        "language": language,
        "interrupt_mode": "message",
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": "kernelfleet-k8s",
                "config": {
                    **identity.settings(),
                    "image": image,
                    "namespace": KERNELS_NAMESPACE,
                    # a pod's first start on this VM can be slow (cold page cache: issue 12's
                    # open bug); what is tested is that it starts, not how fast
                    "launch_timeout": 120,
                    **config,
                },
            }
        },
    }
    path = add_kernelspec(root, name, spec)
    if template is not None:
        (path / "pod-template.yaml.j2").write_text(template)
    return path


def kernel_pods(cluster: K8sCluster, kernel_id: str | None = None) -> list[dict[str, Any]]:
    """Kernel pods of one kernel (or of every kernel) in any namespace, deleting ones too."""
    selector = label_selector({**OWNED, **({LABEL_KERNEL: kernel_id} if kernel_id else {})})
    out = cluster.kubectl("get", "pods", "-A", "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out).get("items") or []
    return items


def namespaces(cluster: K8sCluster, kernel_id: str) -> list[str]:
    out = cluster.kubectl(
        "get", "namespaces", "-l", f"{LABEL_KERNEL}={kernel_id}", "-o", "json"
    ).stdout
    return [i["metadata"]["name"] for i in json.loads(out).get("items") or []]


def gateway_config(tmp: Path, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Config of an in-process gateway for pod kernels: a private data dir, fast liveness."""
    out: dict[str, dict[str, Any]] = {
        "Gateway": {"data_dir": str(tmp / "gwdata")},
        "KernelMonitor": {"monitor_interval": 0.5},
    }
    for name, values in sections.items():
        out.setdefault(name, {}).update(values)
    return out


async def no_pods_left(cluster: K8sCluster, kernel_id: str) -> None:
    """Wait until no pod of *kernel_id* is left."""
    # here, not at the top: tests.conftest imports this module (an import circle)
    from tests.contract_backends.helpers import eventually

    await eventually(
        lambda: asyncio.to_thread(kernel_pods, cluster, kernel_id),
        lambda pods: not pods,
        f"no pod of kernel {kernel_id} left",
        30,
    )
