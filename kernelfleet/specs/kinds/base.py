"""The seam between a provisioner kind and ``kernelfleet spec install``: :class:`SpecKind`.

A spec kind is what differs between ``spec install ssh``, ``spec install local`` and, later,
``yarn``, ``k8s`` or ``docker``: the provisioner its kernelspecs name, its own install options,
and what it writes into ``metadata.kernel_provisioner.config``. Everything else (argv, display
name, language, env, Spark/R/Scala launchers, run.sh, the resource directory, users, launch
timeout) is built once for every kind by :mod:`kernelfleet.specs.builders`; language and
launcher variants are orthogonal to the kind. A kind is pure: no I/O, no provisioner imported
to build a spec.

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
   :meth:`~SpecKind.provisioner_config` (only non-default settings), and unit-test both.
4. Register it: in ``kernelfleet/specs/kinds/__init__.py``, import ``yarn`` beside ``local``
   and ``ssh`` and add ``yarn.YarnKind`` to :data:`~kernelfleet.specs.kinds.KINDS`. The
   subcommand, its ``--help`` and its config section (``c.YarnInstallApp``) follow from the
   class; nothing in ``kernelfleet/cli`` or the builders changes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from traitlets import HasTraits, TraitError, TraitType

from kernelfleet.specs.options import SpecError, SpecOptions


def flag_of(option_name: str) -> str:
    """The command-line spelling of an option: ``remote_hosts`` → ``--remote-hosts``."""
    return "--" + option_name.replace("_", "-")


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

        Called by the builders after the common options are checked, before anything is
        built; *spec* is there for rules that depend on them (the language, Spark).
        """

    def provisioner_config(self, spec: SpecOptions) -> dict[str, Any]:
        """This kind's entries of ``metadata.kernel_provisioner.config``: the settings that
        differ from its provisioner's defaults, as JSON values. Called after :meth:`validate`.

        The builders add the common entries after these (``authorized_users``,
        ``unauthorized_users``, ``launch_timeout``).
        """
        return {}

    @classmethod
    def next_steps(cls, name: str) -> str:
        """What the admin should do after installing kernelspec *name* (printed by the
        install command), or ``""``."""
        return ""
