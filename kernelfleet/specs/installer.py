"""Writes, lists and removes kernelspecs on this machine (the "primary" that ``spec sync`` copies).

A spec is written whole into a temporary directory next to its destination and renamed into
place, so a reader (the gateway's catalog, ``spec sync``) sees the old spec or the new one,
never half of one. With ``replace``, the old spec is first renamed to a backup; if putting the
new one in place fails, the backup is renamed back, and it is deleted only once the new spec is
in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.paths import SYSTEM_JUPYTER_PATH, jupyter_data_dir

from kernelfleet.errors import Conflict, NotFound, PublicError
from kernelfleet.foreign import foreign_of
from kernelfleet.specs.builders import SpecFiles, build_spec
from kernelfleet.specs.options import SpecOptions

#: Where the R logos of Debian's r-cran-irkernel (and CRAN installs) live.
IRKERNEL_SPEC_DIRS = (
    "/usr/lib/R/site-library/IRkernel/kernelspec",
    "/usr/local/lib/R/site-library/IRkernel/kernelspec",
)
LOGO_NAMES = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")
TMP_PREFIX = ".kf-tmp-"
BACKUP_PREFIX = ".kf-backup-"


class InstallError(PublicError):
    status = 500
    reason = "Kernelspec Install Failed"


def kernels_dir(*, user: bool = False, sys_prefix: bool = False, prefix: str = "") -> Path:
    """The ``kernels`` directory chosen by ``--user`` / ``--sys-prefix`` / ``--prefix``
    (default: the system-wide Jupyter directory), as ``jupyter kernelspec install`` does."""
    if sum(bool(x) for x in (user, sys_prefix, prefix)) > 1:
        raise InstallError(
            "use only one of --user, --sys-prefix and --prefix", status=400, reason="Bad Request"
        )
    if user:
        return Path(jupyter_data_dir()) / "kernels"
    if sys_prefix:
        return Path(sys.prefix) / "share" / "jupyter" / "kernels"
    if prefix:
        return Path(os.path.abspath(os.path.expanduser(prefix))) / "share" / "jupyter" / "kernels"
    return Path(SYSTEM_JUPYTER_PATH[0]) / "kernels"


def logo_dir(language: str) -> Path | None:
    """A directory with the language's logos on this machine, if one is installed."""
    if language == "python":
        with contextlib.suppress(ImportError):
            import ipykernel

            path = Path(ipykernel.__file__).parent / "resources"
            if path.is_dir():
                return path
    if language == "r":
        for candidate in IRKERNEL_SPEC_DIRS:
            if os.path.isdir(candidate):
                return Path(candidate)
    return None


def launcher_source(module_file: str) -> bytes:
    return resources.files("kernelfleet.launchers").joinpath(module_file).read_bytes()


@dataclass(frozen=True)
class Installed:
    name: str
    path: Path
    replaced: bool
    kernel_json: dict[str, Any]


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)  # umask must not strip the exec bit of run.sh


def stage(spec: SpecFiles, staging: Path, language: str) -> None:
    """Write every file of *spec* into the (empty) directory *staging*."""
    text = json.dumps(spec.kernel_json, indent=2, sort_keys=False) + "\n"
    _write(staging / "kernel.json", text.encode(), 0o644)
    for rel, (content, mode) in spec.files.items():
        _write(staging / rel, content.encode(), mode)
    for rel, module_file in spec.launchers.items():
        _write(staging / rel, launcher_source(module_file), 0o644)
    logos = logo_dir(language)
    if logos is not None:
        for name in LOGO_NAMES:
            src = logos / name
            if src.is_file():
                _write(staging / name, src.read_bytes(), 0o644)
    for sub in [staging, *[p for p in staging.rglob("*") if p.is_dir()]]:
        os.chmod(sub, 0o755)  # noqa: S103 - kernelspecs are world-readable, as Jupyter's


def install(
    opts: SpecOptions, root: Path, *, replace: bool = False, dry_run: bool = False
) -> Installed:
    """Install the kernelspec for *opts* under *root* (a ``kernels`` directory)."""
    dest = root / opts.name
    spec = build_spec(opts, str(dest))
    if dry_run:
        return Installed(spec.name, dest, dest.exists(), spec.kernel_json)
    if dest.exists() and not replace:
        raise Conflict(
            f"kernelspec {opts.name!r} already exists in {root}: pass --replace to replace it "
            "(the old one is kept until the new one is in place)"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        # nested one level down, so the catalog never lists a half-written spec
        holder = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{opts.name}-", dir=root))
    except OSError as exc:
        raise InstallError(f"cannot write in {root}: {exc.strerror or exc}") from exc
    staging = holder / opts.name
    backup: Path | None = None
    try:
        staging.mkdir()
        stage(spec, staging, opts.lang)
        if dest.exists():
            backup = Path(tempfile.mkdtemp(prefix=f"{BACKUP_PREFIX}{opts.name}-", dir=root))
            os.rename(dest, backup / opts.name)
        os.rename(staging, dest)
    except BaseException as exc:
        if backup is not None and (backup / opts.name).exists() and not dest.exists():
            os.rename(backup / opts.name, dest)  # the previous spec is back in place
        shutil.rmtree(holder, ignore_errors=True)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
        if isinstance(exc, OSError):
            raise InstallError(
                f"cannot install kernelspec {opts.name!r} in {root}: {exc.strerror or exc}"
                + ("; the previous version was kept" if backup is not None else "")
            ) from exc
        raise
    shutil.rmtree(holder, ignore_errors=True)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return Installed(spec.name, dest, backup is not None, spec.kernel_json)


# -- reading back ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecRow:
    name: str
    display_name: str
    provisioner: str
    hosts: list[str]
    language: str
    resource_dir: str
    spec: dict[str, Any]

    @property
    def provisioner_config(self) -> dict[str, Any]:
        stanza = (self.spec.get("metadata") or {}).get("kernel_provisioner") or {}
        cfg = stanza.get("config") if isinstance(stanza, dict) else None
        return dict(cfg) if isinstance(cfg, dict) else {}

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "provisioner": self.provisioner,
            "hosts": self.hosts,
            "language": self.language,
            "resource_dir": self.resource_dir,
        }


def spec_manager(extra_dirs: Iterable[str] = ()) -> KernelSpecManager:
    ksm = KernelSpecManager()
    dirs = [str(d) for d in extra_dirs]
    if dirs:
        ksm.kernel_dirs = [*dirs, *ksm.kernel_dirs]
    return ksm


def row_for(name: str, resource_dir: str, spec: dict[str, Any]) -> SpecRow:
    meta = spec.get("metadata") if isinstance(spec.get("metadata"), dict) else {}
    stanza = meta.get("kernel_provisioner") if isinstance(meta, dict) else None
    provisioner = "local-provisioner"
    hosts: list[str] = []
    if isinstance(stanza, dict):
        provisioner = str(stanza.get("provisioner_name") or provisioner)
        cfg = stanza.get("config") if isinstance(stanza.get("config"), dict) else {}
        raw = cfg.get("remote_hosts") if isinstance(cfg, dict) else None
        if isinstance(raw, str):
            hosts = [h.strip() for h in raw.split(",") if h.strip()]
        elif isinstance(raw, list):
            hosts = [str(h) for h in raw]
    foreign = foreign_of(spec)
    if foreign is not None:  # an EG/GP spec: 'spec migrate' converts it
        provisioner = f"{foreign.name or foreign.origin} (not migrated)"
    return SpecRow(
        name=name,
        display_name=str(spec.get("display_name", name)),
        provisioner=provisioner,
        hosts=hosts,
        language=str(spec.get("language", "")),
        resource_dir=resource_dir,
        spec=spec,
    )


def list_specs(ksm: KernelSpecManager) -> list[SpecRow]:
    rows = []
    for name, found in sorted(ksm.get_all_specs().items()):
        rows.append(row_for(name, found["resource_dir"], found["spec"]))
    return rows


def find_spec(ksm: KernelSpecManager, name: str) -> SpecRow:
    for row in list_specs(ksm):
        if row.name == name:
            return row
    raise NotFound(f"no kernelspec named {name!r} (kernelfleet spec list shows the installed ones)")


def remove(ksm: KernelSpecManager, name: str) -> Path:
    """Delete kernelspec *name*: renamed aside first, so it disappears at once."""
    row = find_spec(ksm, name)
    path = Path(row.resource_dir)
    aside = Path(tempfile.mkdtemp(prefix=f"{BACKUP_PREFIX}{name}-", dir=path.parent))
    try:
        os.rename(path, aside / name)
    except OSError as exc:
        shutil.rmtree(aside, ignore_errors=True)
        raise InstallError(f"cannot remove {path}: {exc.strerror or exc}") from exc
    shutil.rmtree(aside, ignore_errors=True)
    return path
