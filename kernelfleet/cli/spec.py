"""``kernelfleet spec install <kind> | list | remove | sync``: argument parsing and output only.

The work is done by :mod:`kernelfleet.specs` (pure builders, the installer, the SSH sync).
``spec install`` has one subcommand per spec kind (:mod:`kernelfleet.specs.kinds`), made by
:func:`install_command` from the kind's class: the options every kind shares are declared once
here (:class:`InstallBase`), the kind's own are its traits. Install options keep the names of
``jupyter ssh-spec install`` so an admin's habits work. Every option is also a config entry and
a ``KF_SPEC_*`` environment variable (see ``--help-all``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sys
from textwrap import dedent
from typing import Any, ClassVar, cast

from traitlets import Bool, CaselessStrEnum, Container, Float, Unicode, default
from traitlets import List as TList

from kernelfleet.cli.base import KernelfleetCommand, split_list, table
from kernelfleet.config import option
from kernelfleet.errors import PublicError
from kernelfleet.specs import builders, installer, kinds
from kernelfleet.specs import options as spec_options
from kernelfleet.specs.kinds import SpecKind, flag_of
from kernelfleet.specs.kinds import ssh as ssh_kind
from kernelfleet.specs.kinds.docker import DockerKind
from kernelfleet.specs.kinds.k8s import K8sKind
from kernelfleet.specs.kinds.local import LocalKind
from kernelfleet.specs.kinds.ssh import SSHKind
from kernelfleet.specs.kinds.yarn import YarnKind
from kernelfleet.specs.options import KIND_DEFAULTED, SpecOptions


class SpecDirsCommand(KernelfleetCommand):
    prefix = option(
        Unicode(
            "",
            help=(
                "Also look for kernelspecs in PREFIX/share/jupyter/kernels (where 'spec install "
                "--prefix PREFIX' puts them). Default: only the Jupyter path."
            ),
        ),
        "KF_SPEC_PREFIX",
    )

    def spec_manager(self) -> Any:
        extra = [str(installer.kernels_dir(prefix=self.prefix))] if self.prefix else []
        return installer.spec_manager(extra)


class FleetCommand(SpecDirsCommand):
    """A command that reaches hosts over SSH with the provisioner's settings."""

    hosts = option(
        TList(
            Unicode(),
            help=(
                "Hosts to work on (repeatable or comma list). Default: the kernelspec's "
                "remote_hosts, else KF_REMOTE_HOSTS."
            ),
        ),
        "KF_CHECK_HOSTS",
    )
    json_output = option(Bool(False, help="Print JSON instead of a table."), "KF_CHECK_JSON")

    @property
    def option_classes(self) -> list[type[Any]]:
        """This command's options and the SSH provisioner's (``KF_SSH_*``, ...)."""
        return [type(self), ssh_kind.provisioner_class()]

    @property
    def classes(self) -> list[type[Any]]:  # type: ignore[override]
        return self.option_classes

    def host_list(self, provisioner: Any) -> list[str]:
        hosts = list(split_list(self.hosts)) or [
            h.strip() for h in provisioner.remote_hosts if h.strip()
        ]
        if not hosts:
            self.fail(
                "no hosts: pass --hosts, or give the kernelspec remote_hosts, or set "
                "KF_REMOTE_HOSTS",
                code=2,
            )
        return hosts


# -- install ------------------------------------------------------------------------------------


class InstallBase(KernelfleetCommand):
    """``kernelfleet spec install <kind>``: the options every kind shares. The command of one
    kind is a subclass made by :func:`install_command`, with the kind's options added."""

    #: The kind this command installs.
    kind_class: ClassVar[type[SpecKind]]
    takes_arguments = False

    kernel_name = option(
        Unicode("", help="Name of the kernelspec. Default: <kind>_<language>[_spark]."),
        "KF_SPEC_KERNEL_NAME",
    )
    display_name = option(
        Unicode("", help="Name shown to users. Default: derived from language, Spark, hosts."),
        "KF_SPEC_DISPLAY_NAME",
    )
    language = option(
        CaselessStrEnum(
            list(spec_options.LANGUAGES),
            default_value="python",
            help="Kernel language: python (ipykernel), r (IRkernel) or scala (Apache Toree, "
            "always with Spark). Default: python.",
        ),
        "KF_SPEC_LANGUAGE",
    )
    python = option(
        Unicode(
            help=(
                "Interpreter that runs the kernel (and the Spark launcher) on the hosts; it "
                "must exist at this path on every host. Default: the Python running this "
                "command."
            )
        ),
        "KF_SPEC_PYTHON",
    )
    authorized_users = option(
        TList(
            Unicode(),
            help="Users allowed to start this kernelspec (repeatable or comma list). "
            "Default: everyone the gateway allows.",
        ),
        "KF_SPEC_AUTHORIZED_USERS",
    )
    unauthorized_users = option(
        TList(
            Unicode(),
            help="Users refused this kernelspec (repeatable or comma list). "
            "Default: none beyond the gateway's own list.",
        ),
        "KF_SPEC_UNAUTHORIZED_USERS",
    )
    authorized_groups = option(
        TList(
            Unicode(),
            help="Groups whose members may start this kernelspec, as the gateway's identity "
            "authority (JupyterHub) reports them (repeatable or comma list). Default: none "
            "(authorized users only, if any).",
        ),
        "KF_SPEC_AUTHORIZED_GROUPS",
    )
    launch_timeout = option(
        Float(
            spec_options.DEFAULT_LAUNCH_TIMEOUT,
            help="Seconds a kernel of this spec may take to start (written to the spec). "
            "Default: 60.",
        ),
        "KF_SPEC_LAUNCH_TIMEOUT",
    )
    ipykernel_subclass_name = option(
        Unicode(
            spec_options.DEFAULT_KERNEL_CLASS,
            help="Kernel class for Python kernels (an ipykernel subclass, 'module.Class'). "
            f"Default: {spec_options.DEFAULT_KERNEL_CLASS}.",
        ),
        "KF_SPEC_IPYKERNEL_SUBCLASS_NAME",
    )
    spark = option(
        Bool(
            False, help="Start the kernel through spark-submit with a Spark session. Default: off."
        ),
        "KF_SPEC_SPARK",
    )
    spark_master = option(
        Unicode(
            spec_options.DEFAULT_SPARK_MASTER,
            help="Spark master URL for --spark: yarn, spark://host:port, local[N]. Default: yarn.",
        ),
        "KF_SPEC_SPARK_MASTER",
    )
    spark_home = option(
        Unicode(help="Spark installation on the hosts. Default: $SPARK_HOME, else /opt/spark."),
        "KF_SPEC_SPARK_HOME",
    )
    spark_init_mode = option(
        CaselessStrEnum(
            list(spec_options.INIT_MODES),
            default_value=spec_options.DEFAULT_INIT_MODE,
            help="When the Spark session is created: lazy (in the background, the kernel is "
            "usable at once), eager (before the kernel is ready) or none. Default: lazy.",
        ),
        "KF_SPEC_SPARK_INIT_MODE",
    )
    extra_spark_opts = option(
        Unicode(
            "",
            help="More spark-submit options for every kernel of this spec, e.g. "
            "'--conf spark.executor.memory=2g'. Default: none.",
        ),
        "KF_SPEC_EXTRA_SPARK_OPTS",
    )
    toree_jar = option(
        Unicode("", help="Scala only: path of Apache Toree's assembly jar on the hosts."),
        "KF_SPEC_TOREE_JAR",
    )
    user = option(Bool(False, help="Install for the current user only."), "KF_SPEC_USER")
    sys_prefix = option(
        Bool(False, help="Install into this Python's prefix (sys.prefix)."), "KF_SPEC_SYS_PREFIX"
    )
    prefix = option(
        Unicode(
            "",
            help="Install into PREFIX/share/jupyter/kernels. Default: the system-wide "
            "Jupyter directory.",
        ),
        "KF_SPEC_PREFIX",
    )
    replace = option(
        Bool(
            False,
            help="Replace an existing kernelspec of that name (the old one is restored "
            "if the install fails).",
        ),
        "KF_SPEC_REPLACE",
    )
    dry_run = option(
        Bool(False, help="Print the kernel.json that would be written; write nothing."),
        "KF_SPEC_DRY_RUN",
    )

    @default("python")
    def _default_python(self) -> str:
        return sys.executable

    @default("spark_home")
    def _default_spark_home(self) -> str:
        return os.environ.get("SPARK_HOME") or spec_options.DEFAULT_SPARK_HOME

    aliases = {
        "kernel-name": "{cls}.kernel_name",
        "display-name": "{cls}.display_name",
        "language": "{cls}.language",
        "python": "{cls}.python",
        "authorized-users": "{cls}.authorized_users",
        "unauthorized-users": "{cls}.unauthorized_users",
        "authorized-groups": "{cls}.authorized_groups",
        "launch-timeout": "{cls}.launch_timeout",
        "ipykernel-subclass-name": "{cls}.ipykernel_subclass_name",
        "spark-master": "{cls}.spark_master",
        "spark-home": "{cls}.spark_home",
        "spark-init-mode": "{cls}.spark_init_mode",
        "extra-spark-opts": "{cls}.extra_spark_opts",
        "toree-jar": "{cls}.toree_jar",
        "prefix": "{cls}.prefix",
    }
    flag_defs = {
        "user": ("user", "Install for the current user only (Jupyter's user data directory)."),
        "sys-prefix": ("sys_prefix", "Install into sys.prefix (this Python's environment)."),
        "replace": ("replace", "Replace an existing kernelspec (backup restored on failure)."),
        "spark": ("spark", "Make a Spark kernel (spark-submit, client mode)."),
        "dry-run": ("dry_run", "Print the kernel.json; write nothing."),
    }

    def kind_options(self) -> dict[str, Any]:
        """The values of the kind's own options (list options also take comma lists)."""
        values = {}
        for name, trait in self.kind_class.option_traits().items():
            value = getattr(self, name)
            values[name] = split_list(value) if isinstance(trait, Container) else value
        return values

    def options(self) -> SpecOptions:
        return SpecOptions(
            kind=self.kind_class.kind,
            kernel_name=self.kernel_name,
            display_name=self.display_name,
            language=self.language,
            python=self.python,
            authorized_users=split_list(self.authorized_users),
            unauthorized_users=split_list(self.unauthorized_users),
            authorized_groups=split_list(self.authorized_groups),
            launch_timeout=self.launch_timeout,
            ipykernel_subclass_name=self.ipykernel_subclass_name,
            spark=self.spark,
            spark_master=self.spark_master,
            spark_home=self.spark_home,
            spark_init_mode=self.spark_init_mode,
            extra_spark_opts=self.extra_spark_opts,
            toree_jar=self.toree_jar,
            kind_options=self.kind_options(),
        )

    def start(self) -> None:
        try:
            opts = self.options()
            root = installer.kernels_dir(
                user=self.user, sys_prefix=self.sys_prefix, prefix=self.prefix
            )
            done = installer.install(opts, root, replace=self.replace, dry_run=self.dry_run)
        except PublicError as exc:
            self.fail_public(exc)
        if self.dry_run:
            print(json.dumps(done.kernel_json, indent=2))
            print(f"(dry run: nothing written; would install into {done.path})", file=sys.stderr)
        else:
            verb = "Replaced" if done.replaced else "Installed"
            print(f"{verb} kernelspec {done.name} in {done.path}")
            next_steps = self.kind_class.next_steps(done.name)
            if next_steps:
                print(next_steps)
        for warning in builders.install_warnings(opts):
            print(f"Warning: {warning}", file=sys.stderr)


_COMMANDS: dict[type[SpecKind], type[InstallBase]] = {}


def install_command(kind: type[SpecKind]) -> type[InstallBase]:
    """The ``kernelfleet spec install <kind>`` command of *kind* (made once, then reused).

    A subclass of :class:`InstallBase` named :meth:`SpecKind.command_name` (its config
    section: ``c.SSHInstallApp.remote_hosts``), holding a copy of each of the kind's option
    traits: ``--remote-hosts`` (a ``Bool`` option is a flag), ``--SSHInstallApp.remote_hosts``
    and the option's environment variable.
    """
    made = _COMMANDS.get(kind)
    if made is not None:
        return made
    own = kind.option_traits()
    clash = sorted(set(own) & set(dir(InstallBase)))
    if clash:
        raise TypeError(f"{kind.__name__}: options {clash} clash with those of every kind")
    odd = sorted(set(kind.common_defaults) - set(KIND_DEFAULTED))
    if odd:
        raise TypeError(f"{kind.__name__}: a kind may not change the default of {odd}")
    cls_name = kind.command_name()
    aliases = {k: v.format(cls=cls_name) for k, v in InstallBase.aliases.items()}
    flags = {
        flag: ({cls_name: {trait: True}}, text)
        for flag, (trait, text) in InstallBase.flag_defs.items()
    }
    for name, trait in own.items():
        word = flag_of(name).removeprefix("--")
        if isinstance(trait, Bool):
            flags[word] = ({cls_name: {name: True}}, (trait.help or name).splitlines()[0])
        else:
            aliases[word] = f"{cls_name}.{name}"
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": cls_name,
        "__doc__": kind.description,
        "name": f"kernelfleet spec install {kind.kind}",
        "description": kind.description,
        "examples": kind.examples,
        "kind_class": kind,
        "aliases": aliases,
        "flags": flags,
        **{name: copy.deepcopy(trait) for name, trait in own.items()},
        **_shared_with_kind_defaults(kind),
    }
    cls = cast(type[InstallBase], type(cls_name, (InstallBase,), namespace))
    _COMMANDS[kind] = cls
    return cls


def _shared_with_kind_defaults(kind: type[SpecKind]) -> dict[str, Any]:
    """Copies of the shared options whose default *kind* changes, with its default and help
    (its subcommand's ``--help`` shows them; the shared dynamic default no longer applies)."""
    traits = InstallBase.class_traits()
    out = {}
    for name, kd in kind.common_defaults.items():
        trait = copy.deepcopy(traits[name])
        trait.default_value = kd.value
        trait.help = f"{kd.help}\nEnvironment variable: {' or '.join(trait.metadata['env'])}."
        out[name] = trait
    return out


#: The built-in kinds' commands, by the names configs and scripts know them by.
SSHInstallApp = install_command(SSHKind)
LocalInstallApp = install_command(LocalKind)
YarnInstallApp = install_command(YarnKind)
K8sInstallApp = install_command(K8sKind)
DockerInstallApp = install_command(DockerKind)


class InstallApp(KernelfleetCommand):
    name = "kernelfleet spec install"
    description = (
        "Install a kernelspec: 'ssh' (kernels on SSH hosts), 'local', 'yarn' (Spark drivers "
        "in YARN cluster mode), 'k8s' (kernels as Kubernetes pods) or 'docker' (kernels as "
        "Docker containers or Swarm services)."
    )

    @default("subcommands")
    def _one_per_kind(self) -> dict[str, Any]:
        return {
            name: (install_command(kind), kind.description) for name, kind in kinds.KINDS.items()
        }


# -- list / remove ------------------------------------------------------------------------------


class ListApp(SpecDirsCommand):
    name = "kernelfleet spec list"
    description = "List the kernelspecs: name, display name, provisioner, hosts, language."
    json_output = option(Bool(False, help="Print JSON instead of a table."), "KF_SPEC_JSON")
    aliases = {"prefix": "ListApp.prefix"}
    flags = {"json": ({"ListApp": {"json_output": True}}, "Print JSON instead of a table.")}

    def start(self) -> None:
        rows = installer.list_specs(self.spec_manager())
        if self.json_output:
            print(json.dumps([r.as_json() for r in rows], indent=2))
            return
        print(
            table(
                ["NAME", "DISPLAY NAME", "PROVISIONER", "HOSTS", "LANGUAGE"],
                [
                    [
                        r.name,
                        r.display_name,
                        r.provisioner,
                        ",".join(r.hosts) or _hosts_when_none(r.provisioner),
                        r.language,
                    ]
                    for r in rows
                ],
            )
        )


def _hosts_when_none(provisioner_name: str) -> str:
    kind = kinds.by_provisioner(provisioner_name)
    return kind.hosts_when_none if kind is not None else "-"


class RemoveApp(SpecDirsCommand):
    name = "kernelfleet spec remove"
    description = "Remove kernelspecs from this machine: kernelfleet spec remove NAME [NAME…]."
    aliases = {"prefix": "RemoveApp.prefix"}

    def start(self) -> None:
        if not self.extra_args:
            self.fail("name the kernelspec(s) to remove", code=2)
        ksm = self.spec_manager()
        try:
            for name in self.extra_args:
                path = installer.remove(ksm, name)
                print(f"Removed kernelspec {name} ({path})")
        except PublicError as exc:
            self.fail_public(exc)


SSH = SSHKind.provisioner_name


class SyncApp(FleetCommand):
    name = "kernelfleet spec sync"
    description = """Copy kernelspecs to every host at the same path over SSH (SFTP): only
    changed files travel, each spec is swapped in atomically, a failing host does not stop the
    others. Exit status 1 unless every host succeeded. Default: every kernelfleet-ssh spec,
    each to its own remote_hosts."""
    examples = dedent("""
        kernelfleet spec sync
        kernelfleet spec sync ssh_python_spark --hosts=host1,host2
        """)
    aliases = {"hosts": "SyncApp.hosts", "prefix": "SyncApp.prefix"}
    flags = {"json": ({"SyncApp": {"json_output": True}}, "Print JSON instead of a table.")}

    def start(self) -> None:
        from kernelfleet.specs import sync

        ksm = self.spec_manager()
        try:
            if self.extra_args:
                rows = [installer.find_spec(ksm, name) for name in self.extra_args]
            else:
                rows = [r for r in installer.list_specs(ksm) if r.provisioner == SSH]
        except PublicError as exc:
            self.fail_public(exc)
        if not rows:
            self.fail(f"no {SSH} kernelspecs to sync (name them, or install one)", 2)
        work: dict[str, tuple[Any, list[sync.LocalSpec]]] = {}
        for row in rows:
            provisioner = ssh_kind.provisioner_settings(self.config, row.provisioner_config)
            local = sync.LocalSpec.read(row.name, row.resource_dir)
            for host in self.host_list(provisioner):
                work.setdefault(host, (provisioner.target_for(host), []))[1].append(local)

        def progress(host: str, spec: str, text: str) -> None:
            print(f"{host}: {spec}: {text}", file=sys.stderr, flush=True)

        results = asyncio.run(sync.sync(work, progress))
        if self.json_output:
            print(json.dumps([r.as_json() for r in results], indent=2))
        else:
            print(
                table(
                    ["HOST", "SPEC", "STATUS", "SENT", "LINKED", "BYTES", "SECONDS"],
                    [
                        [
                            r.host,
                            r.spec,
                            r.status,
                            str(r.sent),
                            str(r.linked),
                            str(r.bytes_sent),
                            f"{r.seconds:.2f}",
                        ]
                        for r in results
                    ],
                )
            )
            for r in results:
                if not r.ok:
                    print(f"{r.host}: {r.spec}: {r.error}\n    fix: {r.fix}")
            good = sum(r.ok for r in results)
            print(f"\n{good} of {len(results)} host/spec copies up to date")
        if not all(r.ok for r in results):
            self.exit(1)


class SpecApp(KernelfleetCommand):
    name = "kernelfleet spec"
    description = "Install, list, remove, sync and migrate kernelspecs for the fleet."
    subcommands = {
        "install": (InstallApp, InstallApp.description),
        "list": (ListApp, ListApp.description),
        "remove": (RemoveApp, RemoveApp.description),
        "sync": ("kernelfleet.cli.spec.SyncApp", "Copy kernelspecs to every host over SSH."),
        "migrate": (
            "kernelfleet.cli.migrate.MigrateApp",
            "Convert Enterprise Gateway and Gateway Provisioners kernelspecs.",
        ),
    }
