"""The settings of the ``kernelfleet-k8s`` provisioner, and the pure decisions made from them.

Each option is a kernelspec ``config`` key, a ``--K8sProvisioner.<name>`` flag and a ``KF_K8S_*``
variable (impersonation shares ``KF_IMPERSONATION_ENABLED`` with the other backends).

**Namespaces**, the three modes users ask for: ``namespace_mode = shared`` runs every kernel in
``namespace``; ``per-kernel`` creates ``kf-<kernel id>`` for each kernel, with a ResourceQuota
(``namespace_quota``), and deletes it with the kernel; in either mode a request's
``KERNEL_NAMESPACE`` may pick an existing namespace, only one of ``allowed_namespaces``.

**Users**: kernel pods run as ``kernel_uid``:``kernel_gid``; with impersonation on, as the uid
that ``user_ids`` maps ``KERNEL_USERNAME`` to (an unmapped user is refused; uid 0 always).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, List, Unicode
from traitlets.config import Configurable

from kernelfleet.config import option
from kernelfleet.errors import BadRequest, Forbidden, LaunchFailed
from kernelfleet.provisioners.base import USERNAME
from kernelfleet.provisioners.k8s_pod import Limits, Volume, parse_volumes, quantity
from kernelfleet.transport.k8s_api import Connection

IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
DEFAULT_LAUNCHER = "/opt/kernelfleet/launchers/kernel_launcher.py"
DEFAULT_QUOTA = {"pods": "2", "limits.memory": "16Gi", "limits.cpu": "8"}


class K8sOptions(Configurable):
    """The options of Kubernetes kernelspecs (a mixin of
    :class:`~kernelfleet.provisioners.k8s.K8sProvisioner`)."""

    api_server = option(
        Unicode(
            "",
            help="The API server's URL (https://host:port). Default: the in-cluster service "
            "account when the gateway runs in a pod, else the kubeconfig.",
        ),
        "KF_K8S_API_SERVER",
    )
    kubeconfig = option(
        Unicode("", help="A kubeconfig file. Default: $KUBECONFIG, else ~/.kube/config."),
        "KF_K8S_KUBECONFIG",
    )
    kube_context = option(
        Unicode("", help="The kubeconfig context. Default: its current context."),
        "KF_K8S_CONTEXT",
    )
    token_file = option(
        Unicode("", help="A file holding the bearer token, with api_server."),
        "KF_K8S_TOKEN_FILE",
    )
    ca_file = option(
        Unicode("", help="The API server's CA certificates (PEM), with api_server."),
        "KF_K8S_CA_FILE",
    )
    image = option(
        Unicode(
            "",
            help="The kernel image (with an explicit tag), e.g. "
            "kernelfleet.test/kernel-python:0.1.0-ab12cd34 (kernelfleet image build).",
        ),
        "KF_K8S_IMAGE",
    )
    allowed_images = option(
        List(Unicode(), help="Images a request may choose with KERNEL_IMAGE. Default: none."),
        "KF_K8S_ALLOWED_IMAGES",
    )
    pod_template = option(
        Unicode(
            "",
            help="The pod template (Jinja YAML), relative to the kernelspec's directory. "
            "Default: pod-template.yaml.j2 there if present, else the built-in one.",
        ),
        "KF_K8S_POD_TEMPLATE",
    )
    launcher = option(
        Unicode(
            DEFAULT_LAUNCHER,
            help=f"Path of kernel_launcher.py inside the image. Default: {DEFAULT_LAUNCHER}.",
        ),
        "KF_K8S_LAUNCHER",
    )
    launcher_python = option(
        Unicode("python3", help="The Python that runs the launcher in the image."),
        "KF_K8S_LAUNCHER_PYTHON",
    )
    namespace_mode = option(
        CaselessStrEnum(
            ["shared", "per-kernel"],
            "shared",
            help="shared: every kernel in 'namespace'; per-kernel: a namespace kf-<kernel id> "
            "with a ResourceQuota, created and deleted with each kernel. Default: shared.",
        ),
        "KF_K8S_NAMESPACE_MODE",
    )
    namespace = option(
        Unicode(
            "",
            help="The shared namespace. Default: the gateway's own namespace in a pod, "
            "else 'default'.",
        ),
        "KF_K8S_NAMESPACE",
        "EG_KERNEL_NAMESPACE",
    )
    allowed_namespaces = option(
        List(
            Unicode(),
            help="Existing namespaces a request may choose with KERNEL_NAMESPACE (the gateway "
            "needs the kernelfleet Role in each). Default: none.",
        ),
        "KF_K8S_ALLOWED_NAMESPACES",
    )
    namespace_quota = option(
        Dict(
            default_value=dict(DEFAULT_QUOTA),
            help="The ResourceQuota 'hard' of a per-kernel namespace, as a JSON object. "
            f"Default: {DEFAULT_QUOTA}.",
        ),
        "KF_K8S_NAMESPACE_QUOTA",
    )
    kernel_uid = option(
        Int(1000, help="The uid kernel pods run as without impersonation. Default: 1000."),
        "KF_K8S_KERNEL_UID",
    )
    kernel_gid = option(
        Int(1000, help="The gid kernel pods run as without impersonation. Default: 1000."),
        "KF_K8S_KERNEL_GID",
    )
    impersonation_enabled = option(
        Bool(
            False,
            help="Run each kernel pod as the uid user_ids maps KERNEL_USERNAME to; unmapped "
            "users are refused.",
        ),
        "KF_IMPERSONATION_ENABLED",
        "EG_IMPERSONATION_ENABLED",
    )
    user_ids = option(
        Dict(
            per_key_traits=None,
            help='User name → "uid" or "uid:gid" for impersonation, as a JSON object, e.g. '
            '{"alice": "2001:2001"}. uid 0 is refused.',
        ),
        "KF_K8S_USER_IDS",
    )
    cpus = option(Unicode("", help="Default CPU request and limit (e.g. 1)."), "KF_K8S_CPUS")
    memory = option(
        Unicode("", help="Default memory request and limit (e.g. 1Gi)."), "KF_K8S_MEMORY"
    )
    max_cpus = option(
        Float(8.0, help="Most CPUs a request may ask (KERNEL_CPUS). Default: 8."),
        "KF_K8S_MAX_CPUS",
    )
    max_memory = option(
        Unicode("16Gi", help="Most memory a request may ask (KERNEL_MEMORY). Default: 16Gi."),
        "KF_K8S_MAX_MEMORY",
    )
    max_gpus = option(
        Int(0, help="Most GPUs a request may ask (KERNEL_GPUS). Default: 0."), "KF_K8S_MAX_GPUS"
    )
    gpu_resource = option(
        Unicode("nvidia.com/gpu", help="The extended resource KERNEL_GPUS counts."),
        "KF_K8S_GPU_RESOURCE",
    )
    volumes = option(
        List(
            Dict(per_key_traits=None),
            help='Volumes of every kernel pod, as a JSON list: {"name": "home", "mount_path": '
            '"/home/{username}", "host_path": "/srv/home/{username}"} or with "claim": '
            '"home-{username}" (a PersistentVolumeClaim); "read_only": true. {username} is '
            "the requesting user's validated name.",
        ),
        "KF_K8S_VOLUMES",
    )
    delete_grace = option(
        Int(5, help="Seconds a kernel pod gets between SIGTERM and SIGKILL. Default: 5."),
        "KF_K8S_DELETE_GRACE",
    )
    unschedulable_grace = option(
        Float(
            0.0,
            help="Seconds a launch waits on an unschedulable pod (e.g. for a cluster "
            "autoscaler) before failing with the scheduler's reason. Default: 0.",
        ),
        "KF_K8S_UNSCHEDULABLE_GRACE",
    )

    # -- decisions --------------------------------------------------------------------------
    def connection(self) -> Connection:
        return Connection(
            kubeconfig=self.kubeconfig,
            context=self.kube_context,
            server=self.api_server,
            token_file=self.token_file,
            ca_file=self.ca_file,
        )

    def shared_namespace(self) -> str:
        return str(self.namespace) if self.namespace else _own_namespace()

    def limits(self) -> Limits:
        try:
            quantity(self.max_memory)
        except ValueError:
            raise LaunchFailed(
                f"max_memory {self.max_memory[:40]!r} of this kernelspec is not a memory "
                "amount: the admin should set e.g. 16Gi."
            ) from None
        return Limits(
            max_cpus=self.max_cpus,
            max_memory=self.max_memory,
            max_gpus=self.max_gpus,
            cpus=self.cpus,
            memory=self.memory,
        )

    def declared_volumes(self) -> tuple[Volume, ...]:
        try:
            return parse_volumes(self.volumes)
        except ValueError as exc:
            raise LaunchFailed(
                f"the kernelspec's volumes option is invalid: {exc}. The admin should fix it."
            ) from None

    def choose_namespace(self, env: Mapping[str, str], kernel_id: str) -> tuple[str, bool]:
        """(namespace, whether this kernel owns it)."""
        asked = env.get("KERNEL_NAMESPACE", "").strip()
        if asked:
            if asked not in self.allowed_namespaces:
                allowed = ", ".join(self.allowed_namespaces) or "none"
                raise Forbidden(
                    f"KERNEL_NAMESPACE {asked[:64]!r} is not allowed: namespaces allowed "
                    f"here are {allowed} (the admin's allowed_namespaces)."
                )
            return asked, False
        if self.namespace_mode == "per-kernel":
            return f"kf-{kernel_id}", True
        return self.shared_namespace(), False

    def user(self, env: Mapping[str, str]) -> tuple[str, int, int]:
        """(user name, uid, gid) of the kernel's pod."""
        return kernel_user(
            env,
            impersonation=self.impersonation_enabled,
            user_ids=self.user_ids,
            uid=self.kernel_uid,
            gid=self.kernel_gid,
            variable="KF_K8S_USER_IDS",
        )

    def watch_scope(self) -> tuple[str, ...] | None:
        """Namespaces the backend watches; None: all (per-kernel namespaces come and go)."""
        if self.namespace_mode == "per-kernel":
            return None
        return tuple(sorted({self.shared_namespace(), *self.allowed_namespaces}))


@functools.cache
def _own_namespace() -> str:
    """The gateway pod's namespace (its service account's), else ``default``; read once."""
    try:
        with open(IN_CLUSTER_NAMESPACE, encoding="utf-8") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def kernel_user(
    env: Mapping[str, str],
    *,
    impersonation: bool,
    user_ids: Mapping[str, Any],
    uid: int,
    gid: int,
    variable: str,
    account: Callable[[str], tuple[int, int] | None] | None = None,
) -> tuple[str, int, int]:
    """(user name, uid, gid) a container kernel runs as: *uid*:*gid* without impersonation;
    with it, what *user_ids* maps ``KERNEL_USERNAME`` to, else what *account* finds for the
    name (None: no such account). Unknown users and uid or gid 0 are refused (403); the
    refusal names the admin's setting *variable*."""
    name = env.get("KERNEL_USERNAME", "").strip()
    if not impersonation:
        return (name if USERNAME.match(name) else ""), uid, gid
    if not USERNAME.match(name):
        raise BadRequest(
            f"impersonation is enabled: KERNEL_USERNAME must name a user (got {name[:64]!r})"
        )
    mapped = user_ids.get(name)
    if mapped is not None:
        uid, gid = parse_ids(mapped)
    elif account is not None:
        found = account(name)
        if found is None:
            raise Forbidden(
                f"user {name!r} has no account here: the admin maps users to uids in "
                f"user_ids ({variable}) or creates the account."
            )
        uid, gid = found
    else:
        raise Forbidden(
            f"user {name!r} has no uid here: the admin maps users to uids in user_ids ({variable})."
        )
    if uid == 0 or gid == 0:
        raise Forbidden(f"kernels may not run as uid or gid 0 (user {name!r})")
    return name, uid, gid


def parse_ids(value: Any) -> tuple[int, int]:
    """``2001``, ``"2001"`` or ``"2001:2002"`` → (uid, gid); raises Forbidden otherwise."""
    text = str(value).strip()
    uid_text, _, gid_text = text.partition(":")
    if not _id(uid_text) or (gid_text and not _id(gid_text)):
        raise Forbidden(f"the user map's entry {text[:30]!r} is not uid or uid:gid")
    uid = int(uid_text)
    return uid, int(gid_text) if gid_text else uid


def _id(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 10
