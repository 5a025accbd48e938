"""Authentication: turn a request's credentials into an :class:`Identity`.

Accepted credentials (contract.md, "Headers and auth"):
- ``Authorization: token <t>`` (any scheme word is accepted before the token, so
  ``JUPYTER_GATEWAY_AUTH_SCHEME`` may be changed), or ``?token=<t>``;
- HTTP Basic ``user:<t>`` (jupyter_server replaces the token header with Basic when
  ``JUPYTER_GATEWAY_HTTP_USER``/``_PWD`` are set): the password is the token.

A token is either the shared ``token`` or one of ``user_tokens`` (token → user).

Who may name an identity — the one rule:
- The shared token, when it is an admin (``shared_token_is_admin``, the default), is a trusted
  notebook server acting for its users. It may name the user: the request acts as the HTTP
  Basic user name if one is sent (else as ``shared_token_user``) and stays an admin, and it
  may name a kernel's owner with ``KERNEL_USERNAME``.
- Behind an authenticating proxy that holds the shared token, the ``trusted_user_header`` of a
  request carrying the shared token names the user (it wins over a Basic user name).
- No other credential names anyone. A non-admin shared token is one ordinary user,
  ``shared_token_user``; a per-user token is its user. A Basic user name sent with either is
  ignored (jupyter_server sends one whenever ``JUPYTER_GATEWAY_HTTP_USER`` is set, and copies
  it to ``KERNEL_USERNAME``, which must then be the caller's own name, else 403).

Admins: the admin shared token, and the users in ``admin_users`` authenticated as themselves,
by their per-user token or the trusted header. A name given through Basic, ``KERNEL_USERNAME``
or ``shared_token_user`` never makes a caller an admin, so a non-admin shared token cannot
become one.

Valid names: a user name a client presents must pass
:func:`kernelfleet.kernels.policy.check_user_name`, else the request is answered 400: the Basic
user name of an authenticated request, even where it is ignored; the trusted header, where it is
honoured; ``KERNEL_USERNAME``, unless it is the caller's own name. Invalid credentials are a 401
first.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Mapping

from traitlets import Bool, Dict, Unicode
from traitlets import Set as TSet
from traitlets.config import LoggingConfigurable

from kernelfleet.config import option
from kernelfleet.errors import Unauthorized
from kernelfleet.kernels.identity import Identity
from kernelfleet.kernels.policy import check_user_name

ANONYMOUS = "anonymous"


class Authenticator(LoggingConfigurable):
    """Checks credentials; see the module docstring."""

    auth_enabled = option(
        Bool(
            True,
            help="""Require a token on every request. Turn off only on a trusted network: every
            caller then acts as an admin. Default: true.""",
        ),
        "KF_AUTH_ENABLED",
    )
    token = option(
        Unicode(
            "",
            help="""The shared token clients must present (Authorization: token <t>, ?token=<t>,
            or as the password of HTTP Basic). Empty: a random token is generated at start and
            printed. Default: empty.""",
        ),
        "KF_TOKEN",
        "EG_AUTH_TOKEN",
    )
    user_tokens = option(
        Dict(
            key_trait=Unicode(),
            value_trait=Unicode(),
            help="""Per-user tokens: a map token -> user name (a JSON object in the
            environment). A request with such a token acts as that user. Default: {}.""",
        ),
        "KF_USER_TOKENS",
    )
    admin_users = option(
        TSet(
            Unicode(),
            help="""Users who see and act on every kernel and may start kernels for others
            (comma list), when authenticated as themselves: by their own user_tokens entry or
            the trusted_user_header. Default: none.""",
        ),
        "KF_ADMIN_USERS",
    )
    shared_token_user = option(
        Unicode(
            "gateway",
            help="""The user name of requests authenticated with the shared token, when no
            trusted header names the user and (admin shared token only) no HTTP Basic user
            name does. Default: gateway.""",
        ),
        "KF_SHARED_TOKEN_USER",
    )
    shared_token_is_admin = option(
        Bool(
            True,
            help="""Whether the shared token acts as an admin: it may then name the user, with
            KERNEL_USERNAME and the HTTP Basic user name, as a notebook server or hub does for
            its users. When false it is one ordinary user (shared_token_user), never an
            admin, whatever name comes with it. Default: true.""",
        ),
        "KF_SHARED_TOKEN_IS_ADMIN",
    )
    trusted_user_header = option(
        Unicode(
            "",
            help="""Name of a header set by an authenticating proxy (e.g. X-Forwarded-User)
            carrying the user's name. Honoured only on requests that also carry the shared
            token. Default: empty (off).""",
        ),
        "KF_TRUSTED_USER_HEADER",
    )

    def ensure_token(self) -> str | None:
        """Generate the shared token if auth is on and none is configured; return it if new."""
        if self.auth_enabled and not self.token:
            self.token = secrets.token_hex(24)
            return self.token
        return None

    def authenticate(self, headers: Mapping[str, str], query_token: str | None) -> Identity:
        """The caller's identity, or :class:`Unauthorized` with what to send instead."""
        if not self.auth_enabled:
            return Identity(ANONYMOUS, admin=True)
        presented, basic_user = _credentials(headers.get("Authorization", ""))
        if not presented and query_token:
            presented = query_token
        if not presented:
            raise Unauthorized(
                "This gateway needs a token: send 'Authorization: token <token>' (jupyter "
                "--gateway-url: set JUPYTER_GATEWAY_AUTH_TOKEN).",
            )
        if self.token and hmac.compare_digest(presented.encode(), self.token.encode()):
            _check_basic_user(basic_user)
            return self._shared_token_identity(headers, basic_user)
        for token, user in self.user_tokens.items():
            if hmac.compare_digest(presented.encode(), token.encode()):
                _check_basic_user(basic_user)
                return Identity(user, admin=user in self.admin_users)
        raise Unauthorized("The token is not valid for this gateway.")

    def _shared_token_identity(
        self, headers: Mapping[str, str], basic_user: str | None
    ) -> Identity:
        if self.trusted_user_header:
            forwarded = headers.get(self.trusted_user_header, "").strip()
            if forwarded:
                check_user_name(forwarded, f"{self.trusted_user_header} header")
                return Identity(forwarded, admin=forwarded in self.admin_users)
        if self.shared_token_is_admin:
            return Identity(basic_user or self.shared_token_user, admin=True)
        return Identity(self.shared_token_user, admin=False)


def _check_basic_user(name: str | None) -> None:
    if name is not None:
        check_user_name(name, "HTTP Basic user name")


def _credentials(header: str) -> tuple[str, str | None]:
    """(token, basic user) from an Authorization header; empty token when absent."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8
            return "", None
        user, sep, password = decoded.partition(":")
        return (password, user or None) if sep else ("", None)
    return value, None
