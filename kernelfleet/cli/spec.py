"""``kernelfleet spec install ssh|local | list | remove | sync``: argument parsing and output only.

The work is done by :mod:`kernelfleet.specs` (pure builders, the installer, the SSH sync).
Install options keep the names of ``jupyter ssh-spec install`` so an admin's habits work.
Every option is also a config entry and a ``KF_SPEC_*`` environment variable (see ``--help-all``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from textwrap import dedent
from typing import Any

from traitlets import Bool, CaselessStrEnum, Float, Unicode, default
from traitlets import List as TList

from kernelfleet.cli.base import KernelfleetCommand, split_list, table
from kernelfleet.config import option
from kernelfleet.errors import PublicError
from kernelfleet.specs import builders, installer


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


def ssh_provisioner(config: Any, spec_config: dict[str, Any] | None = None) -> Any:
    """The SSH provisioner's settings (app config < environment < kernelspec config)."""
    from kernelfleet.provisioners.ssh import SSHProvisioner

    known = {k: v for k, v in (spec_config or {}).items() if SSHProvisioner.class_traits().get(k)}
    return SSHProvisioner(config=config, **known)


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
        from kernelfleet.provisioners.ssh import SSHProvisioner

        return [type(self), SSHProvisioner]

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
    kind = "ssh"
    takes_arguments = False

    kernel_name = option(
        Unicode("", help="Name of the kernelspec. Default: <ssh|local>_<language>[_spark]."),
        "KF_SPEC_KERNEL_NAME",
    )
    display_name = option(
        Unicode("", help="Name shown to users. Default: derived from language, Spark, hosts."),
        "KF_SPEC_DISPLAY_NAME",
    )
    language = option(
        CaselessStrEnum(
            list(builders.LANGUAGES),
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
    launch_timeout = option(
        Float(
            builders.DEFAULT_LAUNCH_TIMEOUT,
            help="Seconds a kernel of this spec may take to start (written to the spec). "
            "Default: 60.",
        ),
        "KF_SPEC_LAUNCH_TIMEOUT",
    )
    ipykernel_subclass_name = option(
        Unicode(
            builders.DEFAULT_KERNEL_CLASS,
            help="Kernel class for Python kernels (an ipykernel subclass, 'module.Class'). "
            f"Default: {builders.DEFAULT_KERNEL_CLASS}.",
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
            builders.DEFAULT_SPARK_MASTER,
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
            list(builders.INIT_MODES),
            default_value=builders.DEFAULT_INIT_MODE,
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
        return os.environ.get("SPARK_HOME") or builders.DEFAULT_SPARK_HOME

    aliases = {
        "kernel-name": "{cls}.kernel_name",
        "display-name": "{cls}.display_name",
        "language": "{cls}.language",
        "python": "{cls}.python",
        "authorized-users": "{cls}.authorized_users",
        "unauthorized-users": "{cls}.unauthorized_users",
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

    def extra_options(self) -> dict[str, Any]:
        return {}

    def options(self) -> builders.SpecOptions:
        return builders.SpecOptions(
            kind=self.kind,
            kernel_name=self.kernel_name,
            display_name=self.display_name,
            language=self.language,
            python=self.python,
            authorized_users=split_list(self.authorized_users),
            unauthorized_users=split_list(self.unauthorized_users),
            launch_timeout=self.launch_timeout,
            ipykernel_subclass_name=self.ipykernel_subclass_name,
            spark=self.spark,
            spark_master=self.spark_master,
            spark_home=self.spark_home,
            spark_init_mode=self.spark_init_mode,
            extra_spark_opts=self.extra_spark_opts,
            toree_jar=self.toree_jar,
            **self.extra_options(),
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
            return
        verb = "Replaced" if done.replaced else "Installed"
        print(f"{verb} kernelspec {done.name} in {done.path}")
        if self.kind == "ssh":
            print(
                f"Next: 'kernelfleet spec sync {done.name}' copies it to the hosts at the same "
                f"path, then 'kernelfleet hosts check --spec {done.name}' checks they can run it."
            )


def _finish_install_app(cls: type[InstallBase]) -> type[InstallBase]:
    """Bind the shared alias/flag tables to the concrete class name."""
    cls.aliases = {k: v.format(cls=cls.__name__) for k, v in InstallBase.aliases.items()}
    cls.aliases.update(getattr(cls, "own_aliases", {}))
    cls.flags = {
        flag: ({cls.__name__: {trait: True}}, text)
        for flag, (trait, text) in InstallBase.flag_defs.items()
    }
    return cls


@_finish_install_app
class SSHInstallApp(InstallBase):
    name = "kernelfleet spec install ssh"
    description = "Install a kernelspec whose kernels run on SSH hosts (kernelfleet-ssh)."
    examples = dedent("""
        kernelfleet spec install ssh --remote-hosts=host1 --remote-hosts=host2 --user
        kernelfleet spec install ssh --spark --spark-master=spark://master:7077 --remote-hosts=h1,h2
        kernelfleet spec install ssh --language=r --kernel-name=ssh_r --dry-run
        """)
    kind = "ssh"
    remote_hosts = option(
        TList(
            Unicode(),
            help="Hosts the kernels may run on (repeatable or comma list). "
            "Default: the gateway's KF_REMOTE_HOSTS.",
        ),
        "KF_SPEC_REMOTE_HOSTS",
    )
    port_range = option(
        Unicode("", help="Ports the kernels may listen on, 'lo..hi'. Default: any free port."),
        "KF_SPEC_PORT_RANGE",
    )
    load_balancing_algorithm = option(
        Unicode(
            "", help="round-robin, least-connection or load. Default: the gateway's (round-robin)."
        ),
        "KF_SPEC_LOAD_BALANCING_ALGORITHM",
    )
    own_aliases = {
        "remote-hosts": "SSHInstallApp.remote_hosts",
        "port-range": "SSHInstallApp.port_range",
        "load-balancing-algorithm": "SSHInstallApp.load_balancing_algorithm",
    }

    def extra_options(self) -> dict[str, Any]:
        return {
            "remote_hosts": split_list(self.remote_hosts),
            "port_range": self.port_range,
            "load_balancing_algorithm": self.load_balancing_algorithm,
        }


@_finish_install_app
class LocalInstallApp(InstallBase):
    name = "kernelfleet spec install local"
    description = "Install a kernelspec whose kernels run on the gateway's machine."
    examples = dedent("""
        kernelfleet spec install local --spark --spark-master=local[2] --user
        """)
    kind = "local"


class InstallApp(KernelfleetCommand):
    name = "kernelfleet spec install"
    description = "Install a kernelspec: 'ssh' (kernels on SSH hosts) or 'local'."
    subcommands = {
        "ssh": (SSHInstallApp, SSHInstallApp.description),
        "local": (LocalInstallApp, LocalInstallApp.description),
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
                        ",".join(r.hosts)
                        or ("(KF_REMOTE_HOSTS)" if r.provisioner == "kernelfleet-ssh" else "-"),
                        r.language,
                    ]
                    for r in rows
                ],
            )
        )


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
                rows = [r for r in installer.list_specs(ksm) if r.provisioner == "kernelfleet-ssh"]
        except PublicError as exc:
            self.fail_public(exc)
        if not rows:
            self.fail("no kernelfleet-ssh kernelspecs to sync (name them, or install one)", 2)
        work: dict[str, tuple[Any, list[sync.LocalSpec]]] = {}
        for row in rows:
            provisioner = ssh_provisioner(self.config, row.provisioner_config)
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
    description = "Install, list, remove and sync kernelspecs for the fleet."
    subcommands = {
        "install": (InstallApp, InstallApp.description),
        "list": (ListApp, ListApp.description),
        "remove": (RemoveApp, RemoveApp.description),
        "sync": ("kernelfleet.cli.spec.SyncApp", "Copy kernelspecs to every host over SSH."),
    }
