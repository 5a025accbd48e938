"""``kernelfleet spec migrate`` of Kubernetes kernelspecs, end to end: Gateway Provisioners' own
``jupyter k8s-spec install --image-name`` (GP installed at test time, see tests/gpspecs.py) and
an Enterprise Gateway ``KubernetesProcessProxy`` spec written by hand from EG's documented
format are migrated by the command an admin runs, and a kernel of each migrated spec starts as
a pod of the test cluster through a real in-process gateway, runs code there, and its pod is
gone after the shutdown.

Neither original names an API server, a kubeconfig or a namespace (nor does a migrated spec):
the gateway's settings do (the ``K8sProvisioner`` section: the least-privilege identity of
deploy/kubernetes and the kernels' namespace), as ``KF_K8S_*`` would on an admin's gateway.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kernelfleet.client import stdout_of
from kernelfleet.provisioners.k8s import K8sProvisioner
from tests.conftest import client_for, temp_gateway
from tests.contract_backends.helpers import execute_ok
from tests.gpspecs import eg_argv, eg_spec, load, migrate_cli, render
from tests.k8s.cluster import K8sCluster
from tests.k8s.kernels import KERNELS_NAMESPACE, Identity, gateway_config, no_pods_left

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(240)]

GP_NAME = "k8s_python"  # the name GP's installer gives its Python spec
EG_NAME = "eg_python_kubernetes"
#: GP writes launch_timeout 30 into its specs; a pod's first start on this VM can be slower
LAUNCH = {"KERNEL_LAUNCH_TIMEOUT": "120"}


def eg_k8s_spec(kernels: Path, image: str) -> Path:
    """EG's python_kubernetes as its docs write it: ``launch_kubernetes.py`` with the
    ``--RemoteProcessProxy.*`` options, the image in the process proxy's config, and the pod
    template next to the launcher."""
    scripts = kernels / EG_NAME / "scripts"
    argv = eg_argv("python", str(scripts / "launch_kubernetes.py"))
    spec_dir = eg_spec(
        kernels,
        EG_NAME,
        "k8s.KubernetesProcessProxy",
        config={"image_name": image},
        argv=argv,
        display_name="Python on Kubernetes",
    )
    (scripts / "launch_kubernetes.py").write_text("# stands for EG's launcher\n")
    (scripts / "kernel-pod.yaml.j2").write_text("# stands for EG's pod template\n")
    return spec_dir


async def test_gp_and_eg_k8s_specs_migrate_and_run_as_pods(
    k8s_cluster: K8sCluster,
    k8s_env: Path,
    identity: Identity,
    kernel_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    theirs = tmp_path / "theirs"
    kernels = render("k8s-spec", theirs, "--image-name", kernel_image)
    gp_original = load(kernels / GP_NAME)
    assert gp_original["metadata"]["kernel_provisioner"]["config"]["image_name"] == kernel_image
    eg_k8s_spec(kernels, kernel_image)

    # migrated specs come first in the Jupyter path, the originals after them (unchanged)
    ours = tmp_path / "ours"
    jupyter_path = f"{ours / 'share' / 'jupyter'}:{theirs / 'share' / 'jupyter'}"
    report = migrate_cli(ours, GP_NAME, EG_NAME, jupyter_path=jupyter_path)
    assert report["problems"] == {}, report
    for out in report["migrated"]:
        assert out["written"] and out["kind"] == "k8s", out
        levels = {f["field"]: f["level"] for f in out["findings"]}
        assert "unmappable" not in levels.values(), out
        stanza = "kernel_provisioner" if out["name"] == GP_NAME else "process_proxy"
        assert levels[f"{stanza}.config.image_name"] == "mapped", out
        assert levels["scripts/kernel-pod.yaml.j2"] == "warning", out
    assert load(kernels / GP_NAME) == gp_original
    for name in (GP_NAME, EG_NAME):
        migrated = load(ours / "share" / "jupyter" / "kernels" / name)
        stanza = migrated["metadata"]["kernel_provisioner"]
        assert stanza["provisioner_name"] == "kernelfleet-k8s", migrated
        assert stanza["config"]["image"] == kernel_image, migrated

    monkeypatch.setenv("JUPYTER_PATH", jupyter_path)
    # the gateway's settings: where the cluster is, as whom, and the kernels' namespace
    settings = {**identity.settings(), "namespace": KERNELS_NAMESPACE}
    async with temp_gateway(**gateway_config(tmp_path, K8sProvisioner=settings)) as gw:
        c = client_for(gw)
        models = await asyncio.gather(
            c.start_kernel(GP_NAME, env=LAUNCH), c.start_kernel(EG_NAME, env=LAUNCH)
        )
        kids = [m["id"] for m in models]
        for kid in kids:
            record = gw.registry.records[kid]
            prov = record.manager.provisioner if record.manager else None
            assert isinstance(prov, K8sProvisioner) and prov.pod == f"kf-{kid}", prov
            assert k8s_cluster.pod(KERNELS_NAMESPACE, prov.pod) is not None
            ws = await c.connect(kid)
            try:
                _, iopub = await execute_ok(ws, "import socket; print(socket.gethostname(), 6 * 7)")
            finally:
                ws.close()
            assert stdout_of(iopub).split() == [prov.pod, "42"], iopub
        for kid in kids:
            await c.shutdown_kernel(kid)
        await asyncio.gather(*(no_pods_left(k8s_cluster, kid) for kid in kids))
