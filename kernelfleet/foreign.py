"""Kernelspecs written for Enterprise Gateway or Gateway Provisioners, recognised.

An Enterprise Gateway (EG) kernelspec names a process proxy in ``metadata.process_proxy``
(``class_name``, ``config``) and runs EG's launchers (``launch_ipykernel.py``, ``run.sh`` with
``--RemoteProcessProxy.*`` arguments and the ``{response_address}`` / ``{public_key}``
placeholders); a Gateway Provisioners (GP) kernelspec names one of GP's provisioners in
``metadata.kernel_provisioner.provisioner_name`` and runs GP's launchers. Neither starts under
kernelfleet: the launchers call back to a response address no kernelfleet provisioner opens.
:func:`foreign_of` says whether a spec is one of them and which backend it maps to; the
gateway refuses to start one with :func:`not_migrated` (the fix: ``kernelfleet spec
migrate NAME``), and :mod:`kernelfleet.specs.migrate` converts it.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kernelfleet.errors import PublicError

EG = "Enterprise Gateway"
GP = "Gateway Provisioners"

#: EG's process-proxy classes (the last part of ``class_name``) → the kernelfleet spec kind
#: that replaces them, or None when there is none.
EG_CLASSES: Mapping[str, str | None] = {
    "LocalProcessProxy": "local",
    "DistributedProcessProxy": "ssh",
    "YarnClusterProcessProxy": "yarn",
    "KubernetesProcessProxy": "k8s",
    "DockerProcessProxy": "docker",
    "DockerSwarmProcessProxy": "docker",
    "ConductorClusterProcessProxy": None,
    "SparkOperatorProcessProxy": None,
    "CustomResourceProcessProxy": None,
}

#: GP's provisioner names (``jupyter_client.kernel_provisioners`` entry points) → kind.
GP_PROVISIONERS: Mapping[str, str | None] = {
    "distributed-provisioner": "ssh",
    "yarn-provisioner": "yarn",
    "kubernetes-provisioner": "k8s",
    "docker-provisioner": "docker",
    "docker-swarm-provisioner": "docker",
    "spark-operator-provisioner": None,
    "custom-resource-provisioner": None,
}

#: The two classes / provisioners that run kernels as Swarm services.
SWARM = frozenset({"DockerSwarmProcessProxy", "docker-swarm-provisioner"})

#: Launcher scripts of EG and GP, as their kernelspecs' argv name them.
LAUNCHER_FILES = frozenset(
    {
        "launch_ipykernel.py",
        "launch_IRkernel.R",
        "launch_kubernetes.py",
        "launch_docker.py",
        "launch_custom_resource.py",
        "server_listener.py",
    }
)

#: argv placeholders only EG's and GP's provisioners fill in (jupyter_client knows neither).
PLACEHOLDERS = ("{response_address}", "{public_key}")

_LAUNCHER_RE = re.compile(r"(?:^|/)(" + "|".join(re.escape(n) for n in LAUNCHER_FILES) + r")$")


@dataclass(frozen=True)
class Foreign:
    """What makes a kernelspec an EG or GP one."""

    #: :data:`EG` or :data:`GP`.
    origin: str
    #: The process-proxy class's short name (``DistributedProcessProxy``) or GP's provisioner
    #: name (``distributed-provisioner``); ``""`` for an EG launcher without a stanza.
    name: str
    #: The stanza's name as written (EG's dotted class name).
    written: str
    #: The kernelfleet kind it maps to (``ssh``, ``yarn``, ``k8s``, ``docker``, ``local``),
    #: or None when none does.
    kind: str | None
    #: The stanza's ``config`` (a copy; {} when absent or not an object).
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``Enterprise Gateway DistributedProcessProxy``."""
        return f"{self.origin} {self.name}".strip()

    @property
    def swarm(self) -> bool:
        return self.name in SWARM


def _stanza(meta: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = meta.get(key)
    return value if isinstance(value, Mapping) else None


def _config(stanza: Mapping[str, Any]) -> dict[str, Any]:
    cfg = stanza.get("config")
    return dict(cfg) if isinstance(cfg, Mapping) else {}


def runs_their_launcher(argv: Any) -> bool:
    """Whether kernel.json *argv* runs an EG/GP launcher or uses their placeholders."""
    if not isinstance(argv, list):
        return False
    words = [w for w in argv if isinstance(w, str)]
    if any(_LAUNCHER_RE.search(w) for w in words):
        return True
    return any(p in w for w in words for p in PLACEHOLDERS)


def foreign_of(spec: Mapping[str, Any]) -> Foreign | None:
    """The EG/GP origin of kernel.json dict *spec*, or None for a spec kernelfleet can run.

    A spec naming a GP provisioner, or an EG process proxy other than the local one, is
    foreign; so is one whose argv runs an EG/GP launcher whatever its stanza says (an EG
    ``LocalProcessProxy`` spec with a plain ``ipykernel_launcher`` argv is not: it runs as
    is). A spec that names a kernelfleet provisioner is never foreign.
    """
    meta = spec.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    prov = _stanza(meta, "kernel_provisioner")
    prov_name = prov.get("provisioner_name") if prov is not None else None
    if isinstance(prov_name, str) and prov_name.startswith("kernelfleet-"):
        return None
    if prov is not None and isinstance(prov_name, str) and prov_name in GP_PROVISIONERS:
        return Foreign(GP, prov_name, prov_name, GP_PROVISIONERS[prov_name], _config(prov))
    proxy = _stanza(meta, "process_proxy")
    theirs = runs_their_launcher(spec.get("argv"))
    if proxy is not None:
        written = str(proxy.get("class_name") or "LocalProcessProxy")
        short = written.rsplit(".", 1)[-1]
        kind = EG_CLASSES.get(short)
        if short == "LocalProcessProxy" and not theirs:
            return None
        return Foreign(EG, short, written, kind, _config(proxy))
    if theirs:
        origin = GP if isinstance(prov_name, str) else EG
        return Foreign(origin, "", "", None, {})
    return None


class NotMigrated(PublicError):
    """A kernelspec written for EG or GP was asked to start."""

    status = 500
    reason = "Kernelspec Not Migrated"


def not_migrated(kernel_name: str, foreign: Foreign) -> NotMigrated:
    """The error a start of EG/GP kernelspec *kernel_name* gets: the fix first."""
    what = f" ({foreign.name})" if foreign.name else ""
    article = "an" if foreign.origin[:1] in "AEIOU" else "a"
    return NotMigrated(
        f"Kernelspec '{kernel_name}' needs 'kernelfleet spec migrate {kernel_name}' (an admin "
        f"runs it on the gateway): it is {article} {foreign.origin} spec{what}, whose "
        "launchers do not run under kernelfleet."
    )
