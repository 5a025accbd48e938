"""Pure parts of ``kernelfleet-k8s``: request parameters, the pod template, the manifests, and
what a pod's status means for a launch. No I/O; unit-tested without a cluster.

**Parameters.** A start request reaches a pod only through :class:`PodParams`, built by
:func:`request_params` from declared ``KERNEL_*`` variables, each validated (a quantity, a path
of safe characters, a name from an allowed list) and bounded by the admin's limits:

========================  ===============================================================
``KERNEL_CPUS``           CPU request and limit (``0.5``, ``2``, ``500m``) ≤ ``max_cpus``
``KERNEL_MEMORY``         memory request and limit (``512Mi``, ``2Gi``, ``1G``) ≤ ``max_memory``
``KERNEL_GPUS``           count of ``gpu_resource`` (extended resource) ≤ ``max_gpus``
``KERNEL_WORKING_DIR``    the container's working directory (absolute, no ``..``)
``KERNEL_NAMESPACE``      namespace mode ``user``: one of ``allowed_namespaces``
``KERNEL_IMAGE``          one of ``allowed_images``
``KERNEL_USERNAME``       labels, the uid (impersonation) and the admin's volumes
========================  ===============================================================

**Template.** The kernelspec's pod template is Jinja, rendered in a sandbox with
``StrictUndefined`` from those parameters only; every ``{{ expression }}`` renders as a JSON
literal (``"2Gi"``, ``1000``), which is always a valid YAML scalar, so no value can add YAML
structure. :func:`finish_pod` then sets what the gateway relies on, whatever the template
says: name, namespace, our labels, the launcher as the command, ``restartPolicy: Never``, and
safe defaults (non-root, no privilege escalation, all capabilities dropped, the runtime's
seccomp profile, no service-account token unless the template asks for one). A pod that would
leave a kernel's sandbox — uid or gid 0, privileged, privilege escalation, added capabilities,
the host's PID, IPC or network namespace — is refused (:func:`unsafe_settings`).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from kernelfleet.errors import BadRequest, Forbidden, LaunchFailed

MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "app.kubernetes.io/component"
LABEL_KERNEL = "kernelfleet.io/kernel-id"
LABEL_USER = "kernelfleet.io/user"
LABEL_SPEC = "kernelfleet.io/kernelspec"
#: The labels of everything kernelfleet creates (the backend's watch selects on them).
OWNED = {MANAGED_BY: "kernelfleet"}
CONTAINER = "kernel"

QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti|)$")
_FACTORS = {
    "": 1,
    "m": 0.001,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
# one way to match each path (no nested quantifier: linear time on any input)
SAFE_PATH = re.compile(r"^/(?:[A-Za-z0-9._@+=-]+/)*[A-Za-z0-9._@+=-]*\Z")
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]{0,250}(@sha256:[0-9a-f]{64})?$")
LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]")


def quantity(text: str) -> float:
    """The value of a Kubernetes quantity of the forms we accept (``500m``, ``2``, ``1.5Gi``);
    raises ValueError otherwise."""
    m = QUANTITY.match(text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _FACTORS[m.group(2)]


def label_value(text: str) -> str:
    """*text* as a valid label value (≤ 63 characters of ``[A-Za-z0-9._-]``, alphanumeric at
    both ends; '' stays '')."""
    out = LABEL_VALUE.sub("_", text)[:63].strip("._-")
    return out


@dataclass(frozen=True)
class Limits:
    """The admin's bounds on what a request may ask."""

    max_cpus: float = 8.0
    max_memory: str = "16Gi"
    max_gpus: int = 0
    cpus: str = ""  # default request when the request says nothing ('' = the template's)
    memory: str = ""


@dataclass(frozen=True)
class Volume:
    """An admin-declared volume; ``{username}`` in *source* and *mount_path* becomes the
    requesting user's (validated) name."""

    name: str
    mount_path: str
    host_path: str = ""
    claim: str = ""
    read_only: bool = False


@dataclass(frozen=True)
class PodParams:
    """Everything of a request that can reach a pod (see the module docstring)."""

    kernel_id: str
    kernel_name: str
    pod_name: str
    namespace: str
    image: str
    username: str = ""
    uid: int = 1000
    gid: int = 1000
    cpus: str = ""
    memory: str = ""
    gpus: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    working_dir: str = ""
    volumes: tuple[Volume, ...] = field(default_factory=tuple)

    def template_context(self) -> dict[str, Any]:
        return {
            "kernel_id": self.kernel_id,
            "kernel_name": self.kernel_name,
            "pod_name": self.pod_name,
            "namespace": self.namespace,
            "image": self.image,
            "username": self.username,
            "uid": self.uid,
            "gid": self.gid,
            "cpus": self.cpus,
            "memory": self.memory,
            "gpus": self.gpus,
            "gpu_resource": self.gpu_resource,
            "working_dir": self.working_dir,
        }


def parse_volumes(raw: Sequence[Any]) -> tuple[Volume, ...]:
    """The admin's ``volumes`` option (a list of objects with ``name``, ``mount_path`` and one
    of ``host_path`` / ``claim``); raises ValueError naming the bad entry."""
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise ValueError(f"volumes[{i}] is not an object")
        name = str(item.get("name", ""))
        mount = str(item.get("mount_path", ""))
        host, claim = str(item.get("host_path", "")), str(item.get("claim", ""))
        if not DNS_LABEL.match(name) or not mount.startswith("/") or bool(host) == bool(claim):
            raise ValueError(
                f"volumes[{i}] needs a name (a DNS label), an absolute mount_path and one of "
                "host_path or claim"
            )
        out.append(Volume(name, mount, host, claim, bool(item.get("read_only", False))))
    return tuple(out)


def _user_path(template: str, username: str, what: str) -> str:
    if "{username}" in template and not username:
        raise BadRequest(f"{what} needs KERNEL_USERNAME: the admin's volume is per user.")
    path = template.replace("{username}", username)
    if ".." in path.split("/"):
        raise BadRequest(f"{what} {path!r} is not allowed ('..').")
    return path


def request_params(
    env: Mapping[str, str],
    *,
    kernel_id: str,
    kernel_name: str,
    pod_name: str,
    namespace: str,
    image: str,
    allowed_images: Sequence[str],
    uid: int,
    gid: int,
    limits: Limits,
    gpu_resource: str,
    volumes: Sequence[Volume],
    username: str,
) -> PodParams:
    """Validate the request's ``KERNEL_*`` values into :class:`PodParams` (raises BadRequest
    or Forbidden with the variable's name and what it accepts). *namespace*, *uid* and
    *username* were decided by the caller (namespace mode, user map)."""
    chosen = env.get("KERNEL_IMAGE", "").strip()
    if chosen and chosen != image:
        if chosen not in allowed_images:
            raise Forbidden(
                f"KERNEL_IMAGE {chosen[:40]!r} is not allowed here: choose one of "
                f"{', '.join(allowed_images) or image} (the admin's allowed_images)."
            )
        image = chosen
    cpus = env.get("KERNEL_CPUS", "").strip() or limits.cpus
    if cpus:
        try:
            value = quantity(cpus)
        except ValueError:
            raise BadRequest(
                f"KERNEL_CPUS {cpus[:40]!r} is not a CPU amount: give e.g. 0.5, 2 or 500m."
            ) from None
        if value <= 0 or value > limits.max_cpus:
            raise BadRequest(
                f"KERNEL_CPUS {cpus[:40]!r} is out of range: at most {limits.max_cpus:g} here."
            )
    memory = env.get("KERNEL_MEMORY", "").strip() or limits.memory
    if memory:
        try:
            value = quantity(memory)
        except ValueError:
            raise BadRequest(
                f"KERNEL_MEMORY {memory[:40]!r} is not a memory amount: give e.g. 512Mi or 2Gi."
            ) from None
        if value < 2**20 or value > quantity(limits.max_memory):
            raise BadRequest(
                f"KERNEL_MEMORY {memory[:40]!r} is out of range: from 1Mi to "
                f"{limits.max_memory} here."
            )
    gpus_text = env.get("KERNEL_GPUS", "").strip() or "0"
    if not (gpus_text.isascii() and gpus_text.isdigit()) or len(gpus_text) > 3:
        raise BadRequest(f"KERNEL_GPUS {gpus_text[:20]!r} is not a count: give e.g. 1.")
    gpus = int(gpus_text)
    if gpus > limits.max_gpus:
        raise BadRequest(
            f"KERNEL_GPUS {gpus} is more than this kernelspec allows ({limits.max_gpus})."
        )
    wd = env.get("KERNEL_WORKING_DIR", "").strip()
    if wd and (len(wd) > 255 or not SAFE_PATH.match(wd) or ".." in wd.split("/")):
        raise BadRequest(
            f"KERNEL_WORKING_DIR {wd[:40]!r} is not allowed: give an absolute path of letters, "
            "digits and ._@+=- without '..'."
        )
    vols = tuple(
        Volume(
            v.name,
            _user_path(v.mount_path, username, "the mount path"),
            _user_path(v.host_path, username, "the host path") if v.host_path else "",
            _user_path(v.claim, username, "the claim")
            .replace("_", "-")
            .replace(".", "-")
            .strip("-")
            if v.claim
            else "",
            v.read_only,
        )
        for v in volumes
    )
    return PodParams(
        kernel_id=kernel_id,
        kernel_name=kernel_name,
        pod_name=pod_name,
        namespace=namespace,
        image=image,
        username=username,
        uid=uid,
        gid=gid,
        cpus=cpus,
        memory=memory,
        gpus=gpus,
        gpu_resource=gpu_resource,
        working_dir=wd,
        volumes=vols,
    )


# -- the template ------------------------------------------------------------------------------

#: The pod template used when a kernelspec has none (``spec install k8s`` writes it out).
DEFAULT_TEMPLATE = """\
# kernelfleet pod template: Jinja, rendered from validated parameters only; every
# expression in double braces becomes a JSON literal. The gateway then sets the name,
# namespace, labels, command, restartPolicy and the safe security defaults (see
# kernelfleet.provisioners.k8s_pod).
apiVersion: v1
kind: Pod
metadata:
  annotations:
    kernelfleet.io/kernelspec: {{ kernel_name }}
spec:
  terminationGracePeriodSeconds: 5
  containers:
    - name: kernel
      image: {{ image }}
      imagePullPolicy: IfNotPresent
      env:
        - {name: HOME, value: "/tmp"}
{%- if working_dir %}
      workingDir: {{ working_dir }}
{%- endif %}
"""


def render_template(text: str, params: PodParams) -> dict[str, Any]:
    """Render pod template *text* (Jinja, sandboxed) with *params*; the pod as a dict.
    Raises LaunchFailed naming the template's error (an admin's fault, not the user's)."""
    from jinja2 import StrictUndefined, TemplateError
    from jinja2.sandbox import SandboxedEnvironment

    def literal(value: Any) -> Any:
        return json.dumps(value) if isinstance(value, (str, int, float, bool)) else value

    jinja = SandboxedEnvironment(undefined=StrictUndefined, finalize=literal, autoescape=False)
    try:
        rendered = jinja.from_string(text).render(params.template_context())
        pod = yaml.safe_load(rendered)
    except (TemplateError, yaml.YAMLError, ArithmeticError, TypeError, ValueError) as exc:
        raise LaunchFailed(
            f"Kernel '{params.kernel_name}' not started: its pod template is broken "
            f"({type(exc).__name__}: {str(exc)[:200]}). Fix the kernelspec's pod template."
        ) from None
    if not isinstance(pod, dict) or not isinstance(pod.get("spec", {}), dict):
        raise LaunchFailed(
            f"Kernel '{params.kernel_name}' not started: its pod template does not describe "
            "a pod (a mapping with a spec). Fix the kernelspec's pod template."
        )
    return pod


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    spec = pod.setdefault("spec", {})
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        containers = spec["containers"] = [{"name": CONTAINER}]
    named = [c for c in containers if isinstance(c, dict) and c.get("name") == CONTAINER]
    if not isinstance(containers[0], dict):
        containers[0] = {"name": CONTAINER}
    found: dict[str, Any] = named[0] if named else containers[0]
    return found


def _dict(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        value = parent[key] = {}
    return value


def _list(parent: dict[str, Any], key: str) -> list[Any]:
    value = parent.get(key)
    if not isinstance(value, list):
        value = parent[key] = []
    return value


def labels(params: PodParams) -> dict[str, str]:
    out = {
        **OWNED,
        COMPONENT: "kernel",
        LABEL_KERNEL: params.kernel_id,
        LABEL_SPEC: label_value(params.kernel_name),
    }
    if params.username:
        out[LABEL_USER] = label_value(params.username)
    return out


def finish_pod(
    pod: dict[str, Any],
    params: PodParams,
    command: Sequence[str],
    env: Mapping[str, str],
    secret_env: Mapping[str, tuple[str, str]],
) -> dict[str, Any]:
    """The pod to create: rendered template *pod* with what the gateway relies on (see the
    module docstring). *env* are plain variables; *secret_env* maps a variable to (secret name,
    key). Raises LaunchFailed for a template that runs the kernel as root."""
    pod["apiVersion"], pod["kind"] = "v1", "Pod"
    meta = _dict(pod, "metadata")
    meta["name"], meta["namespace"] = params.pod_name, params.namespace
    meta.pop("generateName", None)
    _dict(meta, "labels").update(labels(params))
    spec = _dict(pod, "spec")
    spec["restartPolicy"] = "Never"
    spec.setdefault("automountServiceAccountToken", False)
    spec.setdefault("enableServiceLinks", False)
    psc = _dict(spec, "securityContext")
    psc.setdefault("runAsNonRoot", True)
    psc["runAsUser"], psc["runAsGroup"] = params.uid, params.gid
    psc.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    c = _container(pod)
    c["name"] = CONTAINER
    c.setdefault("image", params.image)
    if params.image and c.get("image") != params.image:
        c["image"] = params.image  # KERNEL_IMAGE chose one of the allowed images
    c["command"] = list(command)
    c.pop("args", None)
    csc = _dict(c, "securityContext")
    csc.setdefault("allowPrivilegeEscalation", False)
    csc.setdefault("capabilities", {"drop": ["ALL"]})
    csc.pop("runAsUser", None)  # the pod's uid (the user map's) wins
    csc.pop("runAsGroup", None)
    ours = set(env) | set(secret_env)
    kept = [e for e in c.get("env") or [] if isinstance(e, dict) and e.get("name") not in ours]
    c["env"] = [
        *kept,
        *({"name": k, "value": v} for k, v in sorted(env.items())),
        *(
            {"name": k, "valueFrom": {"secretKeyRef": {"name": s, "key": key}}}
            for k, (s, key) in sorted(secret_env.items())
        ),
    ]
    res = _dict(c, "resources")
    for key, value in (("cpu", params.cpus), ("memory", params.memory)):
        if value:
            _dict(res, "requests")[key] = value
            _dict(res, "limits")[key] = value
    if params.gpus:
        _dict(res, "limits")[params.gpu_resource] = str(params.gpus)
    if params.working_dir:
        c["workingDir"] = params.working_dir
    for vol in params.volumes:
        source: dict[str, Any] = (
            {"hostPath": {"path": vol.host_path, "type": "Directory"}}
            if vol.host_path
            else {"persistentVolumeClaim": {"claimName": vol.claim}}
        )
        _list(spec, "volumes").append({"name": vol.name, **source})
        _list(c, "volumeMounts").append(
            {"name": vol.name, "mountPath": vol.mount_path, "readOnly": vol.read_only}
        )
    every = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    for other in every:
        if isinstance(other, dict) and other is not c:  # sidecars and init containers too
            osc = _dict(other, "securityContext")
            osc.setdefault("allowPrivilegeEscalation", False)
            osc.setdefault("capabilities", {"drop": ["ALL"]})
    unsafe = unsafe_settings(spec, psc, [x for x in every if isinstance(x, dict)])
    if unsafe:
        raise LaunchFailed(
            f"Kernel '{params.kernel_name}' not started: its pod would get {unsafe}, which "
            "kernelfleet never grants a kernel. Fix the kernelspec's pod template (or user map)."
        )
    return pod


def unsafe_settings(
    spec: Mapping[str, Any], psc: Mapping[str, Any], containers: Sequence[dict[str, Any]]
) -> str:
    """The first setting of a pod that breaks out of a kernel's sandbox, or '': uid or gid 0,
    privileged, privilege escalation, added capabilities, the host's namespaces."""
    for key in ("hostPID", "hostIPC", "hostNetwork"):
        if spec.get(key) is True:
            return f"{key}: true"
    for where in (psc, *(_dict(x, "securityContext") for x in containers)):
        if where.get("runAsUser") == 0 or where.get("runAsGroup") == 0:
            return "uid or gid 0"
        if where.get("privileged") is True:
            return "privileged: true"
        if where.get("allowPrivilegeEscalation") is True:
            return "allowPrivilegeEscalation: true"
        caps = where.get("capabilities")
        if isinstance(caps, Mapping) and caps.get("add"):
            return f"capabilities {caps.get('add')!r:.40}"
    if psc.get("fsGroup") == 0 or 0 in (psc.get("supplementalGroups") or []):
        return "group 0"
    return ""


# -- the other objects of a kernel -------------------------------------------------------------


def namespace_manifest(name: str, params: PodParams) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels(params)},
    }


def quota_manifest(namespace: str, hard: Mapping[str, str], params: PodParams) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "kernel-quota", "namespace": namespace, "labels": labels(params)},
        "spec": {"hard": dict(hard)},
    }


def limit_range_manifest(
    namespace: str, cpus: str, memory: str, params: PodParams
) -> dict[str, Any]:
    """Default requests and limits of a per-kernel namespace, so that a quota on
    ``limits.*``/``requests.*`` admits a pod whose template sets none."""
    values = {"cpu": cpus or "1", "memory": memory or "1Gi"}
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "kernel-defaults", "namespace": namespace, "labels": labels(params)},
        "spec": {"limits": [{"type": "Container", "default": values, "defaultRequest": values}]},
    }


def secret_manifest(name: str, values: Mapping[str, str], params: PodParams) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": params.namespace, "labels": labels(params)},
        "data": {k: base64.b64encode(v.encode()).decode("ascii") for k, v in values.items()},
    }


def pod_name(kernel_id: str, restart: int) -> str:
    """``kf-<kernel id>``, then ``kf-<kernel id>-r<n>`` for the n-th restart (a new pod while
    the old one may still be terminating)."""
    return f"kf-{kernel_id}" if restart <= 0 else f"kf-{kernel_id}-r{restart}"
