"""The kernelspec form: its fields, parsing a submitted form into the same
:class:`~kernelfleet.specs.options.SpecOptions` that ``kernelfleet spec install`` builds, and
validation messages that say which field to fix and how (pure).

The fields are the install command's options: the shared ones (:data:`COMMON_FIELDS`) and, for
each spec kind (the backend), that kind's own option traits (:func:`kind_fields`), so a kind
added to :data:`kernelfleet.specs.kinds.KINDS` appears in the form with no change here. The
checks are the installer's own (:func:`kernelfleet.specs.builders.validate`); its messages name
the command-line flag (``--remote-hosts: 'x y' is not a host name``), which
:func:`field_error` turns into the form's field and label.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from traitlets import Bool, CaselessStrEnum, Container, Dict, Enum, Float, Int, TraitType

from kernelfleet.errors import PublicError
from kernelfleet.specs import builders, kinds
from kernelfleet.specs.kinds import flag_of
from kernelfleet.specs.options import INIT_MODES, LANGUAGES, SpecOptions


@dataclass(frozen=True)
class Field:
    """One input of the form. *option*: the :class:`SpecOptions` attribute or the kind's option
    trait it sets; *kind*: the spec kind that owns it ("" for every kind)."""

    name: str
    label: str
    widget: str  # text, number, select, checkbox, list (one per line or comma), pairs (k=v)
    option: str
    kind: str = ""
    help: str = ""
    choices: tuple[str, ...] = ()


COMMON_FIELDS: tuple[Field, ...] = (
    Field("kernel_name", "Kernel name", "text", "kernel_name",
          help="Letters, digits, '.', '_' and '-'. Empty: <backend>_<language>[_spark]."),
    Field("display_name", "Display name", "text", "display_name",
          help="What users see in JupyterLab's launcher. Empty: derived from the language, "
          "backend and hosts."),
    Field("language", "Language", "select", "language", choices=LANGUAGES,
          help="python (ipykernel), r (IRkernel) or scala (Apache Toree, always with Spark)."),
    Field("python", "Python", "text", "python",
          help="The interpreter that runs the kernel; it must exist at this path on every host."),
    Field("authorized_users", "Authorized users", "list", "authorized_users",
          help="Users allowed to start this kernelspec, one per line or comma-separated. "
          "Empty: everyone the gateway allows."),
    Field("unauthorized_users", "Refused users", "list", "unauthorized_users",
          help="Users refused this kernelspec, one per line or comma-separated."),
    Field("authorized_groups", "Authorized groups", "list", "authorized_groups",
          help="Groups (as JupyterHub reports them) whose members may start this kernelspec, "
          "one per line or comma-separated."),
    Field("launch_timeout", "Launch timeout (s)", "number", "launch_timeout",
          help="Seconds a kernel may take to start. Empty: the backend's default (60 s; YARN "
          "longer)."),
    Field("spark", "Spark", "checkbox", "spark",
          help="Start the kernel through spark-submit with a Spark session."),
    Field("spark_master", "Spark master", "text", "spark_master",
          help="yarn, spark://host:port or local[N]."),
    Field("spark_home", "Spark home", "text", "spark_home",
          help="Spark's directory on the hosts. Empty: the backend's default."),
    Field("spark_init_mode", "Spark session", "select", "spark_init_mode",
          choices=("", *INIT_MODES),
          help="When the Spark session is created: lazy, eager or none. Empty: the backend's "
          "default."),
    Field("extra_spark_opts", "Extra Spark options", "text", "extra_spark_opts",
          help="More spark-submit options, e.g. --conf spark.executor.memory=2g."),
    Field("toree_jar", "Toree jar", "text", "toree_jar",
          help="Scala only: Apache Toree's assembly jar on the hosts."),
    Field("ipykernel_subclass_name", "Kernel class", "text", "ipykernel_subclass_name",
          help="Python only: an ipykernel subclass, 'module.Class'."),
)  # fmt: skip

#: Options whose empty value means the default (the kind's, or the install command's).
_EMPTY_IS_DEFAULT = frozenset(
    {"launch_timeout", "spark_home", "spark_init_mode", "spark_master", "ipykernel_subclass_name"}
)
_SPLIT = re.compile(r"[,\n]")
_FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def _label(name: str) -> str:
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _help(trait: TraitType[Any, Any]) -> str:
    text = (trait.help or "").split("\nEnvironment variable")[0]
    return " ".join(text.split())


def _widget(trait: TraitType[Any, Any]) -> str:
    if isinstance(trait, Bool):
        return "checkbox"
    if isinstance(trait, Dict):
        return "pairs"
    if isinstance(trait, Container):
        return "list"
    if isinstance(trait, Int | Float):
        return "number"
    if isinstance(trait, Enum | CaselessStrEnum):
        return "select"
    return "text"


def kind_fields(kind: str) -> tuple[Field, ...]:
    """The form fields of spec kind *kind*'s own options."""
    cls = kinds.kind_class(kind)
    out = []
    for name, trait in cls.option_traits().items():
        widget = _widget(trait)
        choices: tuple[str, ...] = ()
        if widget == "select":
            choices = tuple(str(v) for v in (getattr(trait, "values", None) or ()))
        out.append(
            Field(f"{kind}__{name}", _label(name), widget, name, kind, _help(trait), choices)
        )
    return tuple(out)


def all_fields(kind: str) -> tuple[Field, ...]:
    return (*COMMON_FIELDS, *kind_fields(kind))


def default_values() -> dict[str, Any]:
    """The form of a new kernelspec: the install command's defaults, for every kind."""
    values: dict[str, Any] = {
        "kind": "ssh",
        "kernel_name": "",
        "display_name": "",
        "language": "python",
        "python": sys.executable,
        "authorized_users": [],
        "unauthorized_users": [],
        "authorized_groups": [],
        "launch_timeout": "",
        "spark": False,
        "spark_master": "yarn",
        "spark_home": "",
        "spark_init_mode": "",
        "extra_spark_opts": "",
        "toree_jar": "",
        "ipykernel_subclass_name": "ipykernel.ipkernel.IPythonKernel",
    }
    for kind, cls in kinds.KINDS.items():
        traits = cls.option_traits()
        for f in kind_fields(kind):
            default = traits[f.option].default()
            values[f.name] = _shown(default)
    return values


def _shown(value: Any) -> Any:
    if isinstance(value, dict):
        return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()]
    if isinstance(value, list | tuple | set | frozenset):
        return [str(v) for v in value]
    if value is None:
        return ""
    return value


def values_from_spec(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The form's values for editing *spec* (a kernel.json), or None if ``kernelfleet spec
    install`` did not write it (the form would replace what it does not know about)."""
    meta = spec.get("metadata") if isinstance(spec.get("metadata"), dict) else {}
    ours = meta.get("kernelfleet") if isinstance(meta, dict) else None
    if not isinstance(ours, dict) or str(ours.get("kind")) not in kinds.KINDS:
        return None
    kind = str(ours["kind"])
    stanza = meta.get("kernel_provisioner") if isinstance(meta, dict) else None
    config = stanza.get("config") if isinstance(stanza, dict) else None
    config = config if isinstance(config, dict) else {}
    env = spec.get("env") if isinstance(spec.get("env"), dict) else {}
    spark = ours.get("spark") if isinstance(ours.get("spark"), dict) else None
    values = default_values()
    values.update(
        kind=kind,
        display_name=str(spec.get("display_name", "")),
        language=str(ours.get("language") or "python"),
        python=str(ours.get("python") or values["python"]),
        authorized_users=_shown(config.get("authorized_users") or []),
        unauthorized_users=_shown(config.get("unauthorized_users") or []),
        authorized_groups=_shown(config.get("authorized_groups") or []),
        launch_timeout=_shown(config.get("launch_timeout")),
        spark=spark is not None and str(ours.get("language")) != "scala",
    )
    if spark is not None:
        values.update(
            spark_master=str(spark.get("master") or values["spark_master"]),
            spark_home=str(spark.get("home") or ""),
            spark_init_mode=str(spark.get("init_mode") or ""),
        )
    if isinstance(env, dict) and env.get("TOREE_JAR"):
        values["toree_jar"] = str(env["TOREE_JAR"])
    for f in kind_fields(kind):
        if f.option in config:
            values[f.name] = _shown(config[f.option])
        elif isinstance(env, dict) and f.option.upper() in env:  # e.g. HADOOP_CONF_DIR
            values[f.name] = str(env[f.option.upper()])
    return values


@dataclass
class FormResult:
    """A submitted form: its values as typed (shown again on error), the options when they
    are valid, and the errors by field name ("" for the form as a whole)."""

    values: dict[str, Any]
    options: SpecOptions | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.options is not None and not self.errors


def _items(text: str) -> list[str]:
    return [part.strip() for part in _SPLIT.split(text) if part.strip()]


def _pairs(text: str, label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{label}: write one key=value per line, not {line.strip()[:80]!r}")
        try:
            out[key.strip()] = json.loads(value.strip())
        except ValueError:
            out[key.strip()] = value.strip()
    return out


def parse_field(f: Field, raw: Mapping[str, str]) -> tuple[Any, Any]:
    """Field *f* of a submitted form *raw*: (value to show again, value for the options; None:
    leave the option unset). :class:`ValueError` says what is wrong with it, by its label."""
    text = raw.get(f.name, "")
    if f.widget == "checkbox":  # a browser leaves an unchecked box out
        on = f.name in raw and text not in {"", "0", "off", "false"}
        return on, on
    if f.name not in raw:
        return "", None  # not submitted: the default
    if f.widget == "list":
        items = _items(text)
        return items, tuple(items)
    if f.widget == "pairs":
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines, _pairs(text, f.label)
    if f.widget == "number":
        shown = text.strip()
        if not shown:
            return "", None
        try:
            number = int(shown) if f.option != "launch_timeout" and shown.isdigit() else None
            parsed: Any = number if number is not None else float(shown)
        except ValueError:
            raise ValueError(f"{f.label} must be a number, not {shown[:40]!r}") from None
        if isinstance(parsed, float) and not math.isfinite(parsed):
            raise ValueError(f"{f.label} must be a finite number")
        return shown, parsed
    shown = text.strip()
    if f.option in _EMPTY_IS_DEFAULT and not f.kind and not shown:
        return "", None
    return shown, shown


def parse_form(raw: Mapping[str, str], *, existing: frozenset[str] = frozenset()) -> FormResult:
    """Check a submitted form (*raw*: field name → value) and build its :class:`SpecOptions`.

    *existing*: kernelspec names already taken (a new kernelspec may not reuse one; an edit
    passes none). Every field that cannot be parsed gets its own message; the installer's
    checks then run on the options and report the first problem they find.
    """
    kind = raw.get("kind", "").strip()
    if kind not in kinds.KINDS:
        problem = f"Choose a backend: {', '.join(kinds.KINDS)}."
        return FormResult(default_values(), errors={"kind": problem})
    values: dict[str, Any] = {"kind": kind}
    common: dict[str, Any] = {}
    kind_options: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in all_fields(kind):
        try:
            shown, value = parse_field(f, raw)
        except ValueError as exc:
            values[f.name] = raw.get(f.name, "")
            errors[f.name] = str(exc)
            continue
        values[f.name] = shown
        if value is None:
            continue
        if f.kind:
            kind_options[f.option] = value
        else:
            common[f.option] = value
    if not common.get("python"):
        errors["python"] = "Python must name the interpreter to run on the hosts."
    result = FormResult(values, errors=errors)
    if errors:
        return result
    opts = SpecOptions(kind=kind, kind_options=kind_options, **common)
    if opts.name in existing:
        result.errors["kernel_name"] = (
            f"A kernelspec named {opts.name!r} already exists: choose another name, or edit "
            "that one from the kernelspec list."
        )
        return result
    try:
        builders.validate(opts)
    except PublicError as exc:
        if exc.status != 400:
            raise
        name, message = field_error(exc.message, all_fields(kind))
        result.errors[name] = message
        return result
    result.options = opts
    return result


def field_error(message: str, fields: tuple[Field, ...]) -> tuple[str, str]:
    """(field name, message in the form's words) for an installer message naming ``--flags``:
    the first flag that is a field of the form names the field, and every flag that is one
    is replaced by its label. ("", message) when it names none."""
    by_flag = {flag_of(f.option): f for f in fields}
    target = ""
    for flag in _FLAG.findall(message):
        f = by_flag.get(flag)
        if f is not None:
            target = f.name
            break

    def label(match: re.Match[str]) -> str:
        f = by_flag.get(match.group(0))
        return f"'{f.label}'" if f is not None else match.group(0)

    text = _FLAG.sub(label, message)
    if not target:  # some checks name the option itself: "port_range '9000..8000' must ..."
        for f in fields:
            named = re.compile(rf"(?<![\w-]){re.escape(f.option)}(?![\w-])")
            if "_" in f.option and named.search(text):
                target = f.name
                text = named.sub(f"'{f.label}'", text)
                break
    text = text[:1].upper() + text[1:]
    return target, text if text.endswith(".") else text + "."
