"""Session fixtures over the Kubernetes cluster, shared by tests/k8s and the contract and
conformance suites (registered in tests/conftest.py): the kernel image in the node's runtime
and the gateway's least-privilege identity."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.k8s.cluster import K8sCluster
from tests.k8s.kernels import Identity


@pytest.fixture(scope="session")
def kernel_image(k8s_cluster: K8sCluster) -> str:
    """The Python kernel image (built once per machine, cached), in the node's runtime."""
    from kernelfleet.images.build import build_image

    archive, ref = build_image("python")
    if ref not in k8s_cluster.images():
        k8s_cluster.import_image(archive)
    return ref


@pytest.fixture(scope="session")
def identity(
    k8s_cluster: K8sCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Identity]:
    """The gateway's service account with the shared-namespace RBAC of deploy/kubernetes."""
    ident = Identity(k8s_cluster, tmp_path_factory.mktemp("k8s-identity"))
    ident.apply("namespace.yaml", "rbac-shared.yaml")
    ident.refresh()
    yield ident


class PodNames(frozenset[str]):
    """The names a kernel pod can have (``kf-<kernel id>[-r<n>]``), for suites that check a
    kernel's host name against a set."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.startswith("kf-") and len(name) >= 39
