"""The kernel environment form (pure): its fields, a submitted form turned into the body of the
admin API's ``POST api/envs``, and which field an error of the API is about.

The form adds no checks of its own: the body goes to
:meth:`kernelfleet.envs.api.EnvApi.start_create`, which checks it exactly as it checks the
API's (:func:`kernelfleet.envs.api.request_from_json`, then the service's name, quota, package
list, kernelspec options and interpreter). Only what cannot be turned into JSON at all (a number
field that holds no number) is refused here. :func:`error_field` then places the API's message
beside the field it is about, by the words the API uses: a ``--flag`` of ``spec install``
(:func:`kernelfleet.dashboard.specform.field_error`), ``'spec.<option>'``, or the opening words
of the name, package-list and interpreter checks.

The kernelspec options are ``spec install``'s: the kernel name, display name, authorized users
and groups, and the kind's own options (:func:`kernelfleet.dashboard.specform.kind_fields`), so a
kind option added to :mod:`kernelfleet.specs.kinds` appears here too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kernelfleet.dashboard import specform
from kernelfleet.dashboard.specform import Field
from kernelfleet.envs.service import KINDS as SERVICE_KINDS
from kernelfleet.specs import kinds

#: The kinds an environment may be offered as (the service's, that ``spec install`` knows).
ENV_KINDS: tuple[str, ...] = tuple(k for k in SERVICE_KINDS if k in kinds.KINDS)

FIELDS: tuple[Field, ...] = (
    Field("name", "Name", "text", "name",
          help="Lower-case letters, digits, '.', '_' and '-' (at most 63). Also the kernelspec's "
          "name, unless you give one below."),
    Field("python", "Python", "select", "python",
          help="An interpreter installed on the gateway; environments never download one."),
    Field("packages", "Packages", "lines", "packages",
          help="One requirement per line, as pip writes them: pandas==2.2.*, scikit-learn>=1.4. "
          "From the package index only (no URLs, paths or pip options); ipykernel is added."),
    Field("kind", "Kernels run", "select", "kind", choices=ENV_KINDS,
          help="Where the environment's kernels run: local (the gateway's machine), ssh (it is "
          "shipped to the hosts), yarn (an archive the application unpacks), docker (one more "
          "layer on the kernel image)."),
    Field("kernel_name", "Kernel name", "text", "kernel_name",
          help="The kernelspec's name. Empty: the environment's name."),
    Field("display_name", "Display name", "text", "display_name",
          help="What users see in JupyterLab's launcher. Empty: Python (<name>)."),
    Field("authorized_users", "Authorized users", "list", "authorized_users",
          help="Users allowed to start its kernels, one per line or comma-separated. Empty: "
          "everyone the gateway allows."),
    Field("authorized_groups", "Authorized groups", "list", "authorized_groups",
          help="Groups whose members may start its kernels, one per line or comma-separated."),
    Field("owner", "Owner", "text", "owner",
          help="Whose quota it counts against. Empty: you."),
)  # fmt: skip

#: Offered only when the gateway allows source builds (``KF_ENV_ALLOW_SOURCE_BUILDS``).
ALLOW_SOURCE = Field(
    "allow_source",
    "Build from source",
    "checkbox",
    "allow_source",
    help="Let packages without a wheel be built from their sources (their build runs their "
    "code, in the build sandbox).",
)

#: Fields whose value goes into the body's ``spec`` (the kernelspec's shared options).
_SPEC_FIELDS = ("kernel_name", "display_name", "authorized_users", "authorized_groups")
_SPLIT = re.compile(r"[,\n]")

#: Which field an API message is about, by its opening words (after the --flags and
#: 'spec.<option>' names, which say it exactly). "" is the form as a whole.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), name)
    for pattern, name in (
        (r"^Environment name |^An environment named |is being built", "name"),
        (r"^Source builds are off", "allow_source"),
        (
            r"^Package |^An environment lists at most|pip options are not accepted|is not a "
            r"package requirement|packages come from the package index",
            "packages",
        ),
        (r"^Python \S+ is not installed|^'python'", "python"),
        (r"^'kind'", "kind"),
        (r"^Only an admin may create an environment for another user|^'owner'", "owner"),
    )
)
_SPEC_OPTION = re.compile(r"'spec\.([a-z_]+)'")


def kind_fields(kind: str) -> tuple[Field, ...]:
    return specform.kind_fields(kind)


def default_values(python: str = "") -> dict[str, Any]:
    """A new environment's form: a local kernel on *python* (an interpreter's path)."""
    values: dict[str, Any] = {
        "name": "",
        "python": python,
        "packages": "",
        "kind": "local",
        "kernel_name": "",
        "display_name": "",
        "authorized_users": [],
        "authorized_groups": [],
        "owner": "",
        "allow_source": False,
    }
    spec_defaults = specform.default_values()
    for kind in ENV_KINDS:
        for f in kind_fields(kind):
            values[f.name] = spec_defaults.get(f.name, "")
    return values


@dataclass
class EnvForm:
    """A submitted form: its values as typed (shown again on error), the API body when every
    field could be read, and the errors by field name ("" for the form as a whole)."""

    values: dict[str, Any]
    body: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)


def _items(text: str) -> list[str]:
    return [part.strip() for part in _SPLIT.split(text) if part.strip()]


def _given(value: Any) -> bool:
    """Whether a kind option was filled in (empty ones keep the kind's default)."""
    return value is not None and value not in ("", (), {})


def parse_form(raw: Mapping[str, str], *, source_allowed: bool = False) -> EnvForm:
    """The API body of a submitted form (*raw*: field name → value).

    *source_allowed*: the form offers "Build from source" (else the field is ignored)."""
    kind = raw.get("kind", "").strip()
    values = default_values()
    errors: dict[str, str] = {}
    if kind not in ENV_KINDS:
        errors["kind"] = f"Choose where its kernels run: {', '.join(ENV_KINDS)}."
        kind = "local"
    values["kind"] = kind
    for key in ("name", "python", "kernel_name", "display_name", "owner"):
        values[key] = raw.get(key, "").strip()
    values["packages"] = raw.get("packages", "")
    for key in ("authorized_users", "authorized_groups"):
        values[key] = _items(raw.get(key, ""))
    allow_source = source_allowed and raw.get("allow_source", "") not in {"", "0", "off"}
    values["allow_source"] = allow_source
    spec: dict[str, Any] = {key: values[key] for key in _SPEC_FIELDS if values[key]}
    for f in kind_fields(kind):
        try:
            shown, value = specform.parse_field(f, raw)
        except ValueError as exc:
            values[f.name] = raw.get(f.name, "")
            errors[f.name] = str(exc)
            continue
        values[f.name] = shown
        if _given(value):
            spec[f.option] = list(value) if isinstance(value, tuple) else value
    if errors:
        return EnvForm(values, errors=errors)
    packages = [line.strip() for line in values["packages"].splitlines() if line.strip()]
    body = {
        "name": values["name"],
        "python": values["python"],
        "packages": packages,
        "kind": kind,
        "owner": values["owner"],
        "spec": spec,
        "allow_source": allow_source,
    }
    return EnvForm(values, body=body)


def error_field(message: str, kind: str, fields: Sequence[Field] = FIELDS) -> tuple[str, str]:
    """(field name, message in the form's words) of an error the API answered a body with;
    ("", message) when it names no field of the form."""
    everything = (*fields, ALLOW_SOURCE, *kind_fields(kind))
    name, text = specform.field_error(message, everything)
    if name:
        return name, text
    option = _SPEC_OPTION.search(message)
    if option is not None:
        for f in everything:
            if f.option == option.group(1):
                return f.name, message
    for pattern, target in _RULES:
        if pattern.search(message):
            return target, message
    return "", message
