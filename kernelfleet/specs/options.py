"""What ``kernelfleet spec install`` was asked for: :class:`SpecOptions`, the values before any
check, shared by every spec kind.

The options every kind shares (name, language, interpreter, users, Spark, …) are fields; the
options of one kind (``remote_hosts`` of ``ssh``, …) travel in :attr:`SpecOptions.kind_options`
by trait name and are read by that kind (:mod:`kernelfleet.specs.kinds`). For brevity a kind's
option may also be passed as a keyword: ``SpecOptions(remote_hosts=("h1",))`` is
``SpecOptions(kind_options={"remote_hosts": ("h1",)})``. Nothing is checked here; the builders
check everything (:func:`kernelfleet.specs.builders.validate`).

A few shared options have a default that depends on the kind (:data:`KIND_DEFAULTED`: a YARN
kernel needs a longer launch timeout and an eager Spark session); they are None here until
:meth:`CommonOptions.with_defaults` fills them in with the kind's defaults
(:attr:`~kernelfleet.specs.kinds.SpecKind.common_defaults`), else the shared ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Self

from kernelfleet.errors import BadRequest

LANGUAGES = ("python", "r", "scala")
INIT_MODES = ("lazy", "eager", "none")

DEFAULT_KERNEL_CLASS = "ipykernel.ipkernel.IPythonKernel"
DEFAULT_LAUNCH_TIMEOUT = 60.0
DEFAULT_SPARK_MASTER = "yarn"
DEFAULT_SPARK_HOME = "/opt/spark"
DEFAULT_INIT_MODE = "lazy"

#: The shared options whose default a kind may change, with the default of every other kind:
#: None in :class:`SpecOptions` stands for "the kind's default".
KIND_DEFAULTED: Mapping[str, Any] = MappingProxyType(
    {
        "launch_timeout": DEFAULT_LAUNCH_TIMEOUT,
        "spark_home": DEFAULT_SPARK_HOME,
        "spark_init_mode": DEFAULT_INIT_MODE,
    }
)


class SpecError(BadRequest):
    """An install option has a value that cannot make a working kernelspec."""


@dataclass(frozen=True)
class CommonOptions:
    """The install options of every spec kind (CLI values, not yet validated)."""

    kind: str = "ssh"
    kernel_name: str = ""
    display_name: str = ""
    language: str = "python"
    python: str = "python3"
    authorized_users: tuple[str, ...] = ()
    unauthorized_users: tuple[str, ...] = ()
    #: Groups (as the identity authority reports them, e.g. JupyterHub's) whose members may
    #: start the spec; with authorized_users, either admits a user.
    authorized_groups: tuple[str, ...] = ()
    launch_timeout: float | None = None  # the kind's default (KIND_DEFAULTED)
    ipykernel_subclass_name: str = DEFAULT_KERNEL_CLASS
    spark: bool = False
    spark_master: str = DEFAULT_SPARK_MASTER
    spark_home: str | None = None  # the kind's default (KIND_DEFAULTED)
    spark_init_mode: str | None = None  # the kind's default (KIND_DEFAULTED)
    extra_spark_opts: str = ""
    toree_jar: str = ""
    #: The kernel environment (``kernelfleet env``) whose interpreter the spec runs, if any.
    env_name: str = ""
    #: More entries of the kernel.json ``env`` (name, value), after the spec's own: what
    #: ``spec migrate`` carries over from the original.
    extra_env: tuple[tuple[str, str], ...] = ()
    #: Where the spec was migrated from (``spec migrate``): recorded in
    #: ``metadata.kernelfleet.migrated_from``.
    migrated_from: tuple[tuple[str, str], ...] = ()

    @property
    def lang(self) -> str:
        return self.language.strip().lower()

    @property
    def uses_spark(self) -> bool:
        """Scala kernels (Apache Toree) always run through spark-submit."""
        return self.spark or self.lang == "scala"

    @property
    def curve_capable(self) -> bool:
        """Whether the kernel uses the CurveZMQ keys of its connection file: ipykernel does;
        IRkernel and Apache Toree ignore them (their traffic is signed, not encrypted)."""
        return self.lang == "python"

    @property
    def name(self) -> str:
        """The kernel name: as given, else ``<kind>_<language>[_spark]`` (GP's names)."""
        if self.kernel_name:
            return self.kernel_name
        suffix = "_spark" if self.spark and self.lang != "scala" else ""
        return f"{self.kind}_{self.lang}{suffix}"

    def with_defaults(self, defaults: Mapping[str, Any]) -> Self:
        """These options with each unset (None) option of :data:`KIND_DEFAULTED` set to its
        value in *defaults* (a kind's), else to the shared default."""
        unset = {
            name: defaults.get(name, shared)
            for name, shared in KIND_DEFAULTED.items()
            if getattr(self, name) is None
        }
        return replace(self, **unset) if unset else self


_COMMON = frozenset(f.name for f in fields(CommonOptions))


@dataclass(frozen=True, init=False)
class SpecOptions(CommonOptions):
    """:class:`CommonOptions` plus the options of the spec's kind, by trait name."""

    kind_options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __init__(self, *, kind_options: Mapping[str, Any] | None = None, **values: Any) -> None:
        own = {k: v for k, v in values.items() if k not in _COMMON}
        super().__init__(**{k: v for k, v in values.items() if k in _COMMON})
        merged = MappingProxyType({**(kind_options or {}), **own})
        object.__setattr__(self, "kind_options", merged)
