"""``kernelfleet spec install k8s``: each kernel a Kubernetes pod (``kernelfleet-k8s``).

The kernel runs in the image the spec names (``--image``), started by kernelfleet's launcher in
that image; nothing of the spec is copied into the pod. So:

- **argv** is the kernel's command line *inside the image*: ``python3 -m ipykernel_launcher -f
  {connection_file}`` (plus ``--IPKernelApp.kernel_class=…`` for an ipykernel subclass), or
  IRkernel's own. The common ``--python`` (an interpreter on the gateway or on SSH hosts) does
  not apply; the image's ``python3`` runs the kernel. Spark and Scala kernels are refused.
- **pod-template.yaml.j2**, the provisioner's built-in template
  (:data:`~kernelfleet.provisioners.k8s_pod.DEFAULT_TEMPLATE`), is written into the spec's
  directory for the admin to edit; the provisioner reads it from there.
- No ``env``, no ``bin/run.sh``, no launcher scripts. Interrupts are messages (no signal
  reaches a pod). The launch timeout defaults to 120 s: the first kernel on a node may wait for
  its image to be pulled.

Every value that reaches the kernelspec is checked here with the provisioner's own rules
(:mod:`kernelfleet.provisioners.k8s_pod`, pure: the image, namespace and quantity patterns, the
request bounds), each refusal one line naming its flag and what it accepts. Nothing of the spec
is ever read by a shell; the values are JSON strings in ``kernel_provisioner.config``, which the
provisioner validates again at launch. ``kernelfleet hosts check --spec NAME`` checks the
cluster (:mod:`kernelfleet.specs.k8scheck`) with the provisioner's settings, read through
:func:`provisioner_settings`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from textwrap import dedent
from typing import Any

from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, Unicode
from traitlets import List as TList

from kernelfleet.config import option
from kernelfleet.specs.kinds.base import KindDefault, SpecKind
from kernelfleet.specs.options import DEFAULT_KERNEL_CLASS, SpecError, SpecOptions

#: The provisioner's defaults (:class:`~kernelfleet.provisioners.k8s_options.K8sOptions`): not
#: written to kernel.json.
DEFAULT_UID = 1000
DEFAULT_MAX_CPUS = 8.0
DEFAULT_MAX_MEMORY = "16Gi"
DEFAULT_LAUNCH_TIMEOUT = 120.0
TEMPLATE_FILE = "pod-template.yaml.j2"
PYTHON_ARGV = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
R_ARGV = ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]
#: The namespace deploy/kubernetes/rbac-shared.yaml creates and grants.
RBAC_SHARED_NAMESPACE = "kernelfleet-kernels"

MAX_ID = 2**31 - 1
MAX_GPUS = 999  # the provisioner reads KERNEL_GPUS as at most 3 digits
MAX_PATH = 1024
# A reference as the container runtimes parse it, lowercase (as k8s_pod.IMAGE): an optional
# registry host[:port], path components, then a tag and/or a digest. Each component's
# separators are mandatory, so matching is linear on any input.
_HOST = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*)"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_RE = re.compile(
    rf"^(?:(?P<registry>{_HOST}(?::[0-9]{{1,5}})?)/)?"
    rf"(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[a-z0-9_][a-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?\Z"
)
#: An API server: https (http only on this machine, as ``kubectl proxy``), host, port, path.
API_SERVER_RE = re.compile(
    r"^(?P<scheme>https?)://(?P<host>\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9][A-Za-z0-9.-]{0,252})"
    r"(?::(?P<port>\d{1,5}))?(?:/[A-Za-z0-9._~/-]{0,200})?\Z"
)
_LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
KUBE_CONTEXT_RE = re.compile(r"^[A-Za-z0-9._@:/+-]{1,253}\Z")
#: A ResourceQuota key (pods, limits.memory, requests.nvidia.com/gpu, count/secrets).
QUOTA_KEY_RE = re.compile(r"^[a-z0-9](?:[a-z0-9./-]{0,251}[a-z0-9])?\Z")
#: What a path may not hold: control characters, quotes, '$', '`', '\', and lone surrogates
#: (a byte that is not UTF-8: kernel.json is UTF-8 text).
_UNSAFE_PATH = re.compile("[\x00-\x1f\x7f$`'\"\\\\\ud800-\udfff]")


# -- the value parsers (pure; each raises SpecError naming *what*) -------------------------------


def image_reference(text: str, what: str = "--image") -> str:
    """An image reference with an explicit tag or digest (``registry:5000/team/kernel:1.2``),
    as the provisioner's own pattern (:data:`k8s_pod.IMAGE`) accepts it."""
    from kernelfleet.provisioners.k8s_pod import IMAGE

    ref = text.strip()
    match = IMAGE_RE.match(ref) if len(ref) <= 255 + 72 else None
    if match is None or not IMAGE.match(ref):
        raise SpecError(
            f"{what} {text[:100]!r} is not an image reference: use lowercase "
            "[registry[:port]/]name:tag (or name@sha256:…), e.g. "
            "kernelfleet.test/kernel-python:0.1.0"
        )
    if not match.group("tag") and not match.group("digest"):
        raise SpecError(
            f"{what} {ref!r} has no tag: name the version, e.g. {ref}:1.0 (a moving "
            "'latest' lets the kernels of one spec differ from node to node)"
        )
    return ref


def namespace_name(text: str, what: str = "--namespace") -> str:
    """A namespace name: a DNS label (lowercase letters, digits and '-', at most 63)."""
    from kernelfleet.provisioners.k8s_pod import DNS_LABEL

    name = text.strip()
    if not DNS_LABEL.match(name):
        raise SpecError(
            f"{what} {text[:100]!r} is not a namespace name: use at most 63 lowercase letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    return name


def _quantity(text: str, what: str, example: str) -> tuple[str, float]:
    from kernelfleet.provisioners.k8s_pod import quantity

    value = text.strip()
    try:
        amount = quantity(value)
    except ValueError:
        raise SpecError(
            f"{what} {text[:40]!r} is not a Kubernetes quantity: give e.g. {example}"
        ) from None
    if not math.isfinite(amount):
        raise SpecError(f"{what} {text[:40]!r} is too large")
    return value, amount


def cpu_amount(text: str, what: str = "--cpus", max_cpus: float = DEFAULT_MAX_CPUS) -> str:
    """A CPU request and limit (``0.5``, ``2``, ``500m``), more than 0 and at most
    *max_cpus* (the bound the provisioner applies to every request, the default one too)."""
    value, amount = _quantity(text, what, "0.5, 2 or 500m")
    if not 0 < amount <= max_cpus:
        raise SpecError(
            f"{what} {value!r} is out of range: more than 0 and at most {max_cpus:g} (--max-cpus)"
        )
    return value


def memory_amount(
    text: str, what: str = "--memory", max_memory: str | None = DEFAULT_MAX_MEMORY
) -> str:
    """A memory amount (``512Mi``, ``2Gi``, ``1G``) of at least 1Mi and, with *max_memory*,
    at most that (the provisioner's bound on every request, the default one too)."""
    value, amount = _quantity(text, what, "512Mi or 2Gi")
    if amount < 2**20:
        raise SpecError(f"{what} {value!r} is less than 1Mi (memory is in bytes: give e.g. 2Gi)")
    if max_memory is not None:
        _, bound = _quantity(max_memory, "--max-memory", "16Gi")
        if amount > bound:
            raise SpecError(f"{what} {value!r} is more than --max-memory {max_memory}")
    return value


def user_id_map(raw: Mapping[str, str]) -> dict[str, str]:
    """``--user-ids alice=2001[:2001]``: user name → ``uid:gid``, as the provisioner reads it
    (:func:`~kernelfleet.provisioners.k8s_options.parse_ids`); uid and gid 0 refused."""
    from kernelfleet.errors import Forbidden
    from kernelfleet.provisioners.base import USERNAME
    from kernelfleet.provisioners.k8s_options import parse_ids

    out = {}
    for raw_name, raw_ids in raw.items():
        name, ids = str(raw_name).strip(), str(raw_ids).strip()
        if not USERNAME.match(name):
            raise SpecError(
                f"--user-ids {name[:40]!r} is not a user name (lowercase letters, digits and "
                "_.-, starting with a letter or '_', at most 32)"
            )
        try:
            uid, gid = parse_ids(ids)
        except Forbidden:
            raise SpecError(
                f"--user-ids {name}={ids[:30]!r}: give uid or uid:gid, e.g. {name}=2001:2001"
            ) from None
        if not (0 < uid <= MAX_ID and 0 < gid <= MAX_ID):
            raise SpecError(
                f"--user-ids {name}={ids}: uid and gid must be from 1 to {MAX_ID} (kernels "
                "never run as root)"
            )
        out[name] = f"{uid}:{gid}"
    return out


def quota(raw: Mapping[str, str]) -> dict[str, str]:
    """``--namespace-quota pods=2 limits.memory=16Gi``: a ResourceQuota's ``hard``."""
    out = {}
    for raw_key, raw_value in raw.items():
        key = str(raw_key).strip()
        if not QUOTA_KEY_RE.match(key):
            raise SpecError(
                f"--namespace-quota {key[:60]!r} is not a quota resource name (e.g. pods, "
                "limits.memory, requests.cpu)"
            )
        out[key] = _quantity(str(raw_value), f"--namespace-quota {key}", "2, 8 or 16Gi")[0]
    return out


def file_path(text: str, what: str) -> str:
    """An absolute path on the gateway's machine, without control characters, quotes, '$',
    '`' or '\\' (the provisioner opens it; nothing expands it)."""
    if not text.startswith("/") or _UNSAFE_PATH.search(text) or len(text) > MAX_PATH:
        raise SpecError(
            f"{what} must be an absolute path on the gateway's machine, without control "
            f"characters, quotes, '$', '`' or '\\', not {text[:200]!r}"
        )
    return text


def api_server_url(text: str) -> str:
    """``https://host:port`` (``http`` only for this machine, e.g. ``kubectl proxy``)."""
    match = API_SERVER_RE.match(text)
    port = match.group("port") if match else None
    if (
        match is None
        or (port is not None and not 0 < int(port) < 65536)
        or (match.group("scheme") == "http" and match.group("host") not in _LOOPBACK)
    ):
        raise SpecError(
            f"--api-server {text[:200]!r} is not an API server address: use "
            "https://host:port (http only for localhost, as kubectl proxy)"
        )
    return text.rstrip("/")


class K8sKind(SpecKind):
    kind = "k8s"
    provisioner_name = "kernelfleet-k8s"
    where = "on Kubernetes"
    description = "Install a kernelspec whose kernels run as Kubernetes pods (kernelfleet-k8s)."
    examples = dedent("""
        kernelfleet spec install k8s --image=kernelfleet.test/kernel-python:0.1.0 \\
            --namespace=kernelfleet-kernels --api-server=https://10.0.0.1:6443 \\
            --token-file=/etc/kernelfleet/token --ca-file=/etc/kernelfleet/ca.crt
        kernelfleet spec install k8s --image=reg:5000/kernel-r:4.3 --language=r \\
            --namespace-mode=per-kernel --kubeconfig=/etc/kernelfleet/kubeconfig
        kernelfleet spec install k8s --image=reg:5000/kernel-python:1.0 --cpus=1 --memory=2Gi \\
            --allowed-namespaces=team-a,team-b --impersonation --user-ids alice=2001:2001
        """)
    hosts_when_none = "(Kubernetes)"
    common_defaults = {
        "launch_timeout": KindDefault(
            DEFAULT_LAUNCH_TIMEOUT,
            "Seconds a kernel of this spec may take to start (written to the spec): the first "
            "kernel on a node may wait for its image to be pulled. Notebooks send their own "
            "KERNEL_LAUNCH_TIMEOUT (40 s unless raised), which outranks it. Default: 120.",
        ),
    }

    image = option(
        Unicode(
            "",
            help="The kernel image, with an explicit tag or digest, e.g. "
            "kernelfleet.test/kernel-python:0.1.0 ('kernelfleet image build'); it must hold "
            "python3 with ipykernel (or R with IRkernel) and kernelfleet's launcher. Required.",
        ),
        "KF_SPEC_K8S_IMAGE",
    )
    allowed_images = option(
        TList(
            Unicode(),
            help="More images a start request may choose with KERNEL_IMAGE (repeatable or "
            "comma list). Default: none.",
        ),
        "KF_SPEC_K8S_ALLOWED_IMAGES",
    )
    namespace_mode = option(
        CaselessStrEnum(
            ["shared", "per-kernel"],
            "shared",
            help="shared: every kernel in --namespace (deploy/kubernetes/rbac-shared.yaml); "
            "per-kernel: a namespace kf-<kernel id> with a ResourceQuota, made and deleted "
            "with each kernel (cluster-wide rights: rbac-per-kernel.yaml). Default: shared.",
        ),
        "KF_SPEC_K8S_NAMESPACE_MODE",
    )
    namespace = option(
        Unicode(
            "",
            help="The namespace of the kernels in shared mode, e.g. kernelfleet-kernels. "
            "Default: the gateway's own namespace when it runs in a pod, else 'default'.",
        ),
        "KF_SPEC_K8S_NAMESPACE",
    )
    allowed_namespaces = option(
        TList(
            Unicode(),
            help="Existing namespaces a start request may choose with KERNEL_NAMESPACE "
            "(repeatable or comma list; the gateway needs deploy/kubernetes/"
            "rbac-namespace.yaml in each). Default: none.",
        ),
        "KF_SPEC_K8S_ALLOWED_NAMESPACES",
    )
    namespace_quota = option(
        Dict(
            value_trait=Unicode(),
            key_trait=Unicode(),
            help="Per-kernel mode: the ResourceQuota of each kernel's namespace, key=value "
            "(repeatable), e.g. pods=2 limits.memory=16Gi; as a variable, a JSON object. "
            "Default: the provisioner's (pods=2, limits.memory=16Gi, limits.cpu=8).",
        ),
        "KF_SPEC_K8S_NAMESPACE_QUOTA",
    )
    api_server = option(
        Unicode(
            "",
            help="The API server, https://host:port, with --token-file (and --ca-file). "
            "Default: the in-cluster service account when the gateway runs in a pod, else "
            "the kubeconfig.",
        ),
        "KF_SPEC_K8S_API_SERVER",
    )
    token_file = option(
        Unicode(
            "",
            help="With --api-server: the file holding the gateway's bearer token (on the "
            "gateway's machine). Default: none.",
        ),
        "KF_SPEC_K8S_TOKEN_FILE",
    )
    ca_file = option(
        Unicode(
            "",
            help="With --api-server: the API server's CA certificates (PEM). Default: the "
            "system's CAs.",
        ),
        "KF_SPEC_K8S_CA_FILE",
    )
    kubeconfig = option(
        Unicode(
            "",
            help="A kubeconfig file on the gateway's machine (instead of --api-server). "
            "Default: the gateway's $KUBECONFIG, else ~/.kube/config.",
        ),
        "KF_SPEC_K8S_KUBECONFIG",
    )
    kube_context = option(
        Unicode("", help="The kubeconfig's context. Default: its current context."),
        "KF_SPEC_K8S_CONTEXT",
    )
    cpus = option(
        Unicode(
            "", help="CPU request and limit of a kernel, e.g. 1 or 500m. Default: the template's."
        ),
        "KF_SPEC_K8S_CPUS",
    )
    memory = option(
        Unicode(
            "", help="Memory request and limit of a kernel, e.g. 2Gi. Default: the template's."
        ),
        "KF_SPEC_K8S_MEMORY",
    )
    max_cpus = option(
        Float(DEFAULT_MAX_CPUS, help="Most CPUs a request may ask (KERNEL_CPUS). Default: 8."),
        "KF_SPEC_K8S_MAX_CPUS",
    )
    max_memory = option(
        Unicode(
            DEFAULT_MAX_MEMORY,
            help="Most memory a request may ask (KERNEL_MEMORY). Default: 16Gi.",
        ),
        "KF_SPEC_K8S_MAX_MEMORY",
    )
    max_gpus = option(
        Int(
            0,
            help="Most GPUs (nvidia.com/gpu, or the gateway's KF_K8S_GPU_RESOURCE) a request "
            "may ask with KERNEL_GPUS. Default: 0.",
        ),
        "KF_SPEC_K8S_MAX_GPUS",
    )
    kernel_uid = option(
        Int(DEFAULT_UID, help="The uid of kernel pods without impersonation. Default: 1000."),
        "KF_SPEC_K8S_KERNEL_UID",
    )
    kernel_gid = option(
        Int(DEFAULT_UID, help="The gid of kernel pods without impersonation. Default: 1000."),
        "KF_SPEC_K8S_KERNEL_GID",
    )
    impersonation = option(
        Bool(
            False,
            help="Run each kernel's pod as the uid --user-ids maps the requesting user "
            "(KERNEL_USERNAME) to; unmapped users are refused. Default: off (--kernel-uid).",
        ),
        "KF_SPEC_K8S_IMPERSONATION",
    )
    user_ids = option(
        Dict(
            value_trait=Unicode(),
            key_trait=Unicode(),
            help="With --impersonation: user=uid[:gid] (repeatable), e.g. alice=2001:2001; as "
            "a variable, a JSON object. Default: none (the gateway's KF_K8S_USER_IDS).",
        ),
        "KF_SPEC_K8S_USER_IDS",
    )

    # -- checks -----------------------------------------------------------------------------

    def validate(self, spec: SpecOptions) -> None:
        if spec.uses_spark or spec.toree_jar or spec.extra_spark_opts.strip():
            raise SpecError(
                "Spark and Scala kernels are not supported by 'spec install k8s' (its kernels "
                "are plain ipykernel or IRkernel pods): leave out --spark, --language=scala, "
                "--toree-jar and --extra-spark-opts"
            )
        if not self.image.strip():
            raise SpecError(
                "--image is required: the kernel image with an explicit tag, e.g. "
                "--image=kernelfleet.test/kernel-python:0.1.0 ('kernelfleet image build')"
            )
        image_reference(self.image)
        for ref in self.allowed_images:
            image_reference(ref, "--allowed-images:")
        self._check_namespaces()
        self._check_connection()
        self._check_resources()
        for flag, value in (("--kernel-uid", self.kernel_uid), ("--kernel-gid", self.kernel_gid)):
            if not 0 < value <= MAX_ID:
                raise SpecError(
                    f"{flag} {value} is out of range: from 1 to {MAX_ID} (kernels never run "
                    "as root)"
                )
        if self.user_ids and not self.impersonation:
            raise SpecError(
                "--user-ids applies with --impersonation only: add --impersonation, or leave "
                "--user-ids out (every kernel runs as --kernel-uid)"
            )
        user_id_map(self.user_ids)

    def _check_namespaces(self) -> None:
        if self.namespace and self.namespace_mode == "per-kernel":
            raise SpecError(
                "--namespace applies to --namespace-mode shared only (per-kernel mode makes "
                "kf-<kernel id> for each kernel): leave one out"
            )
        if self.namespace:
            namespace_name(self.namespace)
        for name in self.allowed_namespaces:
            namespace_name(name, "--allowed-namespaces:")
        if self.namespace_quota and self.namespace_mode != "per-kernel":
            raise SpecError(
                "--namespace-quota applies to --namespace-mode per-kernel only (a shared "
                "namespace's quota is the cluster admin's): leave it out"
            )
        quota(self.namespace_quota)

    def _check_connection(self) -> None:
        if self.api_server:
            api_server_url(self.api_server)
            if self.kubeconfig or self.kube_context:
                flag = "--kubeconfig" if self.kubeconfig else "--kube-context"
                raise SpecError(
                    f"--api-server and {flag} both say where the API server is: keep one"
                )
        for flag, path in (
            ("--token-file", self.token_file),
            ("--ca-file", self.ca_file),
            ("--kubeconfig", self.kubeconfig),
        ):
            if path:
                file_path(path, flag)
        if (self.token_file or self.ca_file) and not self.api_server:
            flag = "--token-file" if self.token_file else "--ca-file"
            raise SpecError(
                f"{flag} applies with --api-server only: add --api-server=https://host:port, "
                "or use --kubeconfig (which holds its own credentials)"
            )
        if self.kube_context and not KUBE_CONTEXT_RE.match(self.kube_context):
            raise SpecError(
                f"--kube-context {self.kube_context[:100]!r} is not a context name (letters, "
                "digits and ._@:/+-)"
            )

    def _check_resources(self) -> None:
        if not (math.isfinite(self.max_cpus) and 0 < self.max_cpus <= 1e6):
            raise SpecError(f"--max-cpus must be a positive number of CPUs, not {self.max_cpus}")
        memory_amount(self.max_memory, "--max-memory", None)
        if self.cpus:
            cpu_amount(self.cpus, "--cpus", self.max_cpus)
        if self.memory:
            memory_amount(self.memory, "--memory", self.max_memory)
        if not 0 <= self.max_gpus <= MAX_GPUS:
            raise SpecError(f"--max-gpus {self.max_gpus} is out of range: from 0 to {MAX_GPUS}")

    def install_warnings(self, spec: SpecOptions) -> list[str]:
        out = []
        if self.namespace_mode == "shared" and not self.namespace:
            out.append(
                "no --namespace: kernels run in the gateway's own namespace when it runs in a "
                "pod, else in 'default' (which deploy/kubernetes grants no rights in). Pass "
                f"--namespace={RBAC_SHARED_NAMESPACE} (rbac-shared.yaml) or your own (with "
                "--replace)."
            )
        if self.impersonation and not self.user_ids:
            out.append(
                "--impersonation without --user-ids: every user is refused unless the gateway "
                "maps users to uids itself (KF_K8S_USER_IDS). Pass --user-ids alice=2001:2001 "
                "(with --replace)."
            )
        if self.api_server and not self.token_file:
            out.append(
                "--api-server without --token-file: the gateway's requests are anonymous "
                "unless it sets KF_K8S_TOKEN_FILE. Pass --token-file=FILE (with --replace)."
            )
        return out

    # -- kernel.json ------------------------------------------------------------------------

    def provisioner_config(self, spec: SpecOptions) -> dict[str, Any]:
        cfg: dict[str, Any] = {"image": image_reference(self.image)}
        if self.allowed_images:
            cfg["allowed_images"] = [image_reference(r) for r in self.allowed_images]
        if self.namespace_mode != "shared":
            cfg["namespace_mode"] = self.namespace_mode
        if self.namespace:
            cfg["namespace"] = namespace_name(self.namespace)
        if self.allowed_namespaces:
            cfg["allowed_namespaces"] = [namespace_name(n) for n in self.allowed_namespaces]
        if self.namespace_quota:
            cfg["namespace_quota"] = quota(self.namespace_quota)
        for name in ("api_server", "token_file", "ca_file", "kubeconfig", "kube_context"):
            value = getattr(self, name)
            if value:
                cfg[name] = api_server_url(value) if name == "api_server" else value
        for name, default in (("kernel_uid", DEFAULT_UID), ("kernel_gid", DEFAULT_UID)):
            if getattr(self, name) != default:
                cfg[name] = getattr(self, name)
        if self.impersonation:
            cfg["impersonation_enabled"] = True
        if self.user_ids:
            cfg["user_ids"] = user_id_map(self.user_ids)
        for name in ("cpus", "memory"):
            if getattr(self, name).strip():
                cfg[name] = getattr(self, name).strip()
        if self.max_cpus != DEFAULT_MAX_CPUS:
            cpus = self.max_cpus
            cfg["max_cpus"] = int(cpus) if float(cpus).is_integer() else cpus
        if self.max_memory.strip() != DEFAULT_MAX_MEMORY:
            cfg["max_memory"] = self.max_memory.strip()
        if self.max_gpus:
            cfg["max_gpus"] = self.max_gpus
        return cfg

    def build_argv(self, spec: SpecOptions, resource_dir: str) -> list[str]:
        if spec.lang == "r":
            return list(R_ARGV)
        argv = list(PYTHON_ARGV)
        if spec.ipykernel_subclass_name != DEFAULT_KERNEL_CLASS:
            argv.append(f"--IPKernelApp.kernel_class={spec.ipykernel_subclass_name}")
        return argv

    def interrupt_mode(self, spec: SpecOptions) -> str:
        return "message"

    def writes_run_sh(self, spec: SpecOptions) -> bool:
        return False  # and no env, no launcher scripts: the shared ones of a non-Spark spec

    def spec_files(self, spec: SpecOptions) -> dict[str, tuple[str, int]]:
        """The provisioner's built-in pod template, for the admin to edit."""
        from kernelfleet.provisioners.k8s_pod import DEFAULT_TEMPLATE

        return {TEMPLATE_FILE: (DEFAULT_TEMPLATE, 0o644)}

    @classmethod
    def next_steps(cls, name: str) -> str:
        return (
            f"Next: 'kernelfleet hosts check --spec {name}' checks the API server, the "
            "gateway's rights there, the namespace, the image on the nodes and the pod "
            f"template. Edit {TEMPLATE_FILE} in the kernelspec's directory to change its pods."
        )


# -- the provisioner's settings, for `hosts check` -------------------------------------------------


def provisioner_class() -> type[Any]:
    """The ``kernelfleet-k8s`` provisioner class, imported only when a command checks the
    cluster (its options: ``--K8sProvisioner.*``, ``KF_K8S_*``)."""
    from kernelfleet.provisioners.k8s import K8sProvisioner

    return K8sProvisioner


def provisioner_settings(config: Any, spec_config: dict[str, Any] | None = None) -> Any:
    """The Kubernetes provisioner's settings (app config < ``KF_K8S_*`` environment <
    kernelspec config) as a kernel of the spec would get them: an unstarted provisioner whose
    ``connection()``, ``shared_namespace()``, ``image``, … say where and how it starts pods.
    Kernelspec entries it does not know are ignored."""
    cls = provisioner_class()
    traits = cls.class_traits()
    known = {k: v for k, v in (spec_config or {}).items() if k in traits}
    return cls(config=config, **known)
