"""The seam between a provisioner kind and ``kernelfleet spec install``: :class:`SpecKind`.

A spec kind is what differs between ``spec install ssh``, ``spec install local``, ``yarn`` and,
later, ``k8s`` or ``docker``: the provisioner its kernelspecs name, its own install options,
and what it writes into ``metadata.kernel_provisioner.config``. Everything else (argv, display
name, language, env, Spark/R/Scala launchers, run.sh, the resource directory, users, launch
timeout) is built once for every kind by :mod:`kernelfleet.specs.builders`; language and
launcher variants are orthogonal to the kind. A kind whose kernels start differently (YARN
cluster mode: no ``run.sh``, the driver runs the kernel) overrides the shape hooks below
(:meth:`~SpecKind.build_argv`, :meth:`~SpecKind.build_env`, :meth:`~SpecKind.interrupt_mode`,
:meth:`~SpecKind.writes_run_sh`, :meth:`~SpecKind.launchers`, :meth:`~SpecKind.spec_files`);
their defaults are the shared shapes. A kind is pure: no I/O, and no provisioner *class*
imported to build a spec (a provisioner's pure value parsers may be, when a spec of that kind
is built, so that install and launch accept the same values).

To add a kind (``kernelfleet spec install yarn``):

1. Write ``kernelfleet/specs/kinds/yarn.py`` with ``class YarnKind(SpecKind)`` setting
   :attr:`~SpecKind.kind` (``"yarn"``: the subcommand, and the prefix of default kernel
   names), :attr:`~SpecKind.provisioner_name`, :attr:`~SpecKind.where` and
   :attr:`~SpecKind.description` (and :attr:`~SpecKind.examples` if you like).
2. Declare its install options as traits with :func:`kernelfleet.config.option`, e.g.
   ``yarn_endpoint = option(Unicode("", help="…"), "KF_SPEC_YARN_ENDPOINT")``: each becomes
   ``--yarn-endpoint`` (a ``Bool`` becomes a flag), ``--YarnInstallApp.yarn_endpoint`` and its
   environment variable, with the help given. Defaults are static values (``--help`` shows
   them); a list option also takes comma lists.
3. Override :meth:`~SpecKind.validate` (raise :class:`SpecError` naming the ``--flag``) and
   :meth:`~SpecKind.provisioner_config` (only non-default settings), and unit-test both. If
   the kind's kernels need another launch timeout, Spark home or Spark init mode by default,
   say so in :attr:`~SpecKind.common_defaults`; if all its kernels are Spark kernels, set
   :attr:`~SpecKind.implies_spark`.
4. Register it: in ``kernelfleet/specs/kinds/__init__.py``, import ``yarn`` beside ``local``
   and ``ssh`` and add ``yarn.YarnKind`` to :data:`~kernelfleet.specs.kinds.KINDS`. The
   subcommand, its ``--help`` and its config section (``c.YarnInstallApp``) follow from the
   class; nothing in ``kernelfleet/cli`` or the builders changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from traitlets import HasTraits, TraitError, TraitType

from kernelfleet.specs.options import SpecError, SpecOptions


def flag_of(option_name: str) -> str:
    """The command-line spelling of an option: ``remote_hosts`` → ``--remote-hosts``."""
    return "--" + option_name.replace("_", "-")


@dataclass(frozen=True)
class KindDefault:
    """A kind's own default for one of the shared options of
    :data:`~kernelfleet.specs.options.KIND_DEFAULTED`, and the help its subcommand shows."""

    value: Any
    help: str


class SpecKind(HasTraits):
    """One provisioner kind as ``kernelfleet spec install`` sees it.

    The class declares the kind (class attributes) and its install options (traits declared
    with :func:`kernelfleet.config.option`); an instance holds the option values of one
    install, made by :meth:`from_options`. Builders call :meth:`validate`, then
    :meth:`provisioner_config`, on that instance.
    """

    #: ``kernelfleet spec install <kind>``; also the prefix of default kernel names
    #: (``ssh_python``) and ``metadata.kernelfleet.kind`` in the kernel.json.
    kind: ClassVar[str]
    #: Written to ``metadata.kernel_provisioner.provisioner_name``: a
    #: ``jupyter_client.kernel_provisioners`` entry point.
    provisioner_name: ClassVar[str]
    #: Where kernels run, as the default display name says it: ``"Python on SSH hosts"``.
    where: ClassVar[str]
    #: One line for ``kernelfleet spec install --help`` and the subcommand's own help.
    description: ClassVar[str]
    #: Example command lines for the subcommand's ``--help``.
    examples: ClassVar[str] = ""
    #: What ``kernelfleet spec list`` shows for a spec of this kind that names no hosts.
    hosts_when_none: ClassVar[str] = "-"
    #: Defaults of shared options that differ for this kind, by option name (only those of
    #: :data:`~kernelfleet.specs.options.KIND_DEFAULTED`): ``spec install <kind> --help``
    #: shows them, and a :class:`SpecOptions` that leaves the option unset gets them.
    common_defaults: ClassVar[Mapping[str, KindDefault]] = {}
    #: Every kernelspec of this kind is a Spark kernel, ``--spark`` or not (the default
    #: kernel name gets no ``_spark`` suffix for it).
    implies_spark: ClassVar[bool] = False

    @classmethod
    def option_traits(cls) -> dict[str, TraitType[Any, Any]]:
        """The kind's own install options, by trait name, in the order they are declared (the
        order ``--help`` lists them in)."""
        traits = cls.class_traits(config=True)
        declared = [name for klass in reversed(cls.__mro__) for name in vars(klass)]
        return {name: traits[name] for name in dict.fromkeys(declared) if name in traits}

    @classmethod
    def command_name(cls) -> str:
        """The class name of the kind's install command, also its config section:
        ``SSHKind`` → ``SSHInstallApp`` (``c.SSHInstallApp.remote_hosts = [...]``)."""
        return cls.__name__.removesuffix("Kind") + "InstallApp"

    @classmethod
    def from_options(cls, spec: SpecOptions) -> SpecKind:
        """The kind with the option values of *spec* (:attr:`SpecOptions.kind_options`).

        Raises :class:`SpecError` for an option of another kind, or a value of the wrong
        type; values are checked further by :meth:`validate`.
        """
        known = cls.option_traits()
        kind = cls()
        for name, value in spec.kind_options.items():
            if name not in known:
                raise SpecError(f"{flag_of(name)} is not an option of 'spec install {cls.kind}'")
            try:
                setattr(kind, name, value)
            except TraitError as exc:
                raise SpecError(f"{flag_of(name)}: {exc}") from None
        return kind

    # -- hooks ----------------------------------------------------------------------------

    def validate(self, spec: SpecOptions) -> None:
        """Raise :class:`SpecError` (or another 400 ``PublicError``) naming the ``--flag``
        of the first own option whose value cannot make a working kernelspec.

        Called by the builders while the common options are checked (after the name,
        language and interpreter), before anything is built; *spec* is there for rules that
        depend on them (the language, Spark), with the kind's defaults filled in
        (:attr:`common_defaults`; ``spark`` on when :attr:`implies_spark`).
        """

    def provisioner_config(self, spec: SpecOptions) -> dict[str, Any]:
        """This kind's entries of ``metadata.kernel_provisioner.config``: the settings that
        differ from its provisioner's defaults, as JSON values. Called after :meth:`validate`.

        The builders add the common entries after these (``authorized_users``,
        ``unauthorized_users``, ``launch_timeout``).
        """
        return {}

    # -- the kernelspec's shape: None (or the default) is the shared one ------------------------
    # Called by the builders after validate(), with the same options (defaults filled in);
    # default_display_name also before, so it must not rely on the kind's own checks.

    @classmethod
    def default_display_name(cls, spec: SpecOptions) -> str | None:
        """The display name when ``--display-name`` is not given, or None for the shared one
        (``Python on SSH hosts``, ``Spark - Python on SSH hosts (yarn)``)."""
        return None

    def build_argv(self, spec: SpecOptions, resource_dir: str) -> list[str] | None:
        """The kernel.json ``argv``, or None for the shared one (``python -m
        ipykernel_launcher``, IRkernel, or ``<resource_dir>/bin/run.sh`` for Spark)."""
        return None

    def build_env(self, spec: SpecOptions) -> dict[str, str] | None:
        """The kernel.json ``env``, or None for the shared one (Spark: ``SPARK_HOME``,
        ``SPARK_OPTS``, the interpreters for run.sh)."""
        return None

    def extra_env(self, spec: SpecOptions) -> dict[str, str]:
        """Entries the kind adds to the shared kernel.json ``env`` (not to its own
        :meth:`build_env`), e.g. ``HADOOP_CONF_DIR`` of an SSH Spark spec on YARN."""
        return {}

    def interrupt_mode(self, spec: SpecOptions) -> str | None:
        """The kernel.json ``interrupt_mode``, or None for the shared rule (``message`` for a
        Spark spec, else ``signal``)."""
        return None

    def writes_run_sh(self, spec: SpecOptions) -> bool:
        """Whether a Spark spec of this kind gets ``bin/run.sh`` (spark-submit in client mode
        on the kernel's host)."""
        return True

    def launchers(self, spec: SpecOptions) -> dict[str, str] | None:
        """kernelfleet's launcher scripts to copy into the spec (relative destination →
        module file of :mod:`kernelfleet.launchers`), or None for those run.sh runs."""
        return None

    def spec_files(self, spec: SpecOptions) -> dict[str, tuple[str, int]]:
        """Files of the kind's own to write into the spec's directory (relative path → (text,
        mode)), e.g. the pod template of ``spec install k8s`` for the admin to edit; or {}."""
        return {}

    def install_warnings(self, spec: SpecOptions) -> list[str]:
        """What may keep kernels of this valid spec from starting, for the install command to
        print as warnings (an option left out that the hosts may provide themselves), or []."""
        return []

    @classmethod
    def next_steps(cls, name: str) -> str:
        """What the admin should do after installing kernelspec *name* (printed by the
        install command), or ``""``."""
        return ""
