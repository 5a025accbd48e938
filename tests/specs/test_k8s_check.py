"""``kernelfleet hosts check`` of a Kubernetes kernelspec: the rights each namespace mode needs,
what the API server's answers mean (each fault one row: cause, then the ``kubectl`` that fixes
it), the sample pod from the spec's template, the whole command against an API server that is not
there, and one run against the real cluster of tests/k8s (marker ``k8s``)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.cli.hosts import CheckApp
from kernelfleet.cli.spec import SpecApp
from kernelfleet.errors import LaunchFailed
from kernelfleet.provisioners import k8s_pod
from kernelfleet.specs import k8scheck
from kernelfleet.specs.k8scheck import Access, ClusterFacts, K8sTarget
from kernelfleet.specs.verdicts import FAIL, OK, SKIP, HostReport, failure_lines
from kernelfleet.transport.k8s_api import Connection, KubeError
from tests.k8s.cluster import K8sCluster
from tests.k8s.kernels import Identity
from tests.specs.test_yarn_kind import kf

IMAGE = "kernelfleet.test/kernel-python:0.1.0"
SHARED = "kernelfleet-kernels"
POD_RIGHTS = "create/get/list/watch/delete pods, get pods/log, create/delete secrets, list "
ALL_KERNEL_RIGHTS = POD_RIGHTS + "events"


def target(**kw: Any) -> K8sTarget:
    values: dict[str, Any] = {
        "spec": "k8s_python",
        "resource_dir": "/nonexistent/k8s_python",
        "connection": Connection(server="https://k8s.example:6443", token_file="/etc/kf/token"),
        "image": IMAGE,
        "namespace": SHARED,
        "launcher": "/opt/kernelfleet/launchers/kernel_launcher.py",
    }
    values.update(kw)
    return K8sTarget(**values)


def rows(report: HostReport) -> list[tuple[str, str, str, str]]:
    return [(c.name, c.status, c.detail, c.fix) for c in report.checks]


def answers(t: K8sTarget, denied: Collection[Access] = (), **by: Any) -> dict[Access, Any]:
    return {a: by.get(a.verb, (a not in denied, "")) for a in k8scheck.needed_access(t)}


# -- the rights of each namespace mode ------------------------------------------------------------


def test_shared_mode_needs_the_kernel_rights_in_its_namespace_and_each_allowed_one() -> None:
    needed = k8scheck.needed_access(target(allowed_namespaces=("team-a", SHARED)))
    assert len(needed) == 18
    assert needed[:9] == [
        Access("create", "pods", "", SHARED),
        Access("get", "pods", "", SHARED),
        Access("list", "pods", "", SHARED),
        Access("watch", "pods", "", SHARED),
        Access("delete", "pods", "", SHARED),
        Access("get", "pods", "log", SHARED),
        Access("create", "secrets", "", SHARED),
        Access("delete", "secrets", "", SHARED),
        Access("list", "events", "", SHARED),
    ]
    assert {a.namespace for a in needed[9:]} == {"team-a"}


def test_per_kernel_mode_needs_namespaces_quotas_and_the_kernel_rights_cluster_wide() -> None:
    needed = k8scheck.needed_access(target(namespace_mode="per-kernel"))
    assert needed[:6] == [
        Access("create", "namespaces"),
        Access("delete", "namespaces"),
        Access("list", "namespaces"),
        Access("create", "resourcequotas"),
        Access("get", "resourcequotas"),
        Access("create", "limitranges"),
    ]
    assert len(needed) == 15 and all(a.namespace == "" for a in needed)
    no_quota = k8scheck.needed_access(target(namespace_mode="per-kernel", quota=False))
    assert Access("create", "resourcequotas") not in no_quota and len(no_quota) == 12


# -- the access reviews' answers as rows ----------------------------------------------------------


def permissions(t: K8sTarget, access: dict[Access, Any], user: str = "") -> list[tuple[str, ...]]:
    report = HostReport("c")
    k8scheck.record_permissions(report, t, access, user)
    return [r[1:] for r in rows(report)]


def test_every_right_present_is_one_ok_row() -> None:
    t = target(allowed_namespaces=("team-a",))
    assert permissions(t, answers(t)) == [
        (OK, f"all 18 rights namespace mode shared needs ({SHARED}, team-a)", "")
    ]


def test_a_right_missing_in_an_allowed_namespace_names_it_and_the_manifest_for_it() -> None:
    t = target(allowed_namespaces=("team-a",))
    assert permissions(t, answers(t, {Access("create", "pods", "", "team-a")})) == [
        (
            FAIL,
            "kernelfleet may not create pods in namespace team-a",
            "kubectl apply -n team-a -f deploy/kubernetes/rbac-namespace.yaml",
        )
    ]


def test_each_scope_without_its_rights_is_one_line_with_its_own_fix() -> None:
    t = target(allowed_namespaces=("team-a", "team-b"))
    denied = {a for a in k8scheck.needed_access(t) if a.namespace in (SHARED, "team-b")}
    denied.add(Access("get", "pods", "log", "team-a"))
    report = HostReport("c")
    k8scheck.record_permissions(report, t, answers(t, denied))
    assert [r[1:] for r in rows(report)] == [
        (
            FAIL,
            f"kernelfleet may not {ALL_KERNEL_RIGHTS} in namespace {SHARED}",
            "kubectl apply -f deploy/kubernetes/namespace.yaml -f deploy/kubernetes/"
            "rbac-shared.yaml",
        ),
        (
            FAIL,
            "kernelfleet may not get pods/log in namespace team-a",
            "kubectl apply -n team-a -f deploy/kubernetes/rbac-namespace.yaml",
        ),
        (
            FAIL,
            f"kernelfleet may not {ALL_KERNEL_RIGHTS} in namespace team-b",
            "kubectl apply -n team-b -f deploy/kubernetes/rbac-namespace.yaml",
        ),
    ]
    lines = failure_lines([report])
    assert len(lines) == 6
    assert lines[2] == "c: permissions: kernelfleet may not get pods/log in namespace team-a"
    assert lines[3] == "    fix: kubectl apply -n team-a -f deploy/kubernetes/rbac-namespace.yaml"
    assert report.get("permissions") is not None and not report.ready


def test_per_kernel_rights_missing_cluster_wide_name_the_per_kernel_manifest() -> None:
    t = target(namespace_mode="per-kernel")
    denied = {Access("create", "namespaces"), Access("watch", "pods")}
    (row,) = permissions(t, answers(t, denied), "system:serviceaccount:kernelfleet:kernelfleet")
    assert row == (
        FAIL,
        "kernelfleet may not create namespaces, watch pods cluster-wide (namespace mode "
        "per-kernel)",
        "kubectl apply -f deploy/kubernetes/namespace.yaml -f deploy/kubernetes/"
        "rbac-per-kernel.yaml",
    )


def test_an_identity_the_manifests_do_not_name_is_told_so_in_the_fix() -> None:
    t = target()
    (row,) = permissions(t, answers(t, {Access("list", "events", "", SHARED)}), "alice")
    assert row[1] == f"kernelfleet may not list events in namespace {SHARED}"
    assert row[2].endswith(
        "(the manifests grant system:serviceaccount:kernelfleet:kernelfleet; this gateway is "
        "alice: bind the role to it instead)"
    )


def test_a_review_that_failed_is_a_fault_not_a_missing_right() -> None:
    t = target()
    failed = answers(t, watch=KubeError(500, "InternalError", "etcd timeout"))
    ((status, detail, fix),) = permissions(t, failed)
    assert status == FAIL
    assert detail == (
        "the API server did not say whether kernelfleet may watch pods: 500 InternalError: "
        "etcd timeout"
    )
    assert "selfsubjectaccessreviews" in fix


# -- the API server, namespaces, images -----------------------------------------------------------


def api_row(t: K8sTarget, version: Any, **facts: Any) -> tuple[str, ...]:
    report = HostReport("c")
    up = k8scheck.record_api(report, t, ClusterFacts(version=version, **facts))
    ((_, *row),) = rows(report)
    assert up == (row[0] == OK)
    return tuple(row)


def test_the_api_row_says_who_the_gateway_is_or_why_it_got_no_answer() -> None:
    t = target()
    assert api_row(t, {"gitVersion": "v1.35.4"}, server="https://10.0.0.1:6443", user="sa") == (
        OK,
        "https://10.0.0.1:6443: Kubernetes v1.35.4 as sa",
        "",
    )
    status, detail, fix = api_row(t, KubeError(401, "Unauthorized", "Unauthorized"))
    assert (status, detail) == (
        FAIL,
        "the API server did not answer: 401 Unauthorized: Unauthorized",
    )
    assert "kubectl create token kernelfleet -n kernelfleet" in fix and "/etc/kf/token" in fix
    _, detail, fix = api_row(t, KubeError(0, "Config", "/etc/kf/token: [Errno 2] No such file"))
    assert detail.endswith("No such file") and "--token-file" in fix
    ssl = KubeError(0, "Unreachable", "x: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify")
    assert api_row(t, ssl)[2].startswith("--ca-file must hold the CA")
    by_kubeconfig = target(connection=Connection(kubeconfig="/k"))
    assert api_row(by_kubeconfig, ssl)[2].startswith("the kubeconfig must hold the CA")
    _, detail, fix = api_row(t, KubeError(0, "Unreachable", "Connect call failed"))
    assert detail.endswith("Connect call failed") and "curl -k" in fix


def namespace_rows(t: K8sTarget, states: dict[str, Any]) -> list[tuple[str, ...]]:
    report = HostReport("c")
    k8scheck.record_namespaces(report, t, states)
    return [r[1:] for r in rows(report)]


def test_namespaces_missing_or_being_deleted_each_get_a_row() -> None:
    t = target(allowed_namespaces=("team-a", "team-b"))
    assert namespace_rows(t, {SHARED: "Active", "team-a": "Active"}) == [
        (OK, f"{SHARED}, team-a exist", "")
    ]
    assert namespace_rows(t, {SHARED: "missing", "team-a": "Terminating", "team-b": "Active"}) == [
        (
            FAIL,
            f"namespace {SHARED} does not exist",
            "kubectl apply -f deploy/kubernetes/namespace.yaml -f deploy/kubernetes/"
            "rbac-shared.yaml; or reinstall the spec with --namespace set to an existing "
            "namespace",
        ),
        (
            FAIL,
            "namespace team-a is being deleted",
            "wait until it is gone and create it again, or reinstall the spec with "
            "--allowed-namespaces leaving out team-a",
        ),
    ]
    ((status, detail, fix),) = namespace_rows(t, {"team-b": "missing"})
    assert fix.startswith(
        "kubectl create namespace team-b && kubectl apply -n team-b -f "
        "deploy/kubernetes/rbac-namespace.yaml; or reinstall the spec"
    )
    ((status, detail, _),) = namespace_rows(t, {SHARED: KubeError(500, "Err", "boom")})
    assert (status, detail) == (FAIL, f"namespace {SHARED} could not be read: 500 Err: boom")


def test_a_namespace_the_gateway_may_not_see_is_not_checked() -> None:
    t = target(allowed_namespaces=("team-a",))
    ((status, detail, _),) = namespace_rows(t, {SHARED: "unknown"})
    assert status == SKIP and detail.startswith(f"{SHARED} not checked (kernelfleet may neither")
    ((status, detail, _),) = namespace_rows(t, {SHARED: "Active", "team-a": "unknown"})
    assert status == OK and detail.startswith(f"{SHARED} exists; team-a not checked")
    per_kernel = target(namespace_mode="per-kernel")
    assert namespace_rows(per_kernel, {}) == [
        (OK, "per-kernel: each kernel gets its own kf-<kernel id>", "")
    ]


@pytest.mark.parametrize(
    ("ref", "key"),
    [
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("busybox", "docker.io/library/busybox:latest"),
        ("team/kernel:1", "docker.io/team/kernel:1"),
        ("index.docker.io/team/kernel:1", "docker.io/team/kernel:1"),
        ("kernelfleet.test/kernel-python:0.1.0", "kernelfleet.test/kernel-python:0.1.0"),
        ("10.98.0.1:5000/k:2", "10.98.0.1:5000/k:2"),
        ("localhost/k:2", "localhost/k:2"),
        ("reg:5000/k", "reg:5000/k:latest"),
        ("k:1@sha256:" + "a" * 64, "docker.io/library/k@sha256:" + "a" * 64),
    ],
)
def test_image_names_compare_as_the_runtimes_list_them(ref: str, key: str) -> None:
    assert k8scheck.image_key(ref) == key


def node(name: str, *names: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"images": [{"names": list(names)}]}}


def image_rows(t: K8sTarget, nodes: Any) -> list[tuple[str, ...]]:
    report = HostReport("c")
    k8scheck.record_image(report, t, nodes)
    return [r[1:] for r in rows(report)]


def test_the_image_on_the_nodes_or_each_missing_one_named() -> None:
    t = target(allowed_images=("busybox:1.36",))
    nodes = {
        "items": [
            node("n1", IMAGE, "docker.io/library/busybox:1.36"),
            node("n2", "docker.io/library/busybox@sha256:" + "b" * 64),
        ]
    }
    assert image_rows(t, nodes) == [
        (OK, f"{IMAGE} on 1 of 2 nodes; busybox:1.36 on 1 of 2 nodes", "")
    ]
    missing = target(image="kernelfleet.test/gone:1")
    ((status, detail, fix),) = image_rows(missing, nodes)
    assert status == FAIL
    assert detail.startswith("image kernelfleet.test/gone:1 is on none of the 2 nodes (n1, n2)")
    assert "ctr -n k8s.io images import" in fix and "registry" in fix
    assert image_rows(t, {"items": []})[0][:2] == (FAIL, "the cluster has no nodes")
    assert image_rows(target(image=""), nodes)[0][:2] == (FAIL, "the kernelspec names no image")


def test_an_identity_that_may_not_list_nodes_leaves_the_image_unchecked() -> None:
    ((status, detail, _),) = image_rows(target(), KubeError(403, "Forbidden", "nodes is forbidden"))
    assert status == SKIP and detail.startswith("not checked: kernelfleet may not list nodes")
    assert image_rows(target(), None) == [(SKIP, "not checked (no API)", "")]


# -- the template ---------------------------------------------------------------------------------


def spec_dir(tmp_path: Path, template: str | None) -> Path:
    path = tmp_path / "k8s_python"
    path.mkdir(parents=True)
    if template is not None:
        (path / "pod-template.yaml.j2").write_text(template)
    return path


def test_the_sample_pod_is_the_provisioners_pod_of_the_spec(tmp_path: Path) -> None:
    t = target(resource_dir=str(spec_dir(tmp_path, k8s_pod.DEFAULT_TEMPLATE)), uid=1500)
    pod = k8scheck.sample_pod(t)
    assert pod["metadata"]["namespace"] == SHARED
    assert pod["metadata"]["name"] == f"kf-{k8scheck.SAMPLE_KERNEL_ID}"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == IMAGE
    assert container["command"][:2] == ["python3", t.launcher]
    assert pod["spec"]["securityContext"]["runAsUser"] == 1500
    # no template file: the built-in one, as the provisioner does
    assert k8scheck.sample_pod(target())["spec"]["containers"][0]["image"] == IMAGE


def template_row(t: K8sTarget, pod: Any, dry_run: Any = None, up: bool = True) -> tuple[str, ...]:
    report = HostReport("c")
    k8scheck.record_template(report, t, pod, dry_run, up)
    ((_, *row),) = rows(report)
    return tuple(row)


def test_a_broken_or_root_template_is_named_with_its_file(tmp_path: Path) -> None:
    broken = target(resource_dir=str(spec_dir(tmp_path, "spec: {{ nope }}")))
    with pytest.raises(LaunchFailed, match="its pod template is broken"):
        k8scheck.sample_pod(broken)
    status, detail, fix = template_row(broken, LaunchFailed("its pod template is broken (x)"))
    assert status == FAIL and detail.startswith(f"{broken.template_path()} does not make a pod")
    assert fix.startswith(f"edit {broken.template_path()}")
    privileged = "spec:\n  containers:\n    - {name: kernel, securityContext: {privileged: true}}\n"
    as_root = target(resource_dir=str(spec_dir(tmp_path / "r", privileged)))
    with pytest.raises(LaunchFailed, match="would get privileged: true, which kernelfleet never"):
        k8scheck.sample_pod(as_root)
    named = target(resource_dir=str(tmp_path), pod_template="mine.yaml.j2")
    with pytest.raises(FileNotFoundError, match=r"mine\.yaml\.j2 is missing"):
        k8scheck.sample_pod(named)


def test_the_api_servers_dry_run_answer_decides_the_template_row() -> None:
    t = target()
    assert template_row(t, {}, {"kind": "Pod"}) == (
        OK,
        f"the built-in template renders; the API server accepts its pod in {SHARED} (dry run)",
        "",
    )
    violates = KubeError(403, "Forbidden", 'pods "kf-x" is forbidden: violates PodSecurity "x"')
    status, detail, fix = template_row(t, {}, violates)
    assert status == FAIL and "violates PodSecurity" in detail and "pod-security" in fix
    assert template_row(t, {}, KubeError(422, "Invalid", "spec.x: bad"))[0] == FAIL
    may_not = KubeError(403, "Forbidden", 'pods is forbidden: User "x" cannot create')
    assert template_row(t, {}, may_not)[:2] == (
        OK,
        f"the built-in template renders (no dry run: kernelfleet may not create pods in {SHARED})",
    )
    assert template_row(t, {}, None, up=False)[1].endswith("(not tried on the API server)")
    per_kernel = target(namespace_mode="per-kernel")
    assert "per-kernel namespaces do not exist yet" in template_row(per_kernel, {})[1]


# -- the command, without a cluster ---------------------------------------------------------------


@pytest.fixture
def home(prefix: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith(("KF_K8S_", "KF_CHECK_", "KUBECONFIG")):
            monkeypatch.delenv(name)
    return prefix


def install(home: Path, name: str, *argv: str) -> None:
    code, _, err = kf(SpecApp, "install", "k8s", f"--prefix={home}", f"--kernel-name={name}", *argv)
    assert code == 0, err


def check(home: Path, name: str) -> tuple[int, dict[str, list[dict[str, str]]], str]:
    """(exit status, the check rows by name, the host column) of ``hosts check --json``."""
    code, out, err = kf(CheckApp, f"--spec={name}", f"--prefix={home}", "--json")
    assert out, err
    (cluster,) = json.loads(out)["hosts"]
    by_name: dict[str, list[dict[str, str]]] = {}
    for row in cluster["checks"]:
        by_name.setdefault(row["name"], []).append(row)
    return code, by_name, cluster["host"]


def test_hosts_check_of_a_k8s_spec_whose_api_server_is_not_there(
    home: Path, tmp_path: Path
) -> None:
    """A real refusal: nothing listens on the address, so the API row fails with cause and fix,
    the rows that need the API are skipped, the template is rendered here; exit status 1."""
    token = tmp_path / "token"
    token.write_text("t0ken")
    install(home, "k8s_nope", f"--image={IMAGE}", "--namespace=team-a",
            "--api-server=https://127.0.0.1:9", f"--token-file={token}")  # fmt: skip
    code, checks, host = check(home, "k8s_nope")
    assert code == 1 and host == "https://127.0.0.1:9"
    assert list(checks) == list(k8scheck.K8S_CHECK_NAMES)
    (api,) = checks["api"]
    assert api["status"] == FAIL and api["detail"].startswith("the API server did not answer: ")
    assert "127.0.0.1:9" in api["detail"] and "curl -k" in api["fix"]
    assert [c["status"] for n in ("permissions", "namespace", "image") for c in checks[n]] == [
        SKIP
    ] * 3
    (template,) = checks["template"]
    assert template["status"] == OK and template["detail"].endswith(
        "pod-template.yaml.j2 renders (not tried on the API server)"
    )

    code, out, _ = kf(CheckApp, "--spec=k8s_nope", f"--prefix={home}")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == [
        "CLUSTER", "STATUS", "API", "PERMISSIONS", "NAMESPACE", "IMAGE", "TEMPLATE",
    ]  # fmt: skip
    assert lines[1].split() == ["https://127.0.0.1:9", "NOT", "READY", "FAIL", "-", "-", "-", "ok"]
    assert lines[-1] == "Kubernetes cluster NOT READY for k8s_nope"

    code, _, err = kf(CheckApp, "--spec=k8s_nope", f"--prefix={home}", "--hosts=h1")
    assert code == 2 and "--hosts does not apply to kernelspec k8s_nope" in err


def test_a_token_file_that_is_not_there_is_the_api_rows_fault(home: Path, tmp_path: Path) -> None:
    install(home, "k8s_notoken", f"--image={IMAGE}", "--api-server=https://127.0.0.1:9",
            f"--token-file={tmp_path}/gone")  # fmt: skip
    code, checks, _ = check(home, "k8s_notoken")
    (api,) = checks["api"]
    assert code == 1 and f"{tmp_path}/gone" in api["detail"]
    assert api["fix"].startswith("the credentials the spec names must be readable here")


# -- the real cluster -----------------------------------------------------------------------------


@pytest.mark.k8s
@pytest.mark.timeout(240)
def test_hosts_check_against_the_real_cluster(
    k8s_cluster: K8sCluster, identity: Identity, kernel_image: str, home: Path
) -> None:
    """Least-privilege gateway (rbac-shared.yaml): a good spec is ready (the image is not
    checked: that identity may not list nodes); an allowed namespace without the Role is named
    with the manifest that grants it, and once that is applied the spec is ready; with an
    identity that may list nodes (the admin's), an image no node has is named."""
    conn = identity.settings()
    via_token = [f"--api-server={conn['api_server']}", f"--token-file={conn['token_file']}",
                 f"--ca-file={conn['ca_file']}", f"--namespace={SHARED}"]  # fmt: skip
    install(home, "k8s_good", f"--image={kernel_image}", *via_token)
    code, checks, host = check(home, "k8s_good")
    assert code == 0, checks
    assert host == conn["api_server"]
    assert checks["api"][0]["detail"].endswith(
        "as system:serviceaccount:kernelfleet:kernelfleet"
    ), checks
    assert checks["permissions"] == [
        {"name": "permissions", "status": OK,
         "detail": f"all 9 rights namespace mode shared needs ({SHARED})"}
    ]  # fmt: skip
    assert checks["namespace"][0]["status"] == OK, checks
    assert checks["image"][0]["status"] == SKIP
    assert checks["image"][0]["detail"].startswith("not checked: kernelfleet may not list nodes")
    assert checks["template"][0]["detail"].endswith(
        f"renders; the API server accepts its pod in {SHARED} (dry run)"
    ), checks

    team = f"kf-check-{uuid.uuid4().hex[:8]}"
    k8s_cluster.kubectl("create", "namespace", team)
    try:
        install(home, "k8s_team", f"--image={kernel_image}", *via_token,
                f"--allowed-namespaces={team}")  # fmt: skip
        code, checks, _ = check(home, "k8s_team")
        assert code == 1
        assert checks["permissions"] == [
            {
                "name": "permissions",
                "status": FAIL,
                "detail": f"kernelfleet may not {ALL_KERNEL_RIGHTS} in namespace {team}",
                "fix": f"kubectl apply -n {team} -f deploy/kubernetes/rbac-namespace.yaml",
            }
        ], checks
        identity.apply("rbac-namespace.yaml", namespace=team)  # the fix, as printed
        deadline = time.monotonic() + 30
        while (code := check(home, "k8s_team")[0]) != 0 and time.monotonic() < deadline:
            time.sleep(0.5)  # RBAC reaches the authorizer's cache within moments
        assert code == 0, check(home, "k8s_team")[1]
    finally:
        k8s_cluster.kubectl("delete", "namespace", team, "--wait=false")

    admin = k8s_cluster.kubeconfig(home.parent / "admin.kubeconfig", k8s_cluster.admin_token)
    missing = "kernelfleet.test/kernel-python:0.0.0-not-built"
    # the pause image is there since the node started (an image imported later reaches the
    # node's status.images only when the kubelet next reports it)
    present = k8s_cluster.pause_image
    install(home, "k8s_missing", f"--image={missing}", f"--allowed-images={present}",
            f"--kubeconfig={admin}", f"--namespace={SHARED}")  # fmt: skip
    code, checks, _ = check(home, "k8s_missing")
    assert code == 1
    assert len(checks["image"]) == 1, checks["image"]  # the image the node has is not named
    (image,) = checks["image"]
    assert image["status"] == FAIL
    assert image["detail"].startswith(
        f"image {missing} is on none of the 1 nodes ({k8s_cluster.node_name})"
    ), checks
    assert all(c["status"] == OK for n in ("api", "permissions", "namespace") for c in checks[n])
