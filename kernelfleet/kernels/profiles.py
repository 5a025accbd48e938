"""Kernel profiles and allowances: "small / medium / large" kernels and who may have how many.

An admin defines profiles (memory, CPUs, idle-cull timeout, most lifetime, which kernelspecs and
backends they apply to) and allowances per user, per group and by default (which profiles, how
many kernels, how much memory in all). A start names a profile with ``KERNEL_PROFILE``, or
through a published kernelspec name ``<spec>--<profile>`` (so stock JupyterLab's kernel picker
offers each pair a user may start, with no client change); without one it gets the default
profile, else the first allowed profile that applies.

Allowances combine: the ``default`` entry, widened by each of the user's groups (their profiles
added, their limits raised), then the user's own entry, which replaces what it sets. A limit of
0 means none.

Everything here is pure (parsing and decisions); :class:`KernelProfiles` holds the options.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from traitlets import Bool, Dict, TraitError, Unicode, observe, validate
from traitlets.config import LoggingConfigurable

from kernelfleet.config import option
from kernelfleet.errors import BadRequest, Forbidden
from kernelfleet.provisioners.base import ResourceLimits

#: What a profile sets in a kernel's env; a client's own values are dropped when profiles are on.
PROFILE_ENV = (
    "KERNEL_PROFILE",
    "KERNEL_MEMORY",
    "KERNEL_CPUS",
    "KERNEL_DRIVER_MEMORY",
    "KERNEL_DRIVER_CORES",
)
#: Between a kernelspec's name and a profile's in a published kernelspec name.
SEPARATOR = "--"
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]{0,31}")
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_PROFILE_KEYS = {
    "display_name",
    "memory",
    "cpus",
    "idle_timeout",
    "max_lifetime",
    "kernelspecs",
    "backends",
}
_ALLOWANCE_KEYS = {"profiles", "max_kernels", "max_memory"}


def parse_memory(value: Any, where: str) -> int:
    """Bytes from ``2G``, ``512MiB``, ``1.5g`` or a plain byte count (binary units)."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a size like 2G or 512M, got {value!r}")
    if isinstance(value, int) and value > 0:
        return value
    match = _QUANTITY.match(str(value)) if isinstance(value, str | float) else None
    if match is None:
        raise ValueError(f"{where}: expected a size like 2G or 512M, got {value!r}")
    number = float(match.group(1)) * _UNITS[match.group(2).upper()]
    if not math.isfinite(number) or number < 1:
        raise ValueError(f"{where}: {value!r} is not a positive size")
    return int(number)


def format_memory(size: int) -> str:
    """``2 GiB``, ``512 MiB``: a size for a message."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a positive number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: expected a positive number, got {value!r}")
    return float(value)


def _names(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: expected a list of names, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class Profile:
    """One kernel profile; ``None`` limits are none."""

    name: str
    display_name: str = ""
    memory: int | None = None  # bytes
    cpus: float | None = None
    idle_timeout: float | None = None  # seconds
    max_lifetime: float | None = None  # seconds
    kernelspecs: tuple[str, ...] = ()  # shell patterns; empty: every kernelspec
    backends: tuple[str, ...] = ()  # empty: every backend

    def applies_to(self, spec_name: str, backend: str) -> bool:
        if self.kernelspecs and not any(
            fnmatch.fnmatchcase(spec_name, p) for p in self.kernelspecs
        ):
            return False
        return not self.backends or backend in self.backends

    def label(self) -> str:
        """What a kernel picker shows after the kernelspec's display name."""
        if self.display_name:
            return self.display_name
        parts = [self.name]
        if self.memory:
            parts.append(format_memory(self.memory))
        if self.cpus:
            parts.append(f"{self.cpus:g} CPU")
        return parts[0] if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"

    def limits(self) -> ResourceLimits | None:
        """The limits a backend enforces for one kernel (None: this profile sets none)."""
        if not self.memory and not self.cpus:
            return None
        return ResourceLimits(profile=self.name, memory=self.memory, cpus=self.cpus)

    def env(self) -> dict[str, str]:
        """What the other backends read for their limits: containers and pods KERNEL_MEMORY
        (MiB) and KERNEL_CPUS, YARN the Spark driver's memory and cores (the kernel is the
        driver, in the application master's container)."""
        out = {"KERNEL_PROFILE": self.name}
        if self.memory:
            mib = max(1, self.memory // 1024**2)
            out["KERNEL_MEMORY"] = f"{mib}Mi"
            out["KERNEL_DRIVER_MEMORY"] = f"{mib}m"
        if self.cpus:
            out["KERNEL_CPUS"] = f"{self.cpus:g}"
            out["KERNEL_DRIVER_CORES"] = str(max(1, math.ceil(self.cpus)))
        return out


def parse_profiles(raw: Mapping[str, Any]) -> dict[str, Profile]:
    """The ``profiles`` option as :class:`Profile` objects; ValueError naming the bad field."""
    out: dict[str, Profile] = {}
    for name, body in raw.items():
        where = f"profile {name!r}"
        if not isinstance(name, str) or not PROFILE_NAME.fullmatch(name):
            raise ValueError(f"{where}: a name is 1-32 letters, digits, _ or . (no '-')")
        if not isinstance(body, Mapping):
            raise ValueError(f"{where}: expected an object of settings")
        unknown = set(body) - _PROFILE_KEYS
        if unknown:
            raise ValueError(
                f"{where}: unknown setting {sorted(unknown)[0]!r}; known: {sorted(_PROFILE_KEYS)}"
            )
        g = body.get
        out[name] = Profile(
            name=name,
            display_name=str(g("display_name") or ""),
            memory=(
                parse_memory(g("memory"), f"{where} memory") if g("memory") is not None else None
            ),
            cpus=_positive(g("cpus"), f"{where} cpus") if g("cpus") is not None else None,
            idle_timeout=(
                _positive(g("idle_timeout"), f"{where} idle_timeout")
                if g("idle_timeout") is not None
                else None
            ),
            max_lifetime=(
                _positive(g("max_lifetime"), f"{where} max_lifetime")
                if g("max_lifetime") is not None
                else None
            ),
            kernelspecs=_names(g("kernelspecs", ()), f"{where} kernelspecs"),
            backends=_names(g("backends", ()), f"{where} backends"),
        )
    return out


@dataclass(frozen=True)
class Allowance:
    """What one user may have: ``profiles`` None is every profile; 0 limits are none."""

    profiles: frozenset[str] | None = None
    max_kernels: int = 0
    max_memory: int = 0  # bytes

    def allows(self, profile: str) -> bool:
        return self.profiles is None or profile in self.profiles


def _allowance_entry(body: Any, where: str) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise ValueError(f"{where}: expected an object with profiles, max_kernels, max_memory")
    unknown = set(body) - _ALLOWANCE_KEYS
    if unknown:
        raise ValueError(
            f"{where}: unknown setting {sorted(unknown)[0]!r}; known: {sorted(_ALLOWANCE_KEYS)}"
        )
    out: dict[str, Any] = {}
    if "profiles" in body:
        out["profiles"] = frozenset(_names(body["profiles"], f"{where} profiles"))
    if "max_kernels" in body:
        value = body["max_kernels"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{where} max_kernels: expected a whole number >= 0, got {value!r}")
        out["max_kernels"] = value
    if "max_memory" in body:
        value = body["max_memory"]
        out["max_memory"] = 0 if value in (0, "0") else parse_memory(value, f"{where} max_memory")
    return out


def check_allowances(raw: Mapping[str, Any]) -> None:
    """ValueError naming the first bad entry of the ``allowances`` option (a profile name no
    profile has is no error: profiles and allowances may change in either order)."""
    unknown = set(raw) - {"default", "groups", "users"}
    if unknown:
        raise ValueError(
            f"allowances: unknown key {sorted(unknown)[0]!r}; use default, groups and users"
        )
    if "default" in raw:
        _allowance_entry(raw["default"], "allowances default")
    for kind in ("groups", "users"):
        table = raw.get(kind, {})
        if not isinstance(table, Mapping):
            raise ValueError(f"allowances {kind}: expected an object of name -> allowance")
        for name, body in table.items():
            _allowance_entry(body, f"allowances {kind} {name!r}")


def allowance_for(user: str, groups: Iterable[str], raw: Mapping[str, Any]) -> Allowance:
    """The user's allowance (see the module docstring for how entries combine)."""
    merged = _allowance_entry(raw.get("default", {}), "default")
    group_table = raw.get("groups", {})
    for group in sorted(groups):
        if group in group_table:
            entry = _allowance_entry(group_table[group], f"group {group}")
            if "profiles" in entry:
                merged["profiles"] = merged.get("profiles", frozenset()) | entry["profiles"]
            for key in ("max_kernels", "max_memory"):
                if key in entry:
                    old = merged.get(key)
                    merged[key] = entry[key] if old is None else _wider(old, entry[key])
    merged.update(_allowance_entry(raw.get("users", {}).get(user, {}), f"user {user}"))
    return Allowance(**merged)


def _wider(a: int, b: int) -> int:
    return 0 if a == 0 or b == 0 else max(a, b)


def split_published(name: str, profiles: Mapping[str, Profile]) -> tuple[str, str | None]:
    """``python3--large`` → (``python3``, ``large``) when ``large`` is a profile."""
    base, sep, suffix = name.rpartition(SEPARATOR)
    if sep and base and suffix in profiles:
        return base, suffix
    return name, None


def choose_profile(
    *,
    spec_name: str,
    backend: str,
    requested: str | None,
    default: str,
    profiles: Mapping[str, Profile],
    allowance: Allowance,
    user: str,
) -> Profile | None:
    """The profile a start runs with (None: no profile applies to this kernelspec)."""
    usable = [p for p in profiles.values() if p.applies_to(spec_name, backend)]
    if requested:
        profile = profiles.get(requested)
        if profile is None:
            known = ", ".join(sorted(profiles)) or "none"
            raise BadRequest(f"No kernel profile named {requested!r}; the profiles are: {known}.")
        if not profile.applies_to(spec_name, backend):
            fits = ", ".join(p.name for p in usable) or "none"
            raise BadRequest(
                f"Profile {requested!r} does not apply to kernelspec {spec_name!r}; "
                f"profiles for it: {fits}."
            )
        if not allowance.allows(requested):
            raise Forbidden(
                f"Profile {requested!r} is not allowed for {user}; allowed: "
                f"{', '.join(sorted(allowance.profiles or ())) or 'none'}.",
                reason="Profile Not Allowed",
            )
        return profile
    if not usable:
        return None
    allowed = [p for p in usable if allowance.allows(p.name)]
    if not allowed:
        raise Forbidden(
            f"No profile for kernelspec {spec_name!r} is allowed for {user} (its profiles: "
            f"{', '.join(p.name for p in usable)}); ask an admin for one.",
            reason="Profile Not Allowed",
        )
    chosen = next((p for p in allowed if p.name == default), allowed[0])
    return chosen


def offered(
    spec_name: str, backend: str, table: ProfileTable, allowance: Allowance
) -> list[Profile] | None:
    """The profiles to publish a kernelspec with for one user, the default first (an empty
    list: none is allowed, the kernelspec is not listed); None: list it as it is (profiles
    are not published, or none applies to it)."""
    if not (table.publish and table.profiles):
        return None
    usable = [p for p in table.profiles.values() if p.applies_to(spec_name, backend)]
    if not usable:
        return None
    allowed = [p for p in usable if allowance.allows(p.name)]
    return sorted(allowed, key=lambda p: p.name != table.default)


def published_model(model: Mapping[str, Any], profile: Profile) -> dict[str, Any]:
    """A kernelspec model (the API's) as the pair kernelspec x *profile*."""
    spec = dict(model["spec"])
    spec["display_name"] = f"{spec.get('display_name') or model['name']} — {profile.label()}"
    metadata = dict(spec.get("metadata") or {})
    metadata["kernelfleet_profile"] = profile.name
    spec["metadata"] = metadata
    return {**model, "name": f"{model['name']}{SEPARATOR}{profile.name}", "spec": spec}


@dataclass(frozen=True)
class Usage:
    """What a user's live kernels take now."""

    kernels: int = 0
    memory: int = 0  # bytes, of the kernels whose profile sets memory


def check_allowance(user: str, profile: Profile | None, allowance: Allowance, usage: Usage) -> None:
    """Forbidden naming the limit a new kernel would pass, and what is allowed."""
    if allowance.max_kernels and usage.kernels >= allowance.max_kernels:
        raise Forbidden(
            f"{user} has {usage.kernels} kernel(s), the most allowed is {allowance.max_kernels}; "
            "shut one down first.",
            reason="Allowance Exceeded",
        )
    wanted = profile.memory if profile is not None and profile.memory else 0
    if allowance.max_memory and usage.memory + wanted > allowance.max_memory:
        raise Forbidden(
            f"{user}'s kernels would use {format_memory(usage.memory + wanted)} of memory, the "
            f"most allowed is {format_memory(allowance.max_memory)}; shut one down or pick a "
            "smaller profile.",
            reason="Allowance Exceeded",
        )


@dataclass(frozen=True)
class ProfileTable:
    """The parsed options at one moment (a reload swaps the whole table)."""

    profiles: dict[str, Profile] = field(default_factory=dict)
    allowances: Mapping[str, Any] = field(default_factory=dict)
    default: str = ""
    publish: bool = True

    @property
    def active(self) -> bool:
        """Whether profiles or allowances are configured at all."""
        return bool(self.profiles or self.allowances)


class KernelProfiles(LoggingConfigurable):
    """The options of kernel profiles (see the module docstring)."""

    profiles = option(
        Dict(
            help="""Kernel profiles by name, e.g. {"small": {"memory": "2G", "cpus": 1,
            "idle_timeout": 3600, "max_lifetime": 86400, "kernelspecs": ["python*"],
            "backends": ["ssh"]}} (a JSON object in the environment). memory: bytes or a
            size with K/M/G/T (binary); cpus: CPUs; idle_timeout and max_lifetime: seconds;
            kernelspecs: name patterns; backends: local, ssh, yarn, k8s, docker. Every
            setting is optional. Default: {} (no profiles).""",
        ),
        "KF_PROFILES",
    )
    allowances = option(
        Dict(
            help="""Who may use which profiles and how much: {"default": {...}, "groups":
            {"<group>": {...}}, "users": {"<user>": {...}}}, each entry with profiles (a
            list), max_kernels (a count) and max_memory (a size; the sum of the memory of a
            user's kernels). Groups widen the default; a user's entry replaces what it sets.
            Default: {} (every profile, no limits).""",
        ),
        "KF_ALLOWANCES",
    )
    default_profile = option(
        Unicode(
            "",
            help="""The profile of a start that names none (else the first allowed profile
            that applies to its kernelspec). Default: none.""",
        ),
        "KF_DEFAULT_PROFILE",
    )
    publish_profiles = option(
        Bool(
            True,
            help="""List each kernelspec x allowed profile pair as a kernelspec of its own
            (<spec>--<profile>, "Display name — profile") for each user, so stock JupyterLab
            offers them; kernelspecs no profile applies to are listed as they are.
            Default: true.""",
        ),
        "KF_PUBLISH_PROFILES",
    )

    @validate("profiles")
    def _check_profiles(self, proposal: Any) -> Any:
        try:
            parse_profiles(proposal["value"])
        except ValueError as exc:
            raise TraitError(str(exc)) from None
        return proposal["value"]

    @validate("allowances")
    def _check_allowances(self, proposal: Any) -> Any:
        try:
            check_allowances(proposal["value"])
        except ValueError as exc:
            raise TraitError(str(exc)) from None
        return proposal["value"]

    _table: ProfileTable | None = None

    @observe("profiles", "allowances", "default_profile", "publish_profiles")
    def _forget_table(self, change: Any) -> None:
        self._table = None

    def table(self) -> ProfileTable:
        """The options, parsed once per change (every start, cull round, listing and scrape
        reads them)."""
        if self._table is None:
            self._table = ProfileTable(
                profiles=parse_profiles(self.profiles),
                allowances=self.allowances,
                default=self.default_profile,
                publish=self.publish_profiles,
            )
        return self._table
