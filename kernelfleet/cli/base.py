"""The base of every ``kernelfleet`` subcommand but ``serve``: configuration precedence, strict
command lines, errors as one line, exit codes, and small output helpers.

A command line is strict: an option the command does not know (a misspelt ``--spark-opts``, an
unknown ``--Class.option``) or a stray argument to a command that takes none is a usage error
(exit 2) naming it, never a warning after which the value is silently dropped.
"""

from __future__ import annotations

import copy
import difflib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from traitlets import TraitError
from traitlets.config import Application, Config
from traitlets.config.loader import ArgumentError, KVArgParseConfigLoader

from kernelfleet import __version__
from kernelfleet.config import EnvError, config_from_env
from kernelfleet.errors import PublicError


class UnknownOption(Exception):
    """An option on the command line that the command does not know."""


class StrictLoader(KVArgParseConfigLoader):
    """traitlets' command-line loader, with an unknown ``--name`` an error, not a warning."""

    def _handle_unrecognized_alias(self, arg: str) -> None:
        raise UnknownOption(f"unknown option --{arg}")


def unknown_config(cli: Config, classes: Sequence[type[Any]]) -> str | None:
    """Why a ``--Class.option=value`` of *cli* names nothing of *classes*, or None."""
    known = {c.__name__: c for cls in classes for c in cls.__mro__ if hasattr(c, "class_traits")}
    for section, values in cli.items():
        cls = known.get(section)
        if cls is None:
            return f"unknown option --{section}.… (no such section)"
        if not isinstance(values, dict):
            continue
        traits = cls.class_traits(config=True)
        for key in values:
            if key not in traits:
                near = difflib.get_close_matches(key, list(traits), n=1)
                hint = f"; did you mean --{section}.{near[0]}?" if near else ""
                return f"unknown option --{section}.{key}{hint}"
    return None


def env_names_in(message: str, classes: Sequence[type[Any]]) -> str:
    """The environment variables (set now) of the options *message* names, for an error."""
    names = []
    for cls in classes:
        for trait_name, trait in cls.class_traits(config=True).items():
            if f"'{trait_name}'" in message:
                names += [n for n in trait.metadata.get("env", ()) if n in os.environ]
    return ", ".join(names) or "the environment"


def config_dir() -> str:
    """The directory of ``kernelfleet_config.py`` (the one ``kernelfleet serve`` reads)."""
    return os.environ.get("KF_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".kernelfleet")


def split_list(values: Sequence[str]) -> tuple[str, ...]:
    """Repeatable list options also accept comma lists: ``--remote-hosts a,b --remote-hosts c``."""
    out: list[str] = []
    for value in values:
        out.extend(part.strip() for part in str(value).split(",") if part.strip())
    return tuple(out)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


class KernelfleetCommand(Application):
    """A subcommand: environment read once at init (below the command line), errors printed
    as one line naming what to fix, exit codes 0 (ok), 1 (failed), 2 (bad usage)."""

    version = __version__
    #: Whether the command takes positional arguments (kernelspec names, for example).
    takes_arguments = True

    @property
    def option_classes(self) -> list[type[Any]]:
        return [type(self)]

    def _create_loader(
        self, argv: Any, aliases: Any, flags: Any, classes: Any
    ) -> KVArgParseConfigLoader:
        return StrictLoader(
            argv, aliases, flags, classes=classes, log=self.log, subcommands=self.subcommands
        )

    def initialize(self, argv: Any = None) -> None:
        """Defaults < ``KF_*`` environment < config file < command line, as for ``serve``."""
        # traitlets' own handler of a bad value logs "CRITICAL | Bad config" and exits 1;
        # call under it and answer as every other usage error does.
        parse = Application.parse_command_line.__wrapped__  # type: ignore[attr-defined]
        try:
            parse(self, argv)
        except (UnknownOption, TraitError, ArgumentError) as exc:
            self.fail(str(exc), code=2)
        if self.subapp is not None:
            return
        cli_config = copy.deepcopy(self.config)
        problem = unknown_config(cli_config, [*self.option_classes, Application])
        if problem is None and self.extra_args and not self.takes_arguments:
            problem = f"unexpected argument {self.extra_args[0]!r} (options are --name=value)"
        if problem is not None:
            self.fail(problem, code=2)
        try:
            self.update_config(config_from_env(self.option_classes))
        except EnvError as exc:
            self.fail(str(exc), code=2)
        except TraitError as exc:
            self.fail(f"{exc} Set by {env_names_in(str(exc), self.option_classes)}.", code=2)
        path = os.path.join(config_dir(), "kernelfleet_config.py")
        if os.path.isfile(path):  # e.g. the gateway's c.SSHProvisioner.* settings
            self.load_config_file(os.path.basename(path), os.path.dirname(path))
        try:
            self.update_config(cli_config)
        except TraitError as exc:
            self.fail(str(exc), code=2)

    def fail(self, message: str, code: int = 1) -> NoReturn:
        print(f"{self.name}: error: {message}", file=sys.stderr)
        self.exit(code)
        raise SystemExit(code)  # pragma: no cover - exit() raises

    def fail_public(self, exc: PublicError) -> NoReturn:
        self.fail(exc.message, code=2 if exc.status == 400 else 1)

    def start(self) -> None:
        if self.subapp is not None:
            self.subapp.start()
            return
        self.print_help()
        self.exit(2)
