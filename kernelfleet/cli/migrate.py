"""``kernelfleet spec migrate [NAME ...]``: Enterprise Gateway and Gateway Provisioners
kernelspecs into kernelfleet ones. Argument parsing and output only; the mapping is
:mod:`kernelfleet.specs.migrate.plan`, the reading and writing
:mod:`kernelfleet.specs.migrate.apply`.
"""

from __future__ import annotations

import json
from textwrap import dedent

from traitlets import Bool, Unicode

from kernelfleet.cli.base import KernelfleetCommand
from kernelfleet.config import option
from kernelfleet.errors import PublicError
from kernelfleet.specs import installer, kinds
from kernelfleet.specs.migrate import apply
from kernelfleet.specs.migrate.model import BLOCKER

WIDTH = 11  # the widest level, "unmappable", and a space


class MigrateApp(KernelfleetCommand):
    name = "kernelfleet spec migrate"
    description = """Write kernelfleet kernelspecs equivalent to Enterprise Gateway
    (metadata.process_proxy) and Gateway Provisioners (metadata.kernel_provisioner) ones:
    their process proxy or provisioner and its config become a kernelfleet provisioner and
    its options, their launcher argv kernelfleet's kernel for the same language, SPARK_OPTS
    and env are carried over as data. Each migrated spec keeps its name and is written to
    this Python's environment (--sys-prefix, first in the Jupyter path) unless --user or
    --prefix says otherwise; the originals are never changed. A spec with a field that has no
    equivalent is reported with what to do and not written unless --force. Exit status 1
    unless every spec named (or found) was migrated (0 when there is none)."""
    examples = dedent("""
        kernelfleet spec migrate --dry-run
        kernelfleet spec migrate python_distributed spark_python_yarn_cluster
        kernelfleet spec migrate --from /opt/eg/share/jupyter/kernels --user
        """)

    from_dir = option(
        Unicode(
            "",
            help="Read the kernelspecs to migrate from DIR (a kernels directory, a prefix "
            "holding share/jupyter/kernels, or one kernelspec's directory). Default: every "
            "directory of the Jupyter path.",
        ),
        "KF_MIGRATE_FROM",
    )
    dry_run = option(
        Bool(
            False,
            help="Print what would be written (a diff of each kernel.json); write "
            "nothing. Default: off.",
        ),
        "KF_MIGRATE_DRY_RUN",
    )
    force = option(
        Bool(
            False,
            help="Write specs that have unmappable fields too, without those fields. Default: off.",
        ),
        "KF_MIGRATE_FORCE",
    )
    replace = option(
        Bool(
            False,
            help="Replace a kernelspec of the same name at the destination that is "
            "not an earlier migration of the same original. Default: off.",
        ),
        "KF_MIGRATE_REPLACE",
    )
    user = option(
        Bool(False, help="Write into Jupyter's user data directory. Default: off."),
        "KF_MIGRATE_USER",
    )
    sys_prefix = option(
        Bool(
            False,
            help="Write into sys.prefix (this Python's environment). Default: on "
            "unless --user or --prefix.",
        ),
        "KF_MIGRATE_SYS_PREFIX",
    )
    prefix = option(
        Unicode("", help="Write into PREFIX/share/jupyter/kernels. Default: none."),
        "KF_MIGRATE_PREFIX",
    )
    json_output = option(
        Bool(False, help="Print JSON instead of text. Default: off."), "KF_MIGRATE_JSON"
    )

    aliases = {"from": "MigrateApp.from_dir", "prefix": "MigrateApp.prefix"}
    flags = {
        "dry-run": ({"MigrateApp": {"dry_run": True}}, "Print the diffs; write nothing."),
        "force": ({"MigrateApp": {"force": True}}, "Write specs without their unmappable fields."),
        "replace": ({"MigrateApp": {"replace": True}}, "Replace a spec in the way."),
        "user": ({"MigrateApp": {"user": True}}, "Write into Jupyter's user directory."),
        "sys-prefix": ({"MigrateApp": {"sys_prefix": True}}, "Write into sys.prefix."),
        "json": ({"MigrateApp": {"json_output": True}}, "Print JSON instead of text."),
    }

    def start(self) -> None:
        try:
            root = (
                installer.kernels_dir(
                    user=self.user, sys_prefix=self.sys_prefix, prefix=self.prefix
                )
                if self.user or self.prefix or self.sys_prefix
                else apply.default_root()
            )
        except PublicError as exc:
            self.fail_public(exc)
        dirs = apply.search_dirs(self.from_dir)
        if self.from_dir and not dirs[0].is_dir():
            self.fail(f"--from {self.from_dir}: no such directory", code=2)
        names = list(self.extra_args) or apply.spec_dir_name(self.from_dir)
        sources, problems = apply.find_sources(dirs, names)
        outcomes = [
            apply.migrate(s, root, dry_run=self.dry_run, force=self.force, replace=self.replace)
            for s in sources
        ]
        if self.json_output:
            print(
                json.dumps(
                    {
                        "migrated": [o.as_json() for o in outcomes],
                        "problems": problems,
                        "dry_run": self.dry_run,
                    },
                    indent=2,
                )
            )
        else:
            self._print(outcomes, problems)
        done = all(o.written or (self.dry_run and _ok(o, self.force)) for o in outcomes)
        if not outcomes and not problems and not self.json_output:
            where = ", ".join(str(d) for d in dirs)
            print(f"No Enterprise Gateway or Gateway Provisioners kernelspecs in {where}.")
        if problems or not done:
            self.exit(1)

    def _print(self, outcomes: list[apply.Outcome], problems: dict[str, str]) -> None:
        for name, problem in problems.items():
            print(f"{name}: {problem}")
        for out in outcomes:
            p = out.plan
            if p is None:
                continue
            origin = p.foreign.label if p.foreign is not None else "?"
            target = f"{p.kind} kernelspec" if p.kind else "nothing"
            print(f"{out.name}: {origin} → {target}\n  from {p.source_dir}")
            for f in p.findings:
                print(f"  {f.level.ljust(WIDTH)}{f.field}: {f.text}")
            print(f"  {_verdict(out, self.dry_run, self.force)}")
            for note in out.notes:
                print(f"  {note}")
            if self.dry_run and out.diff:
                print(out.diff, end="" if out.diff.endswith("\n") else "\n")
            if out.written and p.kind:
                steps = kinds.kind_class(p.kind).next_steps(out.name)
                for line in steps.splitlines():
                    print(f"  {line}")
        written = sum(o.written for o in outcomes)
        verb = "would be written" if self.dry_run else "written"
        count = sum(_ok(o, self.force) for o in outcomes) if self.dry_run else written
        print(f"\n{count} of {len(outcomes) + len(problems)} kernelspecs {verb}.")


def _ok(out: apply.Outcome, force: bool) -> bool:
    return out.plan is not None and out.plan.writable(force=force) and not out.notes


def _verdict(out: apply.Outcome, dry_run: bool, force: bool) -> str:
    p = out.plan
    blockers = len(p.blockers) if p is not None else 0
    if out.written:
        verb = "replaced" if out.replaced else "written"
        left = f", without its {blockers} unmappable field(s)" if blockers else ""
        return f"{verb}: {out.destination}{left}"
    if blockers and not force:
        return (
            f"NOT written: {blockers} unmappable field(s) ({BLOCKER} above); fix them in the "
            "original and migrate again, or pass --force to write it without them"
        )
    if p is None or p.options is None or out.notes:
        return "NOT written"
    return f"dry run: would write {out.destination}" if dry_run else "NOT written"
