"""Configuration helpers: one way to declare an option with its environment variable.

Every kernelfleet option is a traitlets trait declared with :func:`option`. That single call
tags the trait ``config=True`` (so it is a ``--Class.name`` flag and a config-file entry), records
its ``KF_…`` environment variable in the trait metadata, and appends the variable's name to the
help text, so ``--help-all`` and ``--generate-config`` document it.

Precedence, lowest first: the trait default, the environment variable, the config file, the
command line. The environment is read once, when the application initialises
(:func:`config_from_env`), never at import time or in a class body.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from traitlets import Bool, Container, Dict, TraitType
from traitlets.config import Config, Configurable

T = TypeVar("T", bound=TraitType[Any, Any])

#: Prefixes accepted as aliases of a ``KF_`` variable, for admins migrating from the anchors.
ALIAS_PREFIXES = ("EG_", "GP_")


def option(trait: T, env: str, *aliases: str) -> T:
    """Declare *trait* as a configurable option read from the environment variable *env*.

    *aliases* are further variable names accepted when *env* is unset (for example the
    Enterprise Gateway spelling), in order of preference.
    """
    names = (env, *aliases)
    trait.metadata["env"] = names
    shown = " or ".join(names)
    # Help written as an indented triple-quoted string reads as one paragraph in --help.
    help_text = " ".join((trait.help or "").split())
    trait.help = f"{help_text}\nEnvironment variable: {shown}."
    return trait.tag(config=True)


class EnvError(ValueError):
    """An environment variable holds a value its option cannot take."""


def _parse(trait: TraitType[Any, Any], name: str, raw: str) -> Any:
    try:
        if isinstance(trait, Bool):
            low = raw.strip().lower()
            if low in {"1", "true", "yes", "on"}:
                return True
            if low in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        if isinstance(trait, Dict):
            value = json.loads(raw) if raw.strip() else {}
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return value
        if isinstance(trait, Container):
            text = raw.strip()
            if text.startswith("["):
                items = json.loads(text)
            else:
                items = [part.strip() for part in text.split(",") if part.strip()]
            return trait.from_string_list([str(i) for i in items])
        return trait.from_string(raw)
    except (ValueError, TypeError) as exc:
        raise EnvError(f"environment variable {name}={raw!r} is not valid: {exc}") from exc


def config_from_env(
    classes: Iterable[type[Configurable]], environ: Mapping[str, str] | None = None
) -> Config:
    """Build a :class:`Config` from the ``KF_…`` variables of *environ* (default ``os.environ``).

    Raises :class:`EnvError` naming the variable when a value does not parse, so a typo in a
    unit file fails at start with a clear message instead of being ignored.
    """
    env = os.environ if environ is None else environ
    cfg = Config()
    for cls in classes:
        for trait_name, trait in cls.class_traits(config=True).items():
            names = trait.metadata.get("env")
            if not names:
                continue
            for var in names:
                if var in env:
                    cfg[cls.__name__][trait_name] = _parse(trait, var, env[var])
                    break
    return cfg


def env_names(cls: type[Configurable]) -> dict[str, str]:
    """Map each option of *cls* to its primary environment variable (for docs and tests)."""
    out: dict[str, str] = {}
    for trait_name, trait in cls.class_traits(config=True).items():
        names = trait.metadata.get("env")
        if names:
            out[trait_name] = names[0]
    return out


def with_env_defaults(cls: type[Configurable], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor kwargs with the ``KF_*`` environment as the lowest-precedence config.

    Precedence, highest first: kernelspec ``config`` (constructor kwargs), the application's
    config (the parent's), the environment, the trait default.
    """
    env_cfg = config_from_env([cls])
    if not env_cfg:
        return kwargs
    parent = kwargs.get("parent")
    base = kwargs.get("config")
    if base is None and parent is not None:
        base = getattr(parent, "config", None)
    merged = Config()
    merged.merge(env_cfg)
    if base is not None:
        merged.merge(base)
    return {**kwargs, "config": merged}
