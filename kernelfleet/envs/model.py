"""Kernel environments as data (pure): names, package lists, the record of a built environment,
quotas, the ``uv`` command lines, and what a resolver's failure means to a user.

Nothing here does I/O. A package list comes from a user (the CLI, the dashboard's form, the
admin API), so :func:`parse_requirements` accepts only what an index resolves by name:
``name``, ``name[extra]``, version specifiers and environment markers. Anything that would let
a build reach past the configured index or run a local file is refused with the line named:
URLs (``pkg @ https://…``), paths, and pip options (``-e``, ``-r``, ``--index-url``,
``--extra-index-url``, ``-f``, …). ``ipykernel`` is added when it is missing, because every
environment is a kernel.

The resolver is ``uv`` (``uv pip compile`` then ``uv pip sync``; why uv and not pip:
:mod:`kernelfleet.envs.build`). :func:`resolver_error` turns its last words into one line that
names the package and the reason, cause first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from kernelfleet.errors import BadRequest, Forbidden, LimitReached, PublicError

#: An environment's name: also the default name of its kernelspec and a directory name.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
MAX_REQUIREMENTS = 200
MAX_REQUIREMENT_CHARS = 300
#: A Python version as ``--python`` may give it: ``3``, ``3.11`` or ``3.11.2``.
VERSION_RE = re.compile(r"^3(\.\d{1,2}){0,2}$")
KERNEL_PACKAGE = "ipykernel"
#: States of a record: ``building`` holds the name (and counts in quotas) while it builds.
STATES = ("building", "ready")
RECORD_VERSION = 1


class EnvError(BadRequest):
    """A request for an environment that cannot be built as asked (the message says why)."""


class BuildFailed(PublicError):
    """The package index or a build refused: the message names the package and the reason."""

    status = 422
    reason = "Environment Build Failed"


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise EnvError(
            f"Environment name {str(name)[:70]!r} is not valid: use lower-case letters, digits, "
            "'.', '_' and '-' (at most 63, starting with a letter or digit)."
        )
    return name


def parse_requirements(lines: Iterable[str]) -> list[str]:
    """The requirement strings of *lines* (package arguments or a requirements file's lines),
    checked and normalised; ``ipykernel`` added if absent. :class:`EnvError` names the line."""
    out: list[str] = []
    names: set[str] = set()
    for number, raw in enumerate(lines, 1):
        if not isinstance(raw, str):
            raise EnvError(f"Package {number} is not text.")
        text = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not text:
            continue
        shown = text[:80]
        if len(text) > MAX_REQUIREMENT_CHARS:
            raise EnvError(f"Package {shown!r}…: a requirement is at most 300 characters.")
        if text.startswith("-"):
            raise EnvError(
                f"{shown!r}: pip options are not accepted in a package list (the index and the "
                "build settings are the gateway's). List package names and versions only."
            )
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            reason = str(exc).splitlines()[0][:120]
            raise EnvError(
                f"{shown!r} is not a package requirement ({reason}). Write e.g. "
                "'pandas==2.2.*' or 'scikit-learn>=1.4'."
            ) from None
        if req.url:
            raise EnvError(
                f"{shown!r}: packages come from the package index only; a URL or path is "
                "not accepted. Name the package and a version instead."
            )
        key = canonicalize_name(req.name)
        if key in names:
            raise EnvError(f"Package {req.name!r} is listed twice: list it once.")
        names.add(key)
        out.append(str(req))
        if len(out) > MAX_REQUIREMENTS:
            raise EnvError(f"An environment lists at most {MAX_REQUIREMENTS} packages.")
    if KERNEL_PACKAGE not in names:
        out.append(KERNEL_PACKAGE)
    return out


def parse_lock(text: str) -> dict[str, str]:
    """``{name: version}`` of a lock (``uv pip compile`` output, or ``pip freeze``)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "-")):
            continue
        head = line.split(";", 1)[0].split("\\", 1)[0].strip()
        if "==" in head:
            name, version = head.split("==", 1)
            out[canonicalize_name(name.split("[", 1)[0].strip())] = version.strip()
    return out


@dataclass
class EnvRecord:
    """What ``env.json`` holds about one environment."""

    name: str
    owner: str
    kind: str
    kernel_name: str
    python: str  # the interpreter it was built with (a path)
    python_version: str = ""
    requirements: list[str] = field(default_factory=list)
    lock: str = ""  # ``uv pip compile --generate-hashes`` output: exact versions and hashes
    state: str = "building"
    sha256: str = ""
    size_bytes: int = 0
    files: int = 0
    created: float = 0.0
    build_seconds: float = 0.0
    authorized_users: list[str] = field(default_factory=list)
    authorized_groups: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)  # SSH hosts it was shipped to
    archive_uri: str = ""  # YARN: where the archive is (``file:///…/<sha256>.tar.gz``)
    image: str = ""  # containers: the image with the environment's layer
    allow_source: bool = False
    version: int = RECORD_VERSION

    @property
    def digest12(self) -> str:
        return self.sha256[:12]

    @property
    def locked(self) -> dict[str, str]:
        return parse_lock(self.lock)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> EnvRecord:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("env.json is not an object")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def summary(self) -> dict[str, Any]:
        """The record as the API shows it (without the lock's hashes)."""
        out = asdict(self)
        out["lock"] = dict(sorted(self.locked.items()))
        return out


# -- quotas ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quota:
    """Who may create environments and how much: the admin's settings."""

    creators: frozenset[str] = frozenset()  # user names; admins always may
    creator_groups: frozenset[str] = frozenset()
    max_per_user: int = 5
    max_disk_mb_per_user: float = 10240.0


@dataclass(frozen=True)
class Usage:
    envs: int
    bytes: int

    @property
    def mb(self) -> float:
        return self.bytes / 1e6


def usage_of(owner: str, records: Iterable[EnvRecord]) -> Usage:
    mine = [r for r in records if r.owner == owner]
    return Usage(len(mine), sum(r.size_bytes for r in mine))


def check_may_create(user: str, admin: bool, groups: Iterable[str], quota: Quota) -> None:
    if admin or user in quota.creators or quota.creator_groups & set(groups):
        return
    raise Forbidden(
        f"User '{user}' may not create kernel environments. An admin can add the user to "
        "env_creators (KF_ENV_CREATORS) or a group of theirs to KF_ENV_CREATOR_GROUPS.",
        reason="Not an Environment Creator",
    )


def check_count(owner: str, usage: Usage, quota: Quota) -> None:
    if usage.envs >= quota.max_per_user:
        raise LimitReached(
            f"User '{owner}' has {usage.envs} environments, the limit per user "
            f"(max_envs_per_user = {quota.max_per_user}). Remove one with "
            "'kernelfleet env remove NAME' first, or ask an admin to raise KF_ENV_MAX_PER_USER."
        )


def check_disk(owner: str, usage: Usage, new_bytes: int, quota: Quota) -> None:
    total_mb = (usage.bytes + new_bytes) / 1e6
    if total_mb > quota.max_disk_mb_per_user:
        raise LimitReached(
            f"User '{owner}''s environments would take {total_mb:.0f} MB, over the disk limit "
            f"per user (max_env_disk_mb_per_user = {quota.max_disk_mb_per_user:g} MB; this one "
            f"is {new_bytes / 1e6:.0f} MB). Remove an environment, or ask an admin to raise "
            "KF_ENV_MAX_DISK_MB."
        )


# -- uv command lines ---------------------------------------------------------------------


@dataclass(frozen=True)
class UvArgs:
    """What every ``uv`` call of a build shares."""

    uv: str
    index_url: str
    cache_dir: str
    source_builds: bool = False  # False: wheels only (no package code runs while installing)
    compile_bytecode: bool = True

    def common(self) -> list[str]:
        args = [
            "--index-url", self.index_url, "--no-config", "--color", "never",
            "--cache-dir", self.cache_dir, "--python-preference", "only-system",
            "--no-python-downloads",
        ]  # fmt: skip
        return args + ([] if self.source_builds else ["--only-binary", ":all:"])

    def bytecode(self) -> list[str]:
        return ["--compile-bytecode"] if self.compile_bytecode else []


def compile_argv(
    uv: UvArgs, python: str, requirements_in: str, lock_out: str, constraints: str = ""
) -> list[str]:
    """Resolve *requirements_in* for *python* into a lock with exact versions and hashes;
    with *constraints* (what was installed), to exactly those versions."""
    return [
        uv.uv, "pip", "compile", "--quiet", *uv.common(), "--python", python,
        "--generate-hashes", "--no-header", "--no-annotate", requirements_in,
        *(["--constraint", constraints] if constraints else []),
        "--output-file", lock_out,
    ]  # fmt: skip


def install_argv(uv: UvArgs, venv_python: str, requirements_in: str) -> list[str]:
    """Resolve and install in one pass (downloads start while resolving)."""
    return [
        uv.uv, "pip", "install", *uv.common(), "--python", venv_python,
        "--link-mode", "copy", *uv.bytecode(), "-r", requirements_in,
    ]  # fmt: skip


def venv_argv(uv: UvArgs, python: str, dest: str) -> list[str]:
    """A relocatable virtual environment (scripts and activation find their own directory)."""
    return [
        uv.uv, "venv", "--quiet", "--relocatable", "--no-config", "--color", "never",
        "--python-preference", "only-system", "--no-python-downloads",
        "--cache-dir", uv.cache_dir, "--python", python, dest,
    ]  # fmt: skip


def sync_argv(uv: UvArgs, venv_python: str, lock: str) -> list[str]:
    """Install exactly the lock (its hashes checked) into the environment of *venv_python*."""
    return [
        uv.uv, "pip", "sync", *uv.common(), "--python", venv_python, "--require-hashes",
        "--link-mode", "copy", *uv.bytecode(), lock,
    ]  # fmt: skip


def freeze_argv(uv: UvArgs, venv_python: str) -> list[str]:
    return [uv.uv, "pip", "freeze", "--no-config", "--color", "never", "--python", venv_python]


# -- what a failure means -------------------------------------------------------------------

_NOT_FOUND = re.compile(r"\b([A-Za-z0-9][A-Za-z0-9._-]*) was not found in the package registry")
_NO_VERSION = re.compile(r"there (?:is|are) no versions? of ([^\s,]+)")
_NO_WHEEL = re.compile(
    r"\b([A-Za-z0-9][A-Za-z0-9._-]*)(?:==[^\s]+)? (?:has|have) no (?:usable|compatible) wheels?"
)
_BUILD_FAIL = re.compile(r"Failed to build `([^`]+)`")
_PYTHON_REQ = re.compile(r"requires Python ([^\s,]+)")


def resolver_error(lines: Sequence[str], index_url: str) -> str:
    """One line naming the package and the reason, from the last lines ``uv`` printed."""
    text = "\n".join(line.strip() for line in lines if line.strip())
    cause = ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith(("cause:", "Caused by:", "╰─▶")):
            cause = stripped.split(":", 1)[-1].strip() if ":" in stripped[:11] else stripped
    found = _NOT_FOUND.search(text)
    if found:
        return (
            f"Package '{found.group(1)}' was not found in the package index ({index_url}). "
            "Check its name there."
        )
    version = _NO_VERSION.search(text)
    if version:
        spec = version.group(1)
        why = _PYTHON_REQ.search(text)
        extra = f" (it requires Python {why.group(1)})" if why else ""
        return (
            f"Package '{spec}' does not resolve: no version matches{extra}. Loosen the version "
            f"or pick one the index ({index_url}) has."
        )
    wheel = _NO_WHEEL.search(text)
    if wheel:
        return (
            f"Package '{wheel.group(1)}' has no wheel for this Python and platform, and source "
            "builds are off. Pick a version with wheels, or ask an admin to allow source builds "
            "(KF_ENV_ALLOW_SOURCE_BUILDS)."
        )
    build = _BUILD_FAIL.search(text)
    if build:
        return f"Package '{build.group(1)}' failed to build from source: {cause or text[-300:]}"
    last = cause or (text.splitlines()[-1] if text else "no output")
    return f"The environment could not be built: {last[:400]}"
