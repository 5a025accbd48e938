"""``kernelfleet hosts check`` for a Kubernetes kernelspec: can the cluster run it? One row.

No SSH: the cluster is asked through its API server, with the provisioner's client
(:class:`~kernelfleet.transport.k8s_api.KubeApi`) and settings (server, token, CA or kubeconfig,
namespace mode, image: app config < ``KF_K8S_*`` < the kernelspec's config, as a kernel gets
them), under the identity the gateway will use:

- ``api``: ``GET /version`` answers (the server is reachable, TLS and the token are accepted);
  who the gateway is there (a SelfSubjectReview, when the server tells);
- ``permissions``: one SelfSubjectAccessReview per right the namespace mode needs: in shared
  mode the kernel rights (pods create/get/list/watch/delete, pods/log get, secrets
  create/list/delete, events list) in the namespace and in each allowed namespace; in
  per-kernel mode namespaces create/delete/list, resourcequotas create and get, and the
  kernel rights cluster-wide (and in each allowed namespace). Each scope that lacks rights is
  one row with the ``kubectl apply`` of ``deploy/kubernetes`` that grants them;
- ``namespace``: the shared namespace and each allowed one exists and is not being deleted
  (``GET`` it; an identity that may not read namespaces asks with a dry-run Secret instead);
- ``image``: the image (and each allowed image) is among the nodes' ``status.images`` (which
  a kubelet updates at its next status report, not at once); when the gateway may not list
  nodes, it is not checked (kernels do not need that right);
- ``template``: the spec's pod template renders with sample parameters and the provisioner's
  own code; in shared mode the API server is asked to accept the pod (a dry run).

What the answers mean is decided by the pure ``record_*`` functions: each fault is one row
with its fix, cause first.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from kernelfleet.errors import PublicError
from kernelfleet.launchers.respond import KEY_ENV
from kernelfleet.provisioners.k8s_pod import (
    DEFAULT_TEMPLATE,
    Limits,
    Volume,
    finish_pod,
    pod_name,
    render_template,
    request_params,
)
from kernelfleet.specs.installer import SpecRow
from kernelfleet.specs.kinds.k8s import RBAC_SHARED_NAMESPACE, TEMPLATE_FILE
from kernelfleet.specs.verdicts import FAIL, OK, SKIP, HostReport
from kernelfleet.transport.k8s_api import Connection, KubeApi, KubeError, ns_path

K8S_CHECK_NAMES = ("api", "permissions", "namespace", "image", "template")
#: Seconds for all the questions to the cluster together.
CHECK_TIMEOUT = 60.0
#: The identity deploy/kubernetes grants its rights to.
GATEWAY_ACCOUNT = "system:serviceaccount:kernelfleet:kernelfleet"
MANIFESTS = "deploy/kubernetes"
#: A kernel id for the sample pod (never created: rendered, and at most a dry run).
SAMPLE_KERNEL_ID = str(uuid.UUID(int=0x6B66636865636B))
SAMPLE_USER = "kfcheck"


class Access(NamedTuple):
    """One right to ask the API server about; *namespace* '' is cluster-wide."""

    verb: str
    resource: str
    sub: str = ""
    namespace: str = ""

    @property
    def what(self) -> str:
        return f"{self.resource}/{self.sub}" if self.sub else self.resource


#: What the gateway does in a kernel's namespace (kernelfleet.provisioners.k8s).
KERNEL_RIGHTS = (
    *(Access(verb, "pods") for verb in ("create", "get", "list", "watch", "delete")),
    Access("get", "pods", "log"),
    *(Access(verb, "secrets") for verb in ("create", "delete")),
    Access("list", "events"),
)
#: What per-kernel mode does besides, cluster-wide.
NAMESPACE_RIGHTS = tuple(Access(verb, "namespaces") for verb in ("create", "delete", "list"))
QUOTA_RIGHTS = (
    Access("create", "resourcequotas"),
    Access("get", "resourcequotas"),
    Access("create", "limitranges"),
)


@dataclass(frozen=True)
class K8sTarget:
    """What to check for one Kubernetes kernelspec: its provisioner's settings, resolved."""

    spec: str
    resource_dir: str
    connection: Connection
    image: str
    namespace_mode: str = "shared"
    namespace: str = "default"
    allowed_namespaces: tuple[str, ...] = ()
    allowed_images: tuple[str, ...] = ()
    quota: bool = True
    pod_template: str = ""
    uid: int = 1000
    gid: int = 1000
    limits: Limits = field(default_factory=Limits)
    gpu_resource: str = "nvidia.com/gpu"
    volumes: tuple[Volume, ...] = ()
    launcher: str = ""
    launcher_python: str = "python3"

    @property
    def label(self) -> str:
        """The cluster as the report's first column names it."""
        return self.connection.describe()

    @property
    def shared(self) -> bool:
        return self.namespace_mode != "per-kernel"

    def template_path(self) -> Path:
        return Path(self.resource_dir) / (self.pod_template or TEMPLATE_FILE)


def target_for(row: SpecRow, settings: Any) -> K8sTarget:
    """The target of *row* from the Kubernetes provisioner's *settings* (reads the in-cluster
    namespace file when no namespace is set: call it before the event loop). Raises
    :class:`PublicError` for settings the provisioner would refuse (a bad max_memory, volumes)."""
    return K8sTarget(
        spec=row.name,
        resource_dir=row.resource_dir,
        connection=settings.connection(),
        image=str(settings.image),
        namespace_mode=str(settings.namespace_mode),
        namespace=settings.shared_namespace(),
        allowed_namespaces=tuple(str(n) for n in settings.allowed_namespaces),
        allowed_images=tuple(str(i) for i in settings.allowed_images),
        quota=bool(settings.namespace_quota),
        pod_template=str(settings.pod_template),
        uid=int(settings.kernel_uid),
        gid=int(settings.kernel_gid),
        limits=settings.limits(),
        gpu_resource=str(settings.gpu_resource),
        volumes=settings.declared_volumes(),
        launcher=str(settings.launcher),
        launcher_python=str(settings.launcher_python),
    )


def needed_access(target: K8sTarget) -> list[Access]:
    """Every right the spec's namespace mode needs, in the order the report names them."""
    scopes = [target.namespace] if target.shared else [""]
    scopes += [n for n in target.allowed_namespaces if n not in scopes]
    out = []
    if not target.shared:
        out += [*NAMESPACE_RIGHTS, *(QUOTA_RIGHTS if target.quota else ())]
    for scope in scopes:
        out += [a._replace(namespace=scope) for a in KERNEL_RIGHTS]
    return out


# -- the sample pod (local: run in a thread) ------------------------------------------------------


def sample_pod(target: K8sTarget) -> dict[str, Any]:
    """The pod a kernel of the spec would get (sample kernel id and user), built by the
    provisioner's own code from the spec's template; raises PublicError (or OSError) with
    the template's fault."""
    path = target.template_path()
    if path.is_file():
        text = path.read_text(encoding="utf-8")
    elif target.pod_template:
        raise FileNotFoundError(f"{path} is missing (the spec's pod_template)")
    else:
        text = DEFAULT_TEMPLATE
    name = pod_name(SAMPLE_KERNEL_ID, 0)
    params = request_params(
        {},
        kernel_id=SAMPLE_KERNEL_ID,
        kernel_name=target.spec,
        pod_name=name,
        namespace=target.namespace if target.shared else f"kf-{SAMPLE_KERNEL_ID}",
        image=target.image,
        allowed_images=target.allowed_images,
        uid=target.uid,
        gid=target.gid,
        limits=target.limits,
        gpu_resource=target.gpu_resource,
        volumes=target.volumes,
        username=SAMPLE_USER,
    )
    argv = base64.b64encode(json.dumps(["python3"]).encode()).decode("ascii")
    command = [target.launcher_python, target.launcher, "--kernel-name", target.spec]
    command += ["--ready-timeout", "60", "--argv-b64", argv]
    secret = {KEY_ENV: (f"{name}-response", "key")}
    return finish_pod(render_template(text, params), params, command, {}, secret)


# -- what the cluster says ------------------------------------------------------------------------


@dataclass
class ClusterFacts:
    """The cluster's answers; each an answer, an exception, or None when not asked."""

    version: Any = None
    server: str = ""
    user: str = ""
    access: dict[Access, Any] = field(default_factory=dict)
    namespaces: dict[str, Any] = field(default_factory=dict)
    nodes: Any = None
    dry_run: Any = None


async def _namespace_state(api: KubeApi, name: str) -> str:
    """The namespace's phase (``Active``, ``Terminating``), ``missing``, or ``unknown`` when
    this identity may neither read it nor create a (dry-run) Secret in it."""
    try:
        found = await api.get(f"/api/v1/namespaces/{name}")
        return str((found.get("status") or {}).get("phase") or "Active")
    except KubeError as exc:
        if exc.status == 404:
            return "missing"
        if exc.status != 403:
            raise
    probe = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kf-check"}}
    try:
        await api.request("POST", ns_path(name, "secrets"), {"dryRun": "All"}, probe)
    except KubeError as exc:
        if exc.status == 404:
            return "missing"
        if exc.status == 403:
            return "unknown"
        raise
    return "Active"


async def _whoami(api: KubeApi) -> str:
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    try:
        out = await api.create("/apis/authentication.k8s.io/v1/selfsubjectreviews", review)
    except KubeError:
        return ""
    return str(((out.get("status") or {}).get("userInfo") or {}).get("username") or "")


async def _gather(*aws: Any) -> list[Any]:
    results = await asyncio.gather(*aws, return_exceptions=True)
    for res in results:
        if isinstance(res, asyncio.CancelledError):
            raise res
    return list(results)


async def ask_cluster(target: K8sTarget, pod: dict[str, Any] | None) -> ClusterFacts:
    """Everything the checks ask the API server, at once after ``/version`` answered; *pod*
    (the sample pod, if it rendered) is sent as a dry run in shared mode."""
    facts = ClusterFacts()
    api = KubeApi(target.connection)
    try:
        try:
            facts.version = await api.get("/version")
        except KubeError as exc:
            facts.version = exc
            return facts
        facts.server = str(getattr((await api.client()).configuration, "host", "") or "")
        questions = needed_access(target)
        namespaces = [target.namespace] if target.shared else []
        namespaces += [n for n in target.allowed_namespaces if n not in namespaces]
        dry = target.shared and pod is not None
        path = ns_path(target.namespace, "pods")
        user, nodes, dry_run, *rest = await _gather(
            _whoami(api),
            api.get("/api/v1/nodes"),
            api.request("POST", path, {"dryRun": "All"}, pod) if dry else asyncio.sleep(0),
            *(api.can_i(a.verb, a.resource, a.namespace, "", a.sub) for a in questions),
            *(_namespace_state(api, n) for n in namespaces),
        )
        facts.user = user if isinstance(user, str) else ""
        facts.nodes = nodes
        facts.dry_run = dry_run if dry else None
        facts.access = dict(zip(questions, rest[: len(questions)], strict=True))
        facts.namespaces = dict(zip(namespaces, rest[len(questions) :], strict=True))
        return facts
    finally:
        await api.close()


# -- verdicts (pure) ------------------------------------------------------------------------------


def _failure(res: BaseException) -> str:
    if isinstance(res, KubeError):
        return f"{res.status} {res.reason}: {res.message[:300]}" if res.status else res.message
    if isinstance(res, PublicError):
        return res.message
    return f"{type(res).__name__}: {res}"[:400]


def record_api(report: HostReport, target: K8sTarget, facts: ClusterFacts) -> bool:
    """The API server's row; whether it answered (the other rows need it)."""
    version = facts.version
    if isinstance(version, Mapping):
        who = f" as {facts.user}" if facts.user else ""
        where = facts.server or target.label
        report.add("api", OK, f"{where}: Kubernetes {version.get('gitVersion', '?')}{who}")
        return True
    exc = version if isinstance(version, BaseException) else None
    reason = _failure(exc) if exc is not None else "not asked"
    conn = target.connection
    if isinstance(exc, KubeError) and exc.status == 401:
        fix = (
            f"the token in {conn.token_file or 'the kubeconfig'} is expired or revoked: write "
            "a fresh one, e.g. kubectl create token kernelfleet -n kernelfleet "
            f"--duration=8760h > {conn.token_file or 'TOKEN_FILE'}"
        )
    elif isinstance(exc, KubeError) and exc.reason == "Config":
        fix = (
            "the credentials the spec names must be readable here: --token-file and "
            "--ca-file, or --kubeconfig (reinstall the spec with --replace), or KF_K8S_*"
        )
    elif "certificate" in reason.lower() or "[SSL" in reason or "SSLError" in reason:
        fix = (
            f"{'--ca-file' if conn.server else 'the kubeconfig'} must hold the CA that signed "
            "the API server's certificate"
        )
    else:
        fix = (
            "check the server address (--api-server, or the kubeconfig's server) and that "
            "this machine reaches it (curl -k https://host:port/version)"
        )
    report.add("api", FAIL, f"the API server did not answer: {reason}", fix)
    return False


def _grant(target: K8sTarget, scope: str, user: str) -> str:
    if not scope:
        fix = f"kubectl apply -f {MANIFESTS}/namespace.yaml -f {MANIFESTS}/rbac-per-kernel.yaml"
    elif scope == RBAC_SHARED_NAMESPACE:
        fix = f"kubectl apply -f {MANIFESTS}/namespace.yaml -f {MANIFESTS}/rbac-shared.yaml"
    else:
        fix = f"kubectl apply -n {scope} -f {MANIFESTS}/rbac-namespace.yaml"
    if user and user != GATEWAY_ACCOUNT:
        fix += (
            f" (the manifests grant {GATEWAY_ACCOUNT}; this gateway is {user}: bind the role "
            "to it instead)"
        )
    return fix


def record_permissions(
    report: HostReport, target: K8sTarget, access: Mapping[Access, Any], user: str = ""
) -> None:
    """One row per scope (a namespace, or cluster-wide) that lacks rights; one OK row if
    none does."""
    denied: dict[str, dict[str, list[str]]] = {}
    for right in needed_access(target):
        answer = access.get(right)
        if isinstance(answer, BaseException):
            report.add(
                "permissions",
                FAIL,
                f"the API server did not say whether kernelfleet may {right.verb} "
                f"{right.what}: {_failure(answer)}",
                "every authenticated identity may create selfsubjectaccessreviews unless "
                "the cluster's RBAC was changed: check system:basic-user",
            )
            return
        allowed = isinstance(answer, tuple) and bool(answer[0])
        if not allowed:
            verbs = denied.setdefault(right.namespace, {}).setdefault(right.what, [])
            verbs.append(right.verb)
    for scope, by_resource in denied.items():
        where = f"in namespace {scope}" if scope else "cluster-wide (namespace mode per-kernel)"
        rights = ", ".join(f"{'/'.join(verbs)} {what}" for what, verbs in by_resource.items())
        report.add(
            "permissions",
            FAIL,
            f"kernelfleet may not {rights} {where}",
            _grant(target, scope, user),
        )
    if not denied:
        scopes = [target.namespace] if target.shared else ["cluster-wide"]
        scopes += [n for n in target.allowed_namespaces if n not in scopes]
        count = len(needed_access(target))
        report.add(
            "permissions",
            OK,
            f"all {count} rights namespace mode {target.namespace_mode} needs "
            f"({', '.join(scopes)})",
        )


def record_namespaces(report: HostReport, target: K8sTarget, states: Mapping[str, Any]) -> None:
    """One row per namespace that is missing or being deleted; else one row."""
    faults = 0
    unknown = []
    for name, state in states.items():
        allowed = name != target.namespace or not target.shared
        other = (
            f"--allowed-namespaces leaving out {name}"
            if allowed
            else "--namespace set to an existing namespace"
        )
        if isinstance(state, BaseException):
            detail = f"namespace {name} could not be read: {_failure(state)}"
            fix = "check the API server's log"
        elif state == "missing":
            detail = f"namespace {name} does not exist"
            create = (
                _grant(target, name, "")
                if name == RBAC_SHARED_NAMESPACE
                else f"kubectl create namespace {name} && {_grant(target, name, '')}"
            )
            fix = f"{create}; or reinstall the spec with {other}"
        elif state == "Terminating":
            detail = f"namespace {name} is being deleted"
            fix = f"wait until it is gone and create it again, or reinstall the spec with {other}"
        else:
            if state == "unknown":
                unknown.append(name)
            continue
        faults += 1
        report.add("namespace", FAIL, detail, fix)
    if faults:
        return
    parts = []
    if not target.shared:
        parts.append("per-kernel: each kernel gets its own kf-<kernel id>")
    seen = [n for n in states if n not in unknown]
    if seen:
        parts.append(f"{', '.join(seen)} {'exists' if len(seen) == 1 else 'exist'}")
    if unknown:
        parts.append(
            f"{', '.join(unknown)} not checked (kernelfleet may neither read "
            f"{'it' if len(unknown) == 1 else 'them'} nor create in "
            f"{'it' if len(unknown) == 1 else 'them'}: see permissions)"
        )
    report.add("namespace", SKIP if unknown and not seen else OK, "; ".join(parts) or "-")


def image_key(ref: str) -> str:
    """*ref* as the runtimes list it: registry and path in full, with the tag (``latest``
    when none) or, when it has one, the digest alone (``busybox:1`` →
    ``docker.io/library/busybox:1``)."""
    name, _, digest = ref.strip().partition("@")
    tag = ""
    if name.rfind(":") > name.rfind("/"):
        name, _, tag = name.rpartition(":")
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        first, rest = "docker.io", name
    if first in ("index.docker.io", "registry-1.docker.io"):
        first = "docker.io"
    if first == "docker.io" and "/" not in rest:
        rest = f"library/{rest}"
    return f"{first}/{rest}@{digest}" if digest else f"{first}/{rest}:{tag or 'latest'}"


def record_image(report: HostReport, target: K8sTarget, nodes: Any) -> None:
    if not target.image:
        report.add(
            "image",
            FAIL,
            "the kernelspec names no image",
            "reinstall it with --image=REF (and --replace), or set KF_K8S_IMAGE",
        )
        return
    if nodes is None:
        report.add("image", SKIP, "not checked (no API)")
        return
    if isinstance(nodes, KubeError) and nodes.status in (401, 403):
        report.add(
            "image",
            SKIP,
            "not checked: kernelfleet may not list nodes (kernels do not need it; an admin "
            "sees the nodes' images with kubectl get nodes -o json)",
        )
        return
    if isinstance(nodes, BaseException) or not isinstance(nodes, Mapping):
        report.add("image", SKIP, f"not checked: the nodes could not be listed: {nodes!r}"[:300])
        return
    items = [n for n in nodes.get("items") or [] if isinstance(n, Mapping)]
    names = [str((n.get("metadata") or {}).get("name") or "?") for n in items]
    if not items:
        report.add("image", FAIL, "the cluster has no nodes", "join a node to the cluster")
        return
    on_node = [
        {image_key(str(x)) for img in (n.get("status") or {}).get("images") or [] for x in
         (img.get("names") or [] if isinstance(img, Mapping) else [])}
        for n in items
    ]  # fmt: skip
    present = []
    for ref in dict.fromkeys((target.image, *target.allowed_images)):
        having = sum(image_key(ref) in found for found in on_node)
        if having:
            present.append(f"{ref} on {having} of {len(items)} nodes")
            continue
        report.add(
            "image",
            FAIL,
            f"image {ref} is on none of the {len(items)} nodes ({', '.join(names[:5])}): each "
            "kernel's pod would pull it first, and fail if no registry has it",
            "import it on every node (kernelfleet image build; ctr -n k8s.io images import "
            "FILE), or push it to a registry the nodes pull from and pull it once (a node "
            "lists an image it just got at its next status report)",
        )
    if len(present) == len(dict.fromkeys((target.image, *target.allowed_images))):
        report.add("image", OK, "; ".join(present))


def record_template(
    report: HostReport, target: K8sTarget, pod: Any, dry_run: Any, api_up: bool
) -> None:
    """The spec's template: rendered here (*pod*, or the exception), then (shared mode)
    the API server's answer to the dry run."""
    path = target.template_path()
    shown = str(path) if path.is_file() or target.pod_template else "the built-in template"
    edit = (
        f"edit {path} (or reinstall the spec with --replace for the built-in one)"
        if shown != "the built-in template"
        else "report it: the built-in template should always render"
    )
    if isinstance(pod, BaseException):
        report.add("template", FAIL, f"{shown} does not make a pod: {_failure(pod)}", edit)
        return
    if isinstance(dry_run, KubeError) and (
        dry_run.status in (400, 422)
        or (dry_run.status == 403 and "forbidden: violates" in dry_run.message.lower())
    ):
        report.add(
            "template",
            FAIL,
            f"the API server refuses the pod of {shown} in namespace {target.namespace} "
            f"(dry run): {dry_run.message[:400]}",
            f"{edit}; PodSecurity levels are the namespace's "
            "pod-security.kubernetes.io/enforce label",
        )
        return
    if isinstance(dry_run, Mapping):
        note = f"; the API server accepts its pod in {target.namespace} (dry run)"
    elif not api_up:
        note = " (not tried on the API server)"
    elif not target.shared:
        note = " (per-kernel namespaces do not exist yet: no dry run)"
    elif isinstance(dry_run, KubeError) and dry_run.status == 403:
        note = f" (no dry run: kernelfleet may not create pods in {target.namespace})"
    elif isinstance(dry_run, KubeError) and dry_run.status == 404:
        note = f" (no dry run: namespace {target.namespace} does not exist)"
    else:
        note = f" (no dry run: {_failure(dry_run) if dry_run is not None else 'not asked'})"
    report.add("template", OK, f"{shown} renders{note}")


# -- the check ------------------------------------------------------------------------------------


async def check_cluster(target: K8sTarget) -> HostReport:
    """Every check of *target*, as one report (its host is :attr:`K8sTarget.label`)."""
    report = HostReport(target.label)
    try:
        pod: Any = await asyncio.to_thread(sample_pod, target)
    except (PublicError, OSError, UnicodeDecodeError) as exc:
        pod = exc
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            facts = await ask_cluster(target, pod if isinstance(pod, dict) else None)
    except TimeoutError:
        facts = ClusterFacts(version=KubeError(0, "Timeout", f"no answer in {CHECK_TIMEOUT:g} s"))
    api_up = record_api(report, target, facts)
    if api_up:
        record_permissions(report, target, facts.access, facts.user)
        record_namespaces(report, target, facts.namespaces)
    else:
        for name in ("permissions", "namespace"):
            report.add(name, SKIP, "not checked (no API)")
    record_image(report, target, facts.nodes if api_up else None)
    record_template(report, target, pod, facts.dry_run, api_up)
    if facts.server:
        report.host = facts.server  # the kubeconfig's (or in-cluster) server, now known
    return report


__all__ = [
    "K8S_CHECK_NAMES",
    "Access",
    "ClusterFacts",
    "K8sTarget",
    "ask_cluster",
    "check_cluster",
    "image_key",
    "needed_access",
    "record_api",
    "record_image",
    "record_namespaces",
    "record_permissions",
    "record_template",
    "sample_pod",
    "target_for",
]
