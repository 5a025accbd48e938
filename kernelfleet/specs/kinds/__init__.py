"""The spec kinds ``kernelfleet spec install`` offers, one subcommand each (how to add one:
:mod:`kernelfleet.specs.kinds.base`).

:data:`KINDS` is the registry, by kind name, in the order ``spec install --help`` lists them;
it is also the test seam (``monkeypatch.setitem(KINDS, "toy", ToyKind)``).
"""

from __future__ import annotations

from dataclasses import replace

from kernelfleet.specs.kinds import docker, k8s, local, ssh, yarn
from kernelfleet.specs.kinds.base import KindDefault, SpecKind, flag_of
from kernelfleet.specs.options import SpecError, SpecOptions

KINDS: dict[str, type[SpecKind]] = {
    kind.kind: kind
    for kind in (
        ssh.SSHKind,
        local.LocalKind,
        yarn.YarnKind,
        k8s.K8sKind,
        docker.DockerKind,
    )
}


def kind_class(name: str) -> type[SpecKind]:
    """The kind called *name*; :class:`SpecError` if there is none."""
    found = KINDS.get(name)
    if found is None:
        raise SpecError(f"unknown spec kind {name!r} (use one of: {', '.join(KINDS)})")
    return found


def by_provisioner(provisioner_name: str) -> type[SpecKind] | None:
    """The kind whose kernelspecs name *provisioner_name*, if it is one of ours."""
    for kind in KINDS.values():
        if kind.provisioner_name == provisioner_name:
            return kind
    return None


def kind_for(spec: SpecOptions) -> SpecKind:
    """The kind of *spec* with its option values; :class:`SpecError` for an unknown kind or
    an option another kind owns given a value (``--remote-hosts only applies to 'spec install
    ssh'``). An empty one (``remote_hosts=()``) is not given, and is dropped."""
    cls = kind_class(spec.kind)
    own = cls.option_traits()
    values = {}
    for name, value in spec.kind_options.items():
        owners = [k.kind for k in KINDS.values() if name not in own and name in k.option_traits()]
        if not owners:
            values[name] = value  # its own, or no kind's (from_options says so)
        elif value:
            commands = " or ".join(f"'spec install {owner}'" for owner in owners)
            raise SpecError(f"{flag_of(name)} only applies to {commands}")
    return cls.from_options(replace(spec, kind_options=values))


__all__ = [
    "KINDS",
    "KindDefault",
    "SpecKind",
    "by_provisioner",
    "flag_of",
    "kind_class",
    "kind_for",
]
