"""Pure decisions of the Docker provisioner: a request's ``KERNEL_*`` values validated into
:class:`ContainerParams`, and the Engine API bodies built from them — a container
(``POST /containers/create``) or a Swarm service (``POST /services/create``). No I/O here.

What a request may choose is bounded by the admin: the image (one of ``allowed_images``), CPUs,
memory and pids up to the kernelspec's maxima, a working directory (an absolute, plain path).
Everything else — the user, the network, the volumes, the labels — is the admin's or ours. The
kernel's environment goes in as data (``Env`` entries), never through a shell.

Every container runs with no new privileges, every capability dropped, and swap capped at its
memory limit (a kernel past its limit is killed, not slowed to a crawl). A Swarm service drops
every capability too; API 1.41 has no way to ask a service for no-new-privileges or a swap cap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kernelfleet.errors import BadRequest, Forbidden
from kernelfleet.provisioners.k8s_pod import SAFE_PATH, label_value, quantity

MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "app.kubernetes.io/component"
LABEL_KERNEL = "io.kernelfleet.kernel-id"
LABEL_USER = "io.kernelfleet.user"
LABEL_SPEC = "io.kernelfleet.kernelspec"
LABEL_GATEWAY = "io.kernelfleet.gateway"
LABEL_NAME = "io.kernelfleet.name"  # the container's or service's name (a task's says which)
#: The labels that select every kernel container or service kernelfleet made.
KERNEL_LABELS = {MANAGED_BY: "kernelfleet", COMPONENT: "kernel"}
#: A Docker network name (``bridge``, ``host`` is refused: a kernel would share the host's).
NETWORK_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass(frozen=True)
class Limits:
    """The admin's defaults and bounds for what a request may ask."""

    cpus: str = ""
    memory: str = ""
    pids: int = 0
    max_cpus: float = 8.0
    max_memory: str = "16Gi"
    max_pids: int = 4096


@dataclass(frozen=True)
class Mount:
    """An admin-declared mount: *source* is a host path (absolute) or a named volume;
    ``{username}`` in *source* and *target* becomes the requesting user's validated name."""

    source: str
    target: str
    read_only: bool = False

    @property
    def bind(self) -> bool:
        return self.source.startswith("/")


@dataclass(frozen=True)
class ContainerParams:
    """Everything of a request that reaches a container or service."""

    kernel_id: str
    kernel_name: str
    name: str
    image: str
    network: str
    username: str = ""
    uid: int = 1000
    gid: int = 1000
    nano_cpus: int = 0  # 0: no limit
    memory: int = 0  # bytes; 0: no limit
    pids: int = 0  # 0: no limit
    working_dir: str = ""
    mounts: tuple[Mount, ...] = field(default_factory=tuple)
    gateway: str = ""


def parse_mounts(raw: Sequence[Any]) -> tuple[Mount, ...]:
    """The admin's ``volumes`` option: objects with ``source``, ``target`` and optionally
    ``read_only``; raises ValueError naming the bad entry."""
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise ValueError(f"volumes[{i}] is not an object")
        source, target = str(item.get("source", "")), str(item.get("target", ""))
        named = bool(source) and all(c in NETWORK_CHARS for c in source.replace("{username}", ""))
        if not target.startswith("/") or not (source.startswith("/") or named):
            raise ValueError(
                f"volumes[{i}] needs a source (an absolute host path or a volume name) and an "
                "absolute target"
            )
        out.append(Mount(source, target, bool(item.get("read_only", False))))
    return tuple(out)


def _user_value(template: str, username: str, what: str) -> str:
    if "{username}" in template and not username:
        raise BadRequest(f"{what} needs KERNEL_USERNAME: the admin's volume is per user.")
    value = template.replace("{username}", username)
    if ".." in value.split("/"):
        raise BadRequest(f"{what} {value[:60]!r} is not allowed ('..').")
    return value


def _amount(env: Mapping[str, str], name: str, default: str, example: str) -> tuple[str, float]:
    text = env.get(name, "").strip() or default
    if not text:
        return "", 0.0
    try:
        return text, quantity(text)
    except ValueError:
        raise BadRequest(f"{name} {text[:40]!r} is not an amount: give e.g. {example}.") from None


def request_params(
    env: Mapping[str, str],
    *,
    kernel_id: str,
    kernel_name: str,
    name: str,
    image: str,
    allowed_images: Sequence[str],
    network: str,
    uid: int,
    gid: int,
    username: str,
    limits: Limits,
    mounts: Sequence[Mount],
    gateway: str = "",
) -> ContainerParams:
    """Validate the request's ``KERNEL_*`` values (raises BadRequest or Forbidden naming the
    variable and what it accepts). The caller decided the user and the network."""
    chosen = env.get("KERNEL_IMAGE", "").strip()
    if chosen and chosen != image:
        if chosen not in allowed_images:
            raise Forbidden(
                f"KERNEL_IMAGE {chosen[:40]!r} is not allowed here: choose one of "
                f"{', '.join(allowed_images) or image} (the admin's allowed_images)."
            )
        image = chosen
    cpus_text, cpus = _amount(env, "KERNEL_CPUS", limits.cpus, "0.5, 2 or 500m")
    if cpus_text and (cpus < 0.01 or cpus > limits.max_cpus):
        raise BadRequest(
            f"KERNEL_CPUS {cpus_text[:40]!r} is out of range: 0.01 to {limits.max_cpus:g} here."
        )
    mem_text, memory = _amount(env, "KERNEL_MEMORY", limits.memory, "512Mi or 2Gi")
    if mem_text and (memory < 6 * 2**20 or memory > quantity(limits.max_memory)):
        raise BadRequest(
            f"KERNEL_MEMORY {mem_text[:40]!r} is out of range: from 6Mi (Docker's least) to "
            f"{limits.max_memory} here."
        )
    pids_text = env.get("KERNEL_PIDS", "").strip() or (str(limits.pids) if limits.pids else "")
    pids = 0
    if pids_text:
        if not (pids_text.isascii() and pids_text.isdigit()) or len(pids_text) > 7:
            raise BadRequest(f"KERNEL_PIDS {pids_text[:20]!r} is not a count: give e.g. 256.")
        pids = int(pids_text)
        if pids < 16 or pids > limits.max_pids:
            raise BadRequest(f"KERNEL_PIDS {pids} is out of range: 16 to {limits.max_pids} here.")
    wd = env.get("KERNEL_WORKING_DIR", "").strip()
    if wd and (len(wd) > 255 or not SAFE_PATH.match(wd) or ".." in wd.split("/")):
        raise BadRequest(
            f"KERNEL_WORKING_DIR {wd[:40]!r} is not allowed: give an absolute path of letters, "
            "digits and ._@+=- without '..'."
        )
    chosen_mounts = tuple(
        Mount(
            _user_value(m.source, username, "the volume source"),
            _user_value(m.target, username, "the mount target"),
            m.read_only,
        )
        for m in mounts
    )
    return ContainerParams(
        kernel_id=kernel_id,
        kernel_name=kernel_name,
        name=name,
        image=image,
        network=network,
        username=username,
        uid=uid,
        gid=gid,
        nano_cpus=round(cpus * 1e9),
        memory=int(memory),
        pids=pids,
        working_dir=wd,
        mounts=chosen_mounts,
        gateway=gateway,
    )


def check_network(network: str) -> str | None:
    """Why *network* cannot hold kernels (None when it can)."""
    if network in ("host", "none"):
        return f"network {network!r} cannot hold kernels (use bridge or a network of your own)"
    if not network or len(network) > 128 or any(c not in NETWORK_CHARS for c in network):
        return f"network {network[:40]!r} is not a Docker network name"
    return None


def container_name(kernel_id: str, restart: int) -> str:
    """``kf-<kernel id>``, then ``kf-<kernel id>-r<n>`` for the n-th restart."""
    return f"kf-{kernel_id}" if restart <= 0 else f"kf-{kernel_id}-r{restart}"


def labels(params: ContainerParams) -> dict[str, str]:
    out = {
        **KERNEL_LABELS,
        LABEL_KERNEL: params.kernel_id,
        LABEL_NAME: params.name,
        LABEL_SPEC: label_value(params.kernel_name),
    }
    if params.username:
        out[LABEL_USER] = label_value(params.username)
    if params.gateway:
        out[LABEL_GATEWAY] = label_value(params.gateway)
    return out


def _env_list(env: Mapping[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(env.items()) if "=" not in k and "\0" not in k + v]


def _mounts(params: ContainerParams) -> list[dict[str, Any]]:
    return [
        {
            "Type": "bind" if m.bind else "volume",
            "Source": m.source,
            "Target": m.target,
            "ReadOnly": m.read_only,
        }
        for m in params.mounts
    ]


def container_body(
    params: ContainerParams, command: Sequence[str], env: Mapping[str, str]
) -> dict[str, Any]:
    """The body of ``POST /containers/create?name=<params.name>``."""
    host: dict[str, Any] = {
        "NetworkMode": params.network,
        "RestartPolicy": {"Name": "no"},
        "AutoRemove": False,  # an exit at start must leave its code and log to read
        "SecurityOpt": ["no-new-privileges"],
        "CapDrop": ["ALL"],
        "Mounts": _mounts(params),
    }
    if params.memory:
        host["Memory"] = params.memory
        host["MemorySwap"] = params.memory  # no swap beyond the limit
    if params.nano_cpus:
        host["NanoCpus"] = params.nano_cpus
    if params.pids:
        host["PidsLimit"] = params.pids
    body: dict[str, Any] = {
        "Image": params.image,
        "Entrypoint": list(command),  # the image's own entrypoint (and its CMD) are replaced
        "Cmd": [],
        "Env": _env_list(env),
        "Labels": labels(params),
        "User": f"{params.uid}:{params.gid}",
        "Hostname": params.name[:63],
        "HostConfig": host,
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "Tty": False,
        "OpenStdin": False,
    }
    if params.working_dir:
        body["WorkingDir"] = params.working_dir
    return body


def service_body(
    params: ContainerParams,
    command: Sequence[str],
    env: Mapping[str, str],
    constraints: Sequence[str],
    stop_grace: int = 5,
) -> dict[str, Any]:
    """The body of ``POST /services/create``: one replica, never restarted by Swarm (a kernel
    that dies is the gateway's to restart or report), placed by *constraints*."""
    spec: dict[str, Any] = {
        "Image": params.image,
        "Command": list(command),
        "Env": _env_list(env),
        "Labels": labels(params),
        "User": f"{params.uid}:{params.gid}",
        "Hostname": params.name[:63],
        "Mounts": _mounts(params),
        "CapabilityDrop": ["ALL"],
        "StopGracePeriod": int(stop_grace * 1e9),  # nanoseconds
    }
    if params.working_dir:
        spec["Dir"] = params.working_dir
    limits: dict[str, Any] = {}
    if params.memory:
        limits["MemoryBytes"] = params.memory
    if params.nano_cpus:
        limits["NanoCPUs"] = params.nano_cpus
    if params.pids:
        limits["Pids"] = params.pids
    return {
        "Name": params.name,
        "Labels": labels(params),
        "TaskTemplate": {
            "ContainerSpec": spec,
            "Resources": {"Limits": limits},
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
            "Placement": {"Constraints": list(constraints)},
            "Networks": [{"Target": params.network}],
        },
        "Mode": {"Replicated": {"Replicas": 1}},
    }


def check_constraints(constraints: Sequence[str]) -> str | None:
    """Why a placement constraint list is unusable (None when each is ``key==value`` or
    ``key!=value``)."""
    for c in constraints:
        if not isinstance(c, str) or not ("==" in c or "!=" in c) or len(c) > 256:
            return f"placement constraint {str(c)[:60]!r} is not key==value or key!=value"
    return None


__all__ = [
    "KERNEL_LABELS",
    "LABEL_KERNEL",
    "ContainerParams",
    "Limits",
    "Mount",
    "check_constraints",
    "check_network",
    "container_body",
    "container_name",
    "labels",
    "parse_mounts",
    "request_params",
    "service_body",
]
