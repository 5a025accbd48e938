"""``kernelfleet env create | list | show | remove | rebuild | pythons``: argument parsing and
output only; the work is :mod:`kernelfleet.envs.service`'s.

``env create NAME PACKAGE…`` makes an environment whose kernels run on the gateway's machine;
``env create ssh NAME …``, ``env create yarn NAME …`` (one subcommand per kind) ship it where
those kernels run, with every option of ``spec install <kind>`` for its kernelspec::

    kernelfleet env create pandas22 --python=3.11 --packages "pandas==2.2.*" scikit-learn
    kernelfleet env create ssh pandas22 --remote-hosts=host1,host2 --packages pandas
    kernelfleet env create yarn sklearn --packages scikit-learn --requirements reqs.txt

The command runs as the admin who types it (an admin: quotas apply to ``--owner``, default
the login name). Progress goes to stderr, one line per step; the result to stdout.
"""

from __future__ import annotations

import asyncio
import copy
import getpass
import json
import os
import sys
from pathlib import Path
from textwrap import dedent
from typing import Any, cast

from jupyter_core.paths import jupyter_data_dir
from traitlets import Bool, Unicode, default
from traitlets import List as TList

from kernelfleet.cli.base import KernelfleetCommand, split_list, table
from kernelfleet.cli.spec import InstallBase, install_command
from kernelfleet.config import option
from kernelfleet.envs import service as env_service
from kernelfleet.envs.model import EnvRecord
from kernelfleet.envs.settings import EnvSettings
from kernelfleet.errors import PublicError
from kernelfleet.kernels.stores import open_store
from kernelfleet.specs import installer, kinds
from kernelfleet.specs.kinds import ssh as ssh_kind

#: Kernel states that no longer hold an environment.
GONE = ("dead", "shutdown", "terminated")


class EnvPaths(KernelfleetCommand):
    """Where the gateway keeps its state (the same options and variables as ``serve``)."""

    data_dir = option(
        Unicode("", help="The gateway's data directory. Default: <Jupyter data dir>/kernelfleet."),
        "KF_DATA_DIR",
    )
    kernel_store = option(
        Unicode(
            "",
            help="The gateway's kernel store (to see which kernels use an environment). "
            "Default: SQLite in the data directory.",
        ),
        "KF_KERNEL_STORE",
    )
    owner = option(
        Unicode("", help="The user the environment belongs to. Default: your login name."),
        "KF_ENV_OWNER",
    )

    @property
    def option_classes(self) -> list[type[Any]]:
        return [type(self), EnvSettings, ssh_kind.provisioner_class()]

    @property
    def classes(self) -> list[type[Any]]:  # type: ignore[override]
        return self.option_classes

    def data_path(self) -> str:
        return self.data_dir or os.path.join(jupyter_data_dir(), "kernelfleet")

    def caller(self) -> env_service.Caller:
        return env_service.Caller(self.owner or getpass.getuser(), admin=True)

    async def in_use(self, kernel_name: str) -> list[str]:
        store = open_store(self.kernel_store, self.data_path())
        await store.open()
        try:
            return [
                k.id
                for k in await store.all()
                if k.name == kernel_name and k.state not in GONE and not k.pooled
            ]
        finally:
            await store.close()

    def service(self, kernels_dir: Path | None = None) -> env_service.EnvService:
        settings = EnvSettings(parent=self)
        configured = Path(settings.kernels_dir) if settings.kernels_dir else None
        return env_service.EnvService(
            settings,
            data_dir=self.data_path(),
            kernels_dir=kernels_dir or configured or installer.kernels_dir(),
            in_use=self.in_use,
            config=self.config,
        )

    def run(self, coro: Any) -> Any:
        try:
            return asyncio.run(coro)
        except PublicError as exc:
            self.fail_public(exc)


def say(text: str, *, level: str = "info", host: str = "") -> None:
    where = f"{host}: " if host else ""
    mark = {"error": "error: ", "warning": "warning: "}.get(level, "")
    print(f"kernelfleet env: {mark}{where}{text}", file=sys.stderr, flush=True)


class CreateBase(InstallBase):
    """The options of ``env create <kind>``: the kind's ``spec install`` options, and these."""

    python = option(
        Unicode(
            "3",
            help="Python to build on: a version (3.11: the newest installed 3.11) or the path "
            "of an installed interpreter. Never downloaded. Default: 3 (the newest).",
        ),
        "KF_ENV_PYTHON",
    )
    packages = option(
        TList(
            Unicode(),
            help="Packages to install, as pip writes them ('pandas==2.2.*'), repeatable; "
            "further words after NAME are packages too. ipykernel is always added.",
        ),
        "KF_ENV_PACKAGES",
    )
    requirements = option(
        Unicode("", help="A requirements file of more packages (names and versions only)."),
        "KF_ENV_REQUIREMENTS",
    )
    allow_source = option(
        Bool(
            False,
            help="Let this build compile packages from source (needs "
            "KF_ENV_ALLOW_SOURCE_BUILDS on). Default: wheels only.",
        ),
        "KF_ENV_ALLOW_SOURCE",
    )
    takes_arguments = True

    @default("launch_timeout")
    def _timeout(self) -> float:
        default_value = self.kind_class.common_defaults.get("launch_timeout")
        return float(default_value.value) if default_value else 60.0

    @property
    def option_classes(self) -> list[type[Any]]:
        return [type(self), EnvSettings, EnvPaths, ssh_kind.provisioner_class()]

    @property
    def classes(self) -> list[type[Any]]:  # type: ignore[override]
        return self.option_classes

    def initialize(self, argv: Any = None) -> None:
        """Words may follow options (``NAME --packages a b``): argparse takes positional
        arguments in one run only, so they are moved in front of the options first."""
        args = list(sys.argv[1:] if argv is None else argv)
        if args and args[0] in (self.subcommands or {}):
            super().initialize(args)
            return
        super().initialize(positionals_first(args, set(self.flags)))

    def start(self) -> None:
        if not self.extra_args:
            self.fail("name the environment: kernelfleet env create [KIND] NAME PACKAGE…", code=2)
        name, *more = self.extra_args
        packages = [*split_list(self.packages), *more]
        if self.requirements:
            try:
                packages += Path(self.requirements).read_text().splitlines()
            except OSError as exc:
                self.fail(f"cannot read --requirements {self.requirements}: {exc.strerror}")
        paths = EnvPaths(parent=self)
        spec = self.options()
        request = env_service.EnvRequest(
            name=name,
            packages=tuple(packages),
            python=self.python,
            spec=spec,
            owner=paths.owner,
            allow_source=self.allow_source,
        )
        chosen = self.user or self.sys_prefix or self.prefix
        root = (
            installer.kernels_dir(user=self.user, sys_prefix=self.sys_prefix, prefix=self.prefix)
            if chosen
            else None
        )
        service = paths.service(root)
        try:
            record = asyncio.run(service.create(request, paths.caller(), say))
        except PublicError as exc:
            self.fail_public(exc)
        print(f"Created environment {record.name}: kernelspec {record.kernel_name}")


def positionals_first(args: list[str], flags: set[str]) -> list[str]:
    """*args* with the words that are not options nor option values moved to the front."""
    words: list[str] = []
    options: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            words += args[i + 1 :]
            break
        if arg.startswith("-") and len(arg) > 1:
            options.append(arg)
            name = arg.lstrip("-").split("=", 1)[0]
            if "=" not in arg and name not in flags and i + 1 < len(args):
                options.append(args[i + 1])
                i += 1
        else:
            words.append(arg)
        i += 1
    return [*words, *options]


_COMMANDS: dict[str, type[CreateBase]] = {}


def create_command(kind: type[kinds.SpecKind]) -> type[CreateBase]:
    """``env create <kind>``: :func:`install_command`'s class for *kind* with the env options."""
    made = _COMMANDS.get(kind.kind)
    if made is not None:
        return made
    base = install_command(kind)
    cls_name = f"EnvCreate{kind.command_name().removesuffix('InstallApp')}App"
    aliases = {k: (v.replace(base.__name__, cls_name)) for k, v in base.aliases.items()}
    aliases.update(
        packages=f"{cls_name}.packages",
        requirements=f"{cls_name}.requirements",
        python=f"{cls_name}.python",
        owner="EnvPaths.owner",
        **{"data-dir": "EnvPaths.data_dir"},
    )
    flags = {
        word: ({cls_name: dict(next(iter(cfg.values())))}, text)
        for word, (cfg, text) in base.flags.items()
        if word not in ("dry-run", "replace")
    }
    flags["allow-source"] = ({cls_name: {"allow_source": True}}, "Allow source builds.")
    own = {n: copy.deepcopy(t) for n, t in base.class_own_traits().items()}
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": cls_name,
        "name": f"kernelfleet env create {kind.kind}",
        "description": f"Create a kernel environment and a kernelspec for it: {kind.where}.",
        "examples": "",
        "kind_class": kind,
        "aliases": aliases,
        "flags": flags,
        **{k: v for k, v in own.items() if k not in CreateBase.class_own_traits()},
    }
    cls = cast(type[CreateBase], type(cls_name, (CreateBase, base), namespace))
    _COMMANDS[kind.kind] = cls
    return cls


ENV_KINDS = env_service.KINDS


class CreateApp(create_command(kinds.KINDS["local"])):  # type: ignore[misc]
    name = "kernelfleet env create"
    description = (
        "Create a kernel environment (a virtual environment with ipykernel and your packages, "
        "built from the package index) and a kernelspec that runs it. 'env create NAME …' for "
        "kernels on this machine; 'env create ssh|yarn NAME …' ships it to those kernels' "
        "hosts or cluster."
    )
    examples = dedent("""
        kernelfleet env create pandas22 --python=3.11 --packages "pandas==2.2.*" scikit-learn
        kernelfleet env create ssh sk --remote-hosts=host1,host2 --packages scikit-learn
        kernelfleet env create yarn sk --packages scikit-learn --requirements reqs.txt
        """)

    @default("subcommands")
    def _kinds(self) -> dict[str, Any]:
        return {
            k: (create_command(kinds.KINDS[k]), f"The environment for '{k}' kernels.")
            for k in ENV_KINDS
            if k in kinds.KINDS
        }


class ListApp(EnvPaths):
    name = "kernelfleet env list"
    description = "List the kernel environments: name, owner, kernelspec, size, packages."
    json_output = option(Bool(False, help="Print JSON instead of a table."), "KF_ENV_JSON")
    aliases = {"data-dir": "EnvPaths.data_dir"}
    flags = {"json": ({"ListApp": {"json_output": True}}, "Print JSON instead of a table.")}
    takes_arguments = False

    def start(self) -> None:
        service = self.service()
        records = service.store.all()
        if self.json_output:
            print(json.dumps([r.summary() for r in records], indent=2))
            return
        print(
            table(
                ["NAME", "OWNER", "KERNELSPEC", "KIND", "PYTHON", "SIZE", "PACKAGES", "STATE"],
                [_row(r) for r in records],
            )
        )
        for owner, usage in sorted(service.usage().items()):
            print(f"{owner}: {usage.envs} environments, {usage.mb:.0f} MB", file=sys.stderr)


def _row(r: EnvRecord) -> list[str]:
    return [
        r.name,
        r.owner,
        r.kernel_name,
        r.kind,
        r.python_version,
        f"{r.size_bytes / 1e6:.0f} MB",
        str(len(r.locked)),
        r.state,
    ]


class ShowApp(EnvPaths):
    name = "kernelfleet env show"
    description = "Show one environment: its record, and its lock (exact versions)."
    aliases = {"data-dir": "EnvPaths.data_dir"}

    def start(self) -> None:
        if len(self.extra_args) != 1:
            self.fail("name one environment: kernelfleet env show NAME", code=2)
        record = self.run(_get(self.service(), self.extra_args[0], self.caller()))
        print(json.dumps(record.summary(), indent=2))


async def _get(service: env_service.EnvService, name: str, caller: Any) -> EnvRecord:
    return service.get(name, caller)


class RemoveApp(EnvPaths):
    name = "kernelfleet env remove"
    description = (
        "Remove environments, their kernelspecs and their copies on hosts; refused while a "
        "kernel uses one."
    )
    aliases = {"data-dir": "EnvPaths.data_dir"}

    def start(self) -> None:
        if not self.extra_args:
            self.fail("name the environments: kernelfleet env remove NAME…", code=2)
        service = self.service()
        for name in self.extra_args:
            self.run(service.remove(name, self.caller(), say))
            print(f"Removed environment {name}")


class RebuildApp(EnvPaths):
    name = "kernelfleet env rebuild"
    description = (
        "Build an environment again from its lock (the exact versions and hashes it was "
        "built with), ship it, and point its kernelspec at the new build."
    )
    aliases = {"data-dir": "EnvPaths.data_dir"}

    def start(self) -> None:
        if len(self.extra_args) != 1:
            self.fail("name one environment: kernelfleet env rebuild NAME", code=2)
        record = self.run(self.service().rebuild(self.extra_args[0], self.caller(), say))
        print(f"Rebuilt environment {record.name} ({record.sha256[:12]})")


class PythonsApp(EnvPaths):
    name = "kernelfleet env pythons"
    description = "List the installed interpreters environments may be built on."
    takes_arguments = False

    def start(self) -> None:
        found = self.run(self.service().interpreters())
        print(table(["VERSION", "PATH"], [[i.version, i.path] for i in found]))


class EnvApp(KernelfleetCommand):
    name = "kernelfleet env"
    description = "Manage kernel environments: Python environments offered as kernels."
    subcommands = {
        "create": (CreateApp, "Build an environment and offer it as a kernel."),
        "list": (ListApp, "List the environments."),
        "show": (ShowApp, "Show one environment and its lock."),
        "remove": (RemoveApp, "Remove environments (refused while kernels use them)."),
        "rebuild": (RebuildApp, "Build an environment again from its lock."),
        "pythons": (PythonsApp, "List the interpreters environments may use."),
    }
