"""Finding EG and GP kernelspecs on disk and writing their kernelfleet equivalents (the I/O).

Their kernelspecs are read, never written: the migrated spec keeps the original's name (so
notebooks that name it keep working) and is written where the admin says (``--sys-prefix``
by default: kernelfleet's own environment, which comes before the system-wide Jupyter
directories in the Jupyter path, so the gateway finds it first). A destination that is the
original's own directory is refused. The kernel directories are scanned one by one rather
than through ``KernelSpecManager``, whose one-spec-per-name view would show the migrated spec
in place of the original on a second run.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_path

from kernelfleet.errors import PublicError
from kernelfleet.foreign import foreign_of
from kernelfleet.specs import builders, installer
from kernelfleet.specs.migrate.model import BLOCKER, Finding, Plan
from kernelfleet.specs.migrate.plan import plan

#: Files listed per original spec (enough to find a Toree jar or a pod template).
MAX_FILES = 2000
#: The largest kernel.json read (theirs are a few KB).
MAX_KERNEL_JSON = 1 << 20


@dataclass(frozen=True)
class Source:
    """One of their kernelspecs, as found on disk."""

    name: str
    resource_dir: str
    spec: dict[str, Any]
    files: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What became of one kernelspec."""

    name: str
    plan: Plan | None
    destination: str = ""
    written: bool = False
    replaced: bool = False
    diff: str = ""
    #: Why it was not written (beyond its unmappable findings), or a warning about where it
    #: was written.
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        p = self.plan
        return {
            "name": self.name,
            "origin": p.foreign.label if p is not None and p.foreign is not None else "",
            "kind": p.kind if p is not None else None,
            "source": p.source_dir if p is not None else "",
            "destination": self.destination,
            "written": self.written,
            "findings": [f.as_json() for f in p.findings] if p is not None else [],
            "notes": self.notes,
            **({"diff": self.diff} if self.diff else {}),
        }


def search_dirs(from_dir: str = "") -> list[Path]:
    """The ``kernels`` directories to read: *from_dir* (a kernels directory, a prefix with
    ``share/jupyter/kernels``, or one kernelspec's directory), else the Jupyter path's."""
    if not from_dir:
        return [Path(d) for d in jupyter_path("kernels")]
    base = Path(os.path.abspath(os.path.expanduser(from_dir)))
    if (base / "kernel.json").is_file():
        return [base.parent]
    if (base / "share" / "jupyter" / "kernels").is_dir():
        return [base / "share" / "jupyter" / "kernels"]
    return [base]


def spec_dir_name(from_dir: str) -> list[str]:
    """``[name]`` when *from_dir* is one kernelspec's directory (only it is migrated), else []."""
    base = Path(os.path.abspath(os.path.expanduser(from_dir))) if from_dir else None
    return [base.name] if base is not None and (base / "kernel.json").is_file() else []


def _files(resource_dir: Path) -> tuple[str, ...]:
    out: list[str] = []
    for root, dirs, names in os.walk(resource_dir):
        dirs.sort()
        for name in sorted(names):
            out.append(os.path.relpath(os.path.join(root, name), resource_dir))
            if len(out) >= MAX_FILES:
                return tuple(out)
    return tuple(out)


def _read(path: Path) -> dict[str, Any] | str:
    """kernel.json at *path* as a dict, or why it cannot be read."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_KERNEL_JSON + 1)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if len(raw) > MAX_KERNEL_JSON:
        return f"{path} is larger than {MAX_KERNEL_JSON} bytes"
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"{path} is not JSON ({exc})"[:300]
    return data if isinstance(data, dict) else f"{path} does not hold a JSON object"


def find_sources(
    dirs: Sequence[Path], names: Iterable[str] = ()
) -> tuple[list[Source], dict[str, str]]:
    """Their kernelspecs in *dirs* (the first of each name, in the order of *dirs*), only
    those of *names* when given; and, by name, why a named one was not found or is not theirs.
    """
    wanted = list(dict.fromkeys(names))
    found: dict[str, Source] = {}
    problems: dict[str, str] = {}
    for kernels in dirs:
        try:
            entries = sorted(os.listdir(kernels))
        except OSError:
            continue
        for name in entries:
            if name in found or (wanted and name not in wanted):
                continue
            spec_dir = kernels / name
            if not (spec_dir / "kernel.json").is_file():
                continue
            data = _read(spec_dir / "kernel.json")
            if isinstance(data, str):
                problems.setdefault(name, data)
                continue
            if foreign_of(data) is None:
                if wanted:  # only a spec asked for by name is a problem when it is not theirs
                    problems.setdefault(
                        name,
                        f"{spec_dir} is not an Enterprise Gateway or Gateway Provisioners "
                        "kernelspec: nothing to migrate",
                    )
                continue
            problems.pop(name, None)
            found[name] = Source(name, str(spec_dir), data, _files(spec_dir))
    for name in wanted:
        if name not in found and name not in problems:
            where = ", ".join(str(d) for d in dirs) or "the Jupyter path"
            problems[name] = f"no kernelspec named {name!r} in {where}"
    order = wanted or sorted(found)
    return [found[n] for n in order if n in found], {n: problems[n] for n in problems}


def _diff(original: dict[str, Any], new: dict[str, Any], name: str, dest: Path) -> str:
    old = json.dumps(original, indent=2, sort_keys=True).splitlines(keepends=True)
    now = json.dumps(new, indent=2, sort_keys=True).splitlines(keepends=True)
    return "".join(
        difflib.unified_diff(old, now, f"{name}/kernel.json (original)", f"{dest}/kernel.json")
    )


def _earlier_on_path(root: Path, name: str) -> tuple[bool, str] | None:
    """Why the gateway would not find spec *name* written under *root* (and whether that
    hides it for sure), or None."""
    path = [Path(d).resolve() for d in jupyter_path("kernels")]
    here = root.resolve()
    if here not in path:
        return False, (
            f"{root} is not on the Jupyter path: the gateway finds the spec only if "
            f"JUPYTER_PATH names {root.parent}"
        )
    for kernels in path[: path.index(here)]:
        if (kernels / name / "kernel.json").is_file():
            return True, (
                f"{kernels / name} comes first in the Jupyter path, so the gateway would "
                "still start that one: write with --user, or move it away"
            )
    return None


def migrate(
    source: Source,
    root: Path,
    *,
    dry_run: bool = False,
    force: bool = False,
    replace: bool = False,
) -> Outcome:
    """Plan *source*'s migration and, unless *dry_run* or it is not writable, install it
    under *root* (a ``kernels`` directory)."""
    p = plan(source.name, source.spec, source.resource_dir, source.files)
    dest = root / source.name
    out = Outcome(source.name, p, destination=str(dest))
    options = p.options
    if options is None:
        return out
    if dest.resolve() == Path(source.resource_dir).resolve():
        out.notes.append(
            f"the original is in {root}: writing there would replace it; choose another "
            "place with --sys-prefix, --user or --prefix"
        )
        return out
    try:
        files = builders.build_spec(options, str(dest))
    except PublicError as exc:
        if not p.blockers:
            p = dataclasses.replace(
                p, findings=(*p.findings, Finding(BLOCKER, "kernelfleet", exc.message))
            )
            out.plan = p
        elif force:  # what is left without the unmappable fields does not make a spec
            out.notes.append(f"cannot be written even without them: {exc.message}")
        return out
    out.diff = _diff(source.spec, files.kernel_json, source.name, dest)
    if not p.writable(force=force):
        return out
    existing = _migrated_from(dest)
    if dest.exists() and not replace and existing != source.resource_dir:
        out.notes.append(
            f"{dest} exists and is not a migration of {source.resource_dir}: pass --replace "
            "to replace it"
        )
        return out
    hidden = _earlier_on_path(root, source.name)
    if hidden is not None and hidden[0]:
        out.notes.append(hidden[1])
        return out
    if dry_run:
        return out
    try:
        done = installer.install(options, root, replace=dest.exists())
    except PublicError as exc:
        out.notes.append(exc.message)
        return out
    out.written, out.replaced = True, done.replaced
    if hidden is not None:
        out.notes.append(f"warning: {hidden[1]}")
    return out


def _migrated_from(dest: Path) -> str | None:
    data = _read(dest / "kernel.json") if (dest / "kernel.json").is_file() else None
    if not isinstance(data, dict):
        return None
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    ours = meta.get("kernelfleet") if isinstance(meta, dict) else None
    origin = ours.get("migrated_from") if isinstance(ours, dict) else None
    path = origin.get("path") if isinstance(origin, dict) else None
    return str(path) if isinstance(path, str) else None


def default_root() -> Path:
    """Where migrated specs go without --user / --prefix: kernelfleet's own environment."""
    return installer.kernels_dir(sys_prefix=True)
