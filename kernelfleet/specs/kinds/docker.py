"""``kernelfleet spec install docker``: each kernel a Docker container, or a Swarm service with
``--swarm`` (``kernelfleet-docker``).

As with ``spec install k8s``, the kernel runs in the image the spec names, started by
kernelfleet's launcher in that image; nothing of the spec is copied into the container. So
**argv** is the kernel's command line *inside the image* (``python3 -m ipykernel_launcher -f
{connection_file}``, or IRkernel's; ``--python`` does not apply; Spark and Scala are refused);
there is no ``env``, ``bin/run.sh`` or launcher script; interrupts are ``interrupt_request``
messages, the same for a container and a Swarm task (which no signal reaches); the launch
timeout keeps the shared 60 s (kernelfleet never pulls: the image is on the engine already).

Every value is checked with the provisioner's own pure rules (``docker_spec``'s networks,
placement constraints and mounts, ``k8s_pod.quantity`` for amounts, the Kubernetes kind's image
pattern), and more strictly where the provisioner only needs a value to be usable (no ``..``
in a mount, no engine socket mounted), each refusal one line naming its flag. The values are
JSON in ``kernel_provisioner.config``, read by no shell and checked again at launch.
``kernelfleet hosts check --spec NAME`` asks the engine (:mod:`kernelfleet.specs.dockercheck`)
with the provisioner's settings, read through :func:`provisioner_settings`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from textwrap import dedent
from typing import Any

from traitlets import Bool, Dict, Float, Int, Unicode
from traitlets import List as TList

from kernelfleet.config import option
from kernelfleet.specs.kinds.base import SpecKind
from kernelfleet.specs.kinds.k8s import (
    MAX_ID,
    PYTHON_ARGV,
    R_ARGV,
    image_reference,
    user_id_map,
)
from kernelfleet.specs.options import DEFAULT_KERNEL_CLASS, SpecError, SpecOptions

#: The provisioner's defaults (:class:`~kernelfleet.provisioners.docker_options.DockerOptions`):
#: not written to kernel.json. tests/specs/test_docker_kind.py holds them to the provisioner's.
DEFAULT_NETWORK = "bridge"
DEFAULT_UID = 1000
DEFAULT_MAX_CPUS = 8.0
DEFAULT_MAX_MEMORY = "16Gi"
DEFAULT_MAX_PIDS = 4096
DEFAULT_STOP_GRACE = 5
#: The least a container may get (the provisioner's request rules; 6 MiB is Docker's least),
#: and the most an admin may allow (CPUs as for Kubernetes, 1024Ti, Linux's largest pid_max).
MIN_CPUS, MIN_MEMORY, MIN_PIDS = 0.01, 6 * 2**20, 16
MAX_CPUS, MAX_MEMORY, MAX_PIDS, MAX_STOP_GRACE = 1e6, 2**50, 2**22, 3600
_INT_DEFAULTS = (
    ("kernel_uid", DEFAULT_UID),
    ("kernel_gid", DEFAULT_UID),
    ("pids", 0),
    ("max_pids", DEFAULT_MAX_PIDS),
    ("stop_grace", DEFAULT_STOP_GRACE),
)

#: ``unix:///path`` or ``tcp://host:port`` (what ``docker -H`` takes, without ssh://).
DOCKER_HOST_RE = re.compile(
    r"^(?:unix://(?P<path>/[A-Za-z0-9._@+=/-]{1,200})"
    r"|tcp://(?P<host>\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9][A-Za-z0-9.-]{0,252}):(?P<port>\d{1,5}))\Z"
)
#: A Docker network name, starting with a letter or digit.
NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
#: A Swarm placement constraint: a node or engine attribute, == or !=, a plain value.
_ATTR = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,99})"
CONSTRAINT_RE = re.compile(
    r"^(?:node\.(?:id|hostname|role|platform\.os|platform\.arch|labels\." + _ATTR + r")"
    r"|engine\.labels\." + _ATTR + r") *(?:==|!=) *[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}\Z"
)
#: A mount's host path or target: absolute, of plain segments (``{username}`` allowed).
_SEGMENT = r"(?:[A-Za-z0-9._@+=-]|\{username\})+"
_MOUNT_PATH = re.compile(rf"^/(?:{_SEGMENT}(?:/{_SEGMENT})*)?/?\Z")
_VOLUME_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]|\{username\}){0,127}\Z")
#: Host paths that make a kernel root on the engine's machine: an engine's socket or state, the
#: kernel's devices and the kernel's view of the machine. Neither they nor a directory holding
#: them may be mounted.
ROOT_PATHS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/proc",
    "/sys",
    "/dev",
)


# -- the value parsers (pure; each raises SpecError naming its flag) ------------------------------


def engine_address(text: str) -> str:
    """``unix:///path/docker.sock`` or ``tcp://host:port``, as the provisioner's
    :func:`~kernelfleet.transport.docker_api.parse_host` reads it."""
    from kernelfleet.transport.docker_api import parse_host

    value = text.strip()
    match = DOCKER_HOST_RE.match(value)
    path, port = (match.group("path"), match.group("port")) if match else ("", "")
    ok = match is not None and (".." not in path.split("/") if path else 0 < int(port) < 65536)
    try:
        parse_host(value)
    except ValueError:
        ok = False
    if not ok:
        raise SpecError(
            f"--docker-host {text[:100]!r} is not an engine address: use "
            "unix:///path/docker.sock or tcp://host:port (ssh:// is not supported)"
        )
    return value


def network_name(text: str) -> str:
    """A network kernels can join: a Docker network name (the provisioner's
    :func:`~kernelfleet.provisioners.docker_spec.check_network`), starting with a letter or
    digit; not ``host`` or ``none``."""
    from kernelfleet.provisioners.docker_spec import check_network

    name = text.strip()
    why = check_network(name)
    if why is None and not NETWORK_RE.match(name):
        why = f"network {name[:40]!r} is not a Docker network name"
    if why is not None:
        raise SpecError(
            f"--{why}: use a network's name (letters, digits and _.-, starting with a letter "
            "or digit), e.g. bridge or kernels"
        )
    return name


def placement_constraint(text: str) -> str:
    """A Swarm placement constraint (``node.role==worker``, ``node.labels.gpu!=no``), as the
    provisioner's :func:`~kernelfleet.provisioners.docker_spec.check_constraints` accepts it
    and of plain characters."""
    from kernelfleet.provisioners.docker_spec import check_constraints

    value = text.strip()
    if not CONSTRAINT_RE.match(value) or check_constraints([value]) is not None:
        raise SpecError(
            f"--placement {text[:100]!r} is not a placement constraint: use ATTRIBUTE==VALUE "
            "or ATTRIBUTE!=VALUE with node.id, node.hostname, node.role, node.platform.os, "
            "node.platform.arch, node.labels.NAME or engine.labels.NAME, e.g. node.role==worker"
        )
    return value


def tls_file(text: str, flag: str) -> str:
    """A PEM file on the gateway's machine: an absolute path of plain characters, no '..'."""
    from kernelfleet.provisioners.k8s_pod import SAFE_PATH

    if not SAFE_PATH.match(text) or ".." in text.split("/") or len(text) > 1024:
        raise SpecError(
            f"{flag} must be an absolute path of letters, digits and ._@+=- (no '..') on the "
            f"gateway's machine, not {text[:200]!r}"
        )
    return text


def _amount(text: str, what: str, example: str) -> tuple[str, float]:
    from kernelfleet.provisioners.k8s_pod import quantity

    value = text.strip()
    try:
        amount = quantity(value)
    except ValueError:
        raise SpecError(f"{what} {text[:40]!r} is not an amount: give e.g. {example}") from None
    if not math.isfinite(amount):
        raise SpecError(f"{what} {text[:40]!r} is too large")
    return value, amount


def cpu_limit(text: str, max_cpus: float = DEFAULT_MAX_CPUS) -> str:
    """``--cpus``: a kernel's CPU limit (``0.5``, ``2``, ``500m``) from 0.01 to *max_cpus*
    (the bounds the provisioner applies to a request, the default one too)."""
    value, amount = _amount(text, "--cpus", "0.5, 2 or 500m")
    if not MIN_CPUS <= amount <= max_cpus:
        raise SpecError(
            f"--cpus {value!r} is out of range: from {MIN_CPUS:g} to {max_cpus:g} (--max-cpus)"
        )
    return value


def memory_limit(text: str, what: str = "--memory", max_memory: str | None = None) -> str:
    """A memory amount (``512Mi``, ``2Gi``) of at least 6Mi (Docker's least) and at most
    *max_memory* (for ``--memory``) or 1024Ti (for ``--max-memory``)."""
    value, amount = _amount(text, what, "512Mi or 2Gi")
    if amount < MIN_MEMORY:
        raise SpecError(
            f"{what} {value!r} is less than 6Mi, Docker's least (memory is in bytes: give e.g. 2Gi)"
        )
    if max_memory is None:
        if amount > MAX_MEMORY:
            raise SpecError(f"{what} {value!r} is more than 1024Ti")
    elif amount > _amount(max_memory, "--max-memory", "16Gi")[1]:
        raise SpecError(f"{what} {value!r} is more than --max-memory {max_memory}")
    return value


def _mount_path(text: str, what: str, raw: str) -> str:
    if len(text) > 255 or not _MOUNT_PATH.match(text) or {".", ".."} & set(text.split("/")):
        raise SpecError(
            f"--volume {raw[:100]!r}: the {what} must be an absolute path of letters, digits "
            "and ._@+=- (and {username}), without '.' or '..' components"
        )
    return text.rstrip("/") or "/"


def gives_root(source: str, engine_socket: str = "") -> bool:
    """Whether host path *source* mounted into a kernel makes it root on the engine's machine:
    ``/``, a socket, one of :data:`ROOT_PATHS` or the engine's socket, a path under one or a
    directory holding one. ``{username}`` stands for any name: the part before it decides."""
    templated = "{username}" in source
    fixed = source.partition("{username}")[0]
    for path in (*ROOT_PATHS, engine_socket):
        if path and (
            source == path
            or fixed.startswith(path + "/")
            or path.startswith(fixed if templated else fixed.rstrip("/") + "/")
        ):
            return True
    return source.endswith(".sock")


def mount_entry(text: str, engine_socket: str = "") -> dict[str, Any]:
    """``--volume SOURCE:TARGET[:ro|:rw]`` (``docker run -v``'s form) → the provisioner's
    ``volumes`` entry. SOURCE is an absolute host path or a named volume; ``{username}`` in
    either becomes the requesting user's name. Paths that make a kernel root on the engine's
    machine are refused (:func:`gives_root`)."""
    from kernelfleet.provisioners.docker_spec import parse_mounts

    raw = text.strip()
    parts = raw.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise SpecError(
            f"--volume {text[:100]!r} is not SOURCE:TARGET[:ro], e.g. "
            "/srv/home/{username}:/home/{username} or data:/data:ro"
        )
    source, target = parts[0], parts[1]
    if source.startswith("/"):
        source = _mount_path(source, "host path", raw)
        if gives_root(source, engine_socket.removeprefix("unix://")):
            raise SpecError(
                f"--volume {raw[:100]!r}: {source} may not be mounted into kernels (it is or holds "
                "an engine's socket or state, devices or /: root on the engine's machine)"
            )
    elif not _VOLUME_NAME.match(source):
        raise SpecError(
            f"--volume {raw[:100]!r}: the source must be an absolute host path or a volume "
            "name (letters, digits and _.-, starting with a letter or digit)"
        )
    target = _mount_path(target, "target", raw)
    if target == "/":
        raise SpecError(f"--volume {raw[:100]!r}: the target may not be /")
    entry = {"source": source, "target": target, "read_only": parts[2:] == ["ro"]}
    try:
        parse_mounts([entry])
    except ValueError as exc:
        raise SpecError(f"--volume {raw[:100]!r}: {exc}") from None
    return entry


def mount_entries(texts: Sequence[str], engine_socket: str = "") -> list[dict[str, Any]]:
    """Each ``--volume``, parsed; a target given twice is refused (Docker refuses it)."""
    out = [mount_entry(t, engine_socket) for t in texts]
    targets = [v["target"] for v in out]
    for target in targets:
        if targets.count(target) > 1:
            raise SpecError(f"--volume: target {target} is given twice")
    return out


def _count(value: int, flag: str, low: int, high: int, unit: str) -> int:
    if not low <= value <= high:
        raise SpecError(f"{flag} {value} is out of range: from {low} to {high} {unit}")
    return value


class DockerKind(SpecKind):
    kind = "docker"
    provisioner_name = "kernelfleet-docker"
    where = "in Docker"
    description = (
        "Install a kernelspec whose kernels run as Docker containers or Swarm services "
        "(kernelfleet-docker)."
    )
    examples = dedent("""
        kernelfleet spec install docker --image=kernelfleet.test/kernel-python:0.1.0 \\
            --docker-host=unix:///run/docker.sock --cpus=1 --memory=2Gi --pids=512
        kernelfleet spec install docker --image=reg:5000/kernel-r:4.3 --language=r \\
            --docker-host=tcp://10.0.0.5:2376 --tls-ca=/etc/kf/ca.pem \\
            --tls-cert=/etc/kf/cert.pem --tls-key=/etc/kf/key.pem
        kernelfleet spec install docker --image=reg:5000/kernel-python:1.0 --swarm \\
            --network=kernels --placement=node.role==worker --impersonation \\
            --user-ids alice=2001:2001 --volume=/srv/home/{username}:/home/{username}
        """)
    hosts_when_none = "(Docker)"

    image = option(
        Unicode(
            "",
            help="The kernel image, with an explicit tag or digest, e.g. "
            "kernelfleet.test/kernel-python:0.1.0 ('kernelfleet image build'). It must be on "
            "the engine (and on every Swarm node): kernelfleet never pulls. Required.",
        ),
        "KF_SPEC_DOCKER_IMAGE",
    )
    allowed_images = option(
        TList(
            Unicode(),
            help="More images a start request may choose with KERNEL_IMAGE (repeatable or "
            "comma list). Default: none.",
        ),
        "KF_SPEC_DOCKER_ALLOWED_IMAGES",
    )
    docker_host = option(
        Unicode(
            "",
            help="The Docker engine: unix:///path/docker.sock or tcp://host:port. Default: "
            "the gateway's KF_DOCKER_HOST, else $DOCKER_HOST, else unix:///var/run/docker.sock.",
        ),
        "KF_SPEC_DOCKER_HOST",
    )
    tls_ca = option(
        Unicode("", help="A tcp:// engine's CA certificates (PEM file). Default: none (no TLS)."),
        "KF_SPEC_DOCKER_TLS_CA",
    )
    tls_cert = option(
        Unicode("", help="The gateway's client certificate (PEM file) for a tcp:// engine run "
                "with --tlsverify. Default: none."),
        "KF_SPEC_DOCKER_TLS_CERT",
    )  # fmt: skip
    tls_key = option(
        Unicode("", help="The key of --tls-cert (PEM file). Default: none (in --tls-cert)."),
        "KF_SPEC_DOCKER_TLS_KEY",
    )
    swarm = option(
        Bool(False, help="Run each kernel as a Swarm service (one replica, never restarted); "
             "--docker-host must be a Swarm manager. Default: off (a plain container)."),
        "KF_SPEC_DOCKER_SWARM",
    )  # fmt: skip
    placement = option(
        TList(Unicode(), help="With --swarm: placement constraints of every kernel's service "
              "(repeatable or comma list), e.g. node.role==worker. Default: none."),
        "KF_SPEC_DOCKER_PLACEMENT",
    )  # fmt: skip
    network = option(
        Unicode(DEFAULT_NETWORK, help="The Docker network kernels join; the gateway must reach "
                "its addresses (with --swarm, an attachable overlay). Default: bridge."),
        "KF_SPEC_DOCKER_NETWORK",
    )  # fmt: skip
    cpus = option(
        Unicode("", help="CPU limit of a kernel, in CPUs, e.g. 1, 0.5 or 500m. Default: none "
                "(a request's KERNEL_CPUS, else no limit)."),
        "KF_SPEC_DOCKER_CPUS",
    )  # fmt: skip
    memory = option(
        Unicode("", help="Memory limit of a kernel (swap included), e.g. 512Mi or 2Gi. "
                "Default: none (a request's KERNEL_MEMORY, else no limit)."),
        "KF_SPEC_DOCKER_MEMORY",
    )  # fmt: skip
    pids = option(
        Int(0, help="Most processes and threads of a kernel (16 or more). Default: 0 (a "
            "request's KERNEL_PIDS, else no limit)."),
        "KF_SPEC_DOCKER_PIDS",
    )  # fmt: skip
    max_cpus = option(
        Float(DEFAULT_MAX_CPUS, help="Most CPUs a request may ask (KERNEL_CPUS). Default: 8."),
        "KF_SPEC_DOCKER_MAX_CPUS",
    )
    max_memory = option(
        Unicode(DEFAULT_MAX_MEMORY, help="Most memory a request may ask (KERNEL_MEMORY). "
                "Default: 16Gi."),
        "KF_SPEC_DOCKER_MAX_MEMORY",
    )  # fmt: skip
    max_pids = option(
        Int(DEFAULT_MAX_PIDS, help="Most processes a request may ask (KERNEL_PIDS). "
            "Default: 4096."),
        "KF_SPEC_DOCKER_MAX_PIDS",
    )  # fmt: skip
    kernel_uid = option(
        Int(DEFAULT_UID, help="The uid kernels run as without impersonation. Default: 1000."),
        "KF_SPEC_DOCKER_KERNEL_UID",
    )
    kernel_gid = option(
        Int(DEFAULT_UID, help="The gid kernels run as without impersonation. Default: 1000."),
        "KF_SPEC_DOCKER_KERNEL_GID",
    )
    impersonation = option(
        Bool(False, help="Run each kernel as the requesting user's (KERNEL_USERNAME) uid and "
             "gid: --user-ids, else that user's account on the gateway's machine. Default: "
             "off (--kernel-uid)."),
        "KF_SPEC_DOCKER_IMPERSONATION",
    )  # fmt: skip
    user_ids = option(
        Dict(
            value_trait=Unicode(),
            key_trait=Unicode(),
            help="With --impersonation: user=uid[:gid] (repeatable), e.g. alice=2001:2001; as "
            "a variable, a JSON object. Default: none (the gateway's KF_DOCKER_USER_IDS).",
        ),
        "KF_SPEC_DOCKER_USER_IDS",
    )
    user_ids_only = option(
        Bool(False, help="With --impersonation: refuse the users --user-ids does not name "
             "(instead of using their account on the gateway's machine). Default: off."),
        "KF_SPEC_DOCKER_USER_IDS_ONLY",
    )  # fmt: skip
    volume = option(
        TList(Unicode(), help="Mount into every kernel, SOURCE:TARGET[:ro] (repeatable or "
              "comma list), e.g. /srv/home/{username}:/home/{username}; SOURCE is an absolute "
              "host path or a volume name, {username} the user's name. Default: none."),
        "KF_SPEC_DOCKER_VOLUME",
    )  # fmt: skip
    stop_grace = option(
        Int(DEFAULT_STOP_GRACE, help="Seconds a kernel gets between SIGTERM and SIGKILL "
            "when stopped. Default: 5."),
        "KF_SPEC_DOCKER_STOP_GRACE",
    )  # fmt: skip

    # -- checks -----------------------------------------------------------------------------

    def validate(self, spec: SpecOptions) -> None:
        if spec.uses_spark or spec.toree_jar or spec.extra_spark_opts.strip():
            raise SpecError(
                "Spark and Scala kernels are not supported by 'spec install docker' (its "
                "kernels are plain ipykernel or IRkernel containers): leave out --spark, "
                "--language=scala, --toree-jar and --extra-spark-opts"
            )
        if not self.image.strip():
            raise SpecError(
                "--image is required: the kernel image with an explicit tag, e.g. "
                "--image=kernelfleet.test/kernel-python:0.1.0 ('kernelfleet image build')"
            )
        image_reference(self.image)
        for ref in self.allowed_images:
            image_reference(ref, "--allowed-images:")
        self._check_engine()
        network_name(self.network)
        if self.placement and not self.swarm:
            raise SpecError(
                "--placement applies with --swarm only (a plain container runs on the engine "
                "of --docker-host): add --swarm, or leave --placement out"
            )
        for text in self.placement:
            placement_constraint(text)
        self._check_resources()
        self._check_users()
        mount_entries(self.volume, self.docker_host.strip())
        _count(self.stop_grace, "--stop-grace", 0, MAX_STOP_GRACE, "seconds")

    def _check_engine(self) -> None:
        host = engine_address(self.docker_host) if self.docker_host.strip() else ""
        for flag, path in (("--tls-ca", self.tls_ca), ("--tls-cert", self.tls_cert)):
            if path:
                tls_file(path, flag)
                if not host.startswith("tcp://"):
                    raise SpecError(
                        f"{flag} applies to a tcp:// engine only: add "
                        "--docker-host=tcp://host:port, or leave it out (a unix socket has "
                        "no TLS)"
                    )
        if self.tls_key and not self.tls_cert:
            raise SpecError("--tls-key applies with --tls-cert only: add the client certificate")
        if self.tls_key:
            tls_file(self.tls_key, "--tls-key")

    def _check_resources(self) -> None:
        if not (math.isfinite(self.max_cpus) and MIN_CPUS <= self.max_cpus <= MAX_CPUS):
            raise SpecError(
                f"--max-cpus must be a number of CPUs from {MIN_CPUS:g} to {MAX_CPUS:g}, not "
                f"{self.max_cpus}"
            )
        memory_limit(self.max_memory, "--max-memory")
        _count(self.max_pids, "--max-pids", MIN_PIDS, MAX_PIDS, "processes")
        if self.cpus.strip():
            cpu_limit(self.cpus, self.max_cpus)
        if self.memory.strip():
            memory_limit(self.memory, "--memory", self.max_memory)
        if self.pids:
            _count(self.pids, "--pids", MIN_PIDS, self.max_pids, "processes (--max-pids)")

    def _check_users(self) -> None:
        for flag, value in (("--kernel-uid", self.kernel_uid), ("--kernel-gid", self.kernel_gid)):
            if not 0 < value <= MAX_ID:
                raise SpecError(
                    f"{flag} {value} is out of range: from 1 to {MAX_ID} (kernels never run "
                    "as root)"
                )
        for flag, given in (
            ("--user-ids", bool(self.user_ids)),
            ("--user-ids-only", self.user_ids_only),
        ):
            if given and not self.impersonation:
                raise SpecError(
                    f"{flag} applies with --impersonation only: add --impersonation, or leave "
                    f"{flag} out (every kernel runs as --kernel-uid)"
                )
        user_id_map(self.user_ids)

    def install_warnings(self, spec: SpecOptions) -> list[str]:
        out = []
        host = self.docker_host.strip()
        if host.startswith("tcp://") and not self.tls_cert:
            out.append(
                f"--docker-host {host} without --tls-cert: whoever reaches that port is root "
                "on the engine's machine. Run the engine with --tlsverify and pass --tls-ca, "
                "--tls-cert and --tls-key (with --replace)."
            )
        if self.impersonation and self.user_ids_only and not self.user_ids:
            out.append(
                "--user-ids-only without --user-ids: every user is refused unless the gateway "
                "maps users to uids itself (KF_DOCKER_USER_IDS). Pass --user-ids "
                "alice=2001:2001 (with --replace)."
            )
        if self.swarm and self.network.strip() == DEFAULT_NETWORK:
            out.append(
                "--swarm on the bridge network: each kernel joins the bridge of the node Swarm "
                "places it on, which the gateway reaches on its own machine only. For a swarm "
                "of several nodes pass --network=NAME of an attachable overlay network (with "
                "--replace)."
            )
        return out

    # -- kernel.json ------------------------------------------------------------------------

    def provisioner_config(self, spec: SpecOptions) -> dict[str, Any]:
        cfg: dict[str, Any] = {"image": image_reference(self.image)}
        if self.allowed_images:
            cfg["allowed_images"] = [image_reference(r) for r in self.allowed_images]
        if self.docker_host.strip():
            cfg["docker_host"] = engine_address(self.docker_host)
        for name in ("tls_ca", "tls_cert", "tls_key"):
            if getattr(self, name):
                cfg[name] = getattr(self, name)
        if self.swarm:
            cfg["swarm"] = True
        if self.placement:
            cfg["placement"] = [placement_constraint(c) for c in self.placement]
        if self.network.strip() != DEFAULT_NETWORK:
            cfg["network"] = network_name(self.network)
        if self.impersonation:
            cfg["impersonation_enabled"] = True
        if self.user_ids:
            cfg["user_ids"] = user_id_map(self.user_ids)
        if self.user_ids_only:
            cfg["host_users"] = False
        for name in ("cpus", "memory"):
            if getattr(self, name).strip():
                cfg[name] = getattr(self, name).strip()
        if self.max_cpus != DEFAULT_MAX_CPUS:
            cpus = self.max_cpus
            cfg["max_cpus"] = int(cpus) if float(cpus).is_integer() else cpus
        if self.max_memory.strip() != DEFAULT_MAX_MEMORY:
            cfg["max_memory"] = self.max_memory.strip()
        if self.volume:
            cfg["volumes"] = mount_entries(self.volume, self.docker_host.strip())
        for name, default in _INT_DEFAULTS:
            if getattr(self, name) != default:
                cfg[name] = getattr(self, name)
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

    @classmethod
    def next_steps(cls, name: str) -> str:
        return (
            "Next: load the image into the engine if it is not there (kernelfleet image "
            "import ARCHIVE --docker-host=HOST: kernelfleet never pulls), then "
            f"'kernelfleet hosts check --spec {name}' checks the engine, its API version, the "
            "image, the network and, with --swarm, the swarm."
        )


# -- the provisioner's settings, for `hosts check` -------------------------------------------------


def provisioner_settings(config: Any, spec_config: dict[str, Any] | None = None) -> Any:
    """The Docker provisioner's settings (app config < ``KF_DOCKER_*`` environment <
    kernelspec config) as a kernel of the spec would get them: an unstarted provisioner (the
    class imported only now) whose ``endpoint()``, ``image``, ``network``, ``swarm``, … say
    where and how it starts kernels. Kernelspec entries it does not know are ignored."""
    from kernelfleet.provisioners.docker import DockerProvisioner

    traits = DockerProvisioner.class_traits()
    known = {k: v for k, v in (spec_config or {}).items() if k in traits}
    return DockerProvisioner(config=config, **known)
