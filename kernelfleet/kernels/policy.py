"""Pure decisions about a kernel request: who may start what, with which env and timeout.

Nothing here does I/O or reads global state: every function takes the request, the kernelspec's
settings and the gateway's settings, and returns a value or raises a
:class:`~kernelfleet.errors.PublicError` whose message says what to change.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kernelfleet.errors import BadRequest, Forbidden, LimitReached

#: The most bytes one entry of a kernel's environment may take as the OS sees it, ``NAME=value``
#: (UTF-8) and its NUL: Linux refuses to start a process with a longer one (MAX_ARG_STRLEN,
#: E2BIG). Also keeps a kernel env from being a file transfer.
MAX_ENV_ENTRY_BYTES = 128 * 1024
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KERNELSPEC_NAME = re.compile(r"^[\w.\-%]+$")
#: The one rule for a user name a client presents (``KERNEL_USERNAME``, an HTTP Basic user
#: name, a trusted proxy header): it becomes a kernel's owner, a log field, an env value.
USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@\-]{0,63}")


@dataclass(frozen=True)
class SpecPolicy:
    """The per-kernelspec settings kept in ``metadata.kernel_provisioner.config``.

    Enterprise Gateway's ``metadata.process_proxy.config`` stanza is read the same way, so
    existing kernelspecs keep their user lists and timeouts.
    """

    authorized_users: frozenset[str] = frozenset()
    unauthorized_users: frozenset[str] = frozenset()
    launch_timeout: float | None = None
    authorized_groups: frozenset[str] = frozenset()

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> SpecPolicy:
        cfg: dict[str, Any] = {}
        if metadata:
            for key in ("process_proxy", "kernel_provisioner"):
                stanza = metadata.get(key)
                if isinstance(stanza, Mapping) and isinstance(stanza.get("config"), Mapping):
                    cfg.update(stanza["config"])
        timeout = cfg.get("launch_timeout")
        return cls(
            authorized_users=frozenset(_user_list(cfg.get("authorized_users"))),
            unauthorized_users=frozenset(_user_list(cfg.get("unauthorized_users"))),
            launch_timeout=float(timeout) if timeout is not None and _is_number(timeout) else None,
            authorized_groups=frozenset(_user_list(cfg.get("authorized_groups"))),
        )


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return math.isfinite(value) and value > 0
    if isinstance(value, str):
        try:
            num = float(value)
        except ValueError:
            return False
        return math.isfinite(num) and num > 0
    return False


def _user_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [u.strip() for u in value.split(",") if u.strip()]
    if isinstance(value, Iterable):
        return [str(u).strip() for u in value if str(u).strip()]
    return []


@dataclass(frozen=True)
class GatewayPolicy:
    """The gateway-wide settings that the pure checks need."""

    authorized_users: frozenset[str] = frozenset()
    unauthorized_users: frozenset[str] = frozenset({"root"})
    allowed_kernelspecs: frozenset[str] = frozenset()
    inherited_envs: tuple[str, ...] = ("PATH",)
    client_envs: frozenset[str] = frozenset()
    default_launch_timeout: float = 60.0
    max_launch_timeout: float = 300.0
    max_kernels: int = 0
    max_kernels_per_user: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def limit_reached(which: str, owner: str, gw: GatewayPolicy, *, shared: bool) -> LimitReached:
    """The error for a start refused by ``max_kernels`` (*which* ``"total"``) or
    ``max_kernels_per_user`` (``"user"``); *shared*: counted over every gateway of the store."""
    if which == "user":
        scope = " across the gateways sharing this kernel store" if shared else ""
        return LimitReached(
            f"User '{owner}' already runs {gw.max_kernels_per_user} kernels{scope}, the "
            "maximum per user. Shut one down first."
        )
    subject = "The gateways of this kernel store run their" if shared else "The gateway runs its"
    return LimitReached(
        f"{subject} maximum of {gw.max_kernels} kernels. Shut down a kernel you no longer "
        "need, or ask an administrator to raise max_kernels."
    )


def check_kernelspec_name(name: Any) -> str:
    if not isinstance(name, str) or not _KERNELSPEC_NAME.match(name):
        raise BadRequest(
            f"'name' must be a kernelspec name (letters, digits, '.', '-', '_'), got {name!r}."
        )
    return name


def check_user_allowed(
    user: str,
    spec_name: str,
    spec: SpecPolicy,
    gw: GatewayPolicy,
    groups: frozenset[str] = frozenset(),
) -> None:
    """Refuse *user* if any deny list names them, or an allow list exists without them.

    Denial wins over allowance; the kernelspec's lists apply in addition to the gateway's. A
    kernelspec's ``authorized_groups`` admits the members of those *groups* (the user's, as
    the identity authority reports them) beside its ``authorized_users``.
    """
    if user in gw.unauthorized_users or user in spec.unauthorized_users:
        raise Forbidden(
            f"User '{user}' is not allowed to start kernels"
            + (f" of kernelspec '{spec_name}'" if user in spec.unauthorized_users else "")
            + ". Ask an administrator to remove the user from unauthorized_users.",
            reason="Unauthorized User",
        )
    if gw.authorized_users and user not in gw.authorized_users:
        raise Forbidden(
            f"User '{user}' is not in the gateway's authorized_users.",
            reason="Unauthorized User",
        )
    if (spec.authorized_users or spec.authorized_groups) and not (
        user in spec.authorized_users or spec.authorized_groups & groups
    ):
        lists = " or ".join(
            what
            for what, present in (
                ("authorized_users", spec.authorized_users),
                ("authorized_groups", spec.authorized_groups),
            )
            if present
        )
        raise Forbidden(
            f"User '{user}' is not in the {lists} of kernelspec '{spec_name}'.",
            reason="Unauthorized User",
        )


def check_kernelspec_allowed(spec_name: str, gw: GatewayPolicy) -> None:
    if gw.allowed_kernelspecs and spec_name not in gw.allowed_kernelspecs:
        raise Forbidden(
            f"Kernelspec '{spec_name}' is not offered by this gateway "
            f"(allowed: {', '.join(sorted(gw.allowed_kernelspecs))}).",
            reason="Kernelspec Not Allowed",
        )


def validate_request_env(env: Any) -> dict[str, str]:
    """Check the ``env`` object of ``POST /api/kernels``: string names and string values."""
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise BadRequest("'env' must be a JSON object of string values.")
    out: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise BadRequest(f"Environment variable name {str(key)[:100]!r} is not valid.")
        if not isinstance(value, str):
            raise BadRequest(f"Environment variable {key} must be a string.")
        if "\x00" in value:
            raise BadRequest(f"Environment variable {key} contains a NUL byte.")
        try:
            size = len(key) + len(value.encode("utf-8")) + 2  # '=' and the NUL
        except UnicodeEncodeError:
            raise BadRequest(
                f"Environment variable {key} is not valid Unicode: it holds a lone surrogate "
                "(an unpaired \\ud800-\\udfff escape); send text only."
            ) from None
        if size > MAX_ENV_ENTRY_BYTES:
            raise BadRequest(
                f"Environment variable {key} is too long: {key}=<value> may take at most "
                f"{MAX_ENV_ENTRY_BYTES - 1} bytes (UTF-8), the operating system's limit."
            )
        out[key] = value
    return out


def kernel_env(
    request_env: Mapping[str, str],
    process_env: Mapping[str, str],
    gw: GatewayPolicy,
    *,
    kernel_id: str,
    username: str,
) -> dict[str, str]:
    """Build the kernel's environment.

    The gateway's own environment is never handed over whole: only the names in
    ``inherited_envs``, then the request's ``KERNEL_*`` values and those it names in
    ``client_envs``, then the values the gateway sets itself (``KERNEL_ID``,
    ``KERNEL_USERNAME``), which a request cannot override.
    """
    env = {k: process_env[k] for k in gw.inherited_envs if k in process_env}
    for key, value in request_env.items():
        if key.startswith("KERNEL_") or key in gw.client_envs or "*" in gw.client_envs:
            env[key] = value
    env["KERNEL_ID"] = kernel_id
    env["KERNEL_USERNAME"] = username
    return env


def check_user_name(name: str, source: str) -> str:
    """Return *name* if it is a valid user name, else :class:`BadRequest` naming *source*.

    Valid: 1 to 64 of ``A-Z a-z 0-9 _ . @ -``, not starting with ``.``, ``@`` or ``-``. Names
    from the gateway's own configuration (``user_tokens``, ``shared_token_user``) are trusted.
    """
    if USER_NAME.fullmatch(name):
        return name
    shown = ascii(name[:64])
    if len(shown) > 22:
        shown = shown[:21] + "…"
    raise BadRequest(
        f"{source} {shown} is not a valid user name: use up to 64 letters, digits, _ . @ -"
    )


def resolve_owner(
    identity_user: str,
    is_admin: bool,
    request_env: Mapping[str, str],
    *,
    name_fixed: bool = False,
) -> str:
    """The user a kernel belongs to: the identity, or ``KERNEL_USERNAME`` when permitted.

    ``KERNEL_USERNAME`` is a claim from the client: it is accepted when it names the
    authenticated user, or when an admin (e.g. a notebook server acting for its users with the
    shared token) makes it. Any other name must pass :func:`check_user_name`. When an authority
    fixed the name (*name_fixed*, a JupyterHub-verified token) the claim is ignored.
    """
    claimed = request_env.get("KERNEL_USERNAME")
    if name_fixed or not claimed or claimed == identity_user:
        return identity_user
    check_user_name(claimed, "KERNEL_USERNAME")
    if is_admin:
        return claimed
    raise Forbidden(
        f"KERNEL_USERNAME '{claimed}' does not match the authenticated user "
        f"'{identity_user}'. Unset KERNEL_USERNAME or authenticate as that user.",
        reason="Identity Mismatch",
    )


def launch_timeout(request_env: Mapping[str, str], spec: SpecPolicy, gw: GatewayPolicy) -> float:
    """Seconds the gateway allows a launch: the client's wish, else the spec's, else the default.

    The client's ``KERNEL_LAUNCH_TIMEOUT`` is honoured up to ``max_launch_timeout``; waiting longer
    than the client is waiting (it always sends one) would only orphan the kernel.
    """
    raw = request_env.get("KERNEL_LAUNCH_TIMEOUT")
    if raw is not None and raw.strip():
        if not _is_number(raw):
            raise BadRequest(
                f"KERNEL_LAUNCH_TIMEOUT must be a positive number of seconds, got {raw!r}."
            )
        wanted = float(raw)
    else:
        wanted = spec.launch_timeout or gw.default_launch_timeout
    return min(wanted, gw.max_launch_timeout)


def check_kernel_id(value: Any) -> str:
    """Validate a client-chosen ``KERNEL_ID`` (a UUID, as the API routes require)."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise BadRequest(f"KERNEL_ID {value!r} is not a UUID.") from None
