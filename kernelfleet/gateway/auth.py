"""Authentication: turn a request's credentials into an :class:`Identity`.

Accepted credentials (contract.md, "Headers and auth"):
- ``Authorization: token <t>`` (any scheme word is accepted before the token, so
  ``JUPYTER_GATEWAY_AUTH_SCHEME`` may be changed), or ``?token=<t>``;
- HTTP Basic ``user:<t>`` (jupyter_server replaces the token header with Basic when
  ``JUPYTER_GATEWAY_HTTP_USER``/``_PWD`` are set): the password is the token.

A token is either the shared ``token`` or one of ``user_tokens`` (token → user). The shared token
is the credential of a trusted notebook server acting for its users: by default it is an admin
(it may name the kernel's user with ``KERNEL_USERNAME``). Behind an authenticating proxy that
holds the shared token, ``trusted_user_header`` names the header carrying the real user.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Mapping

from traitlets import Bool, Dict, Unicode
from traitlets import Set as TSet
from traitlets.config import LoggingConfigurable

from kernelfleet.config import option
from kernelfleet.errors import Unauthorized
from kernelfleet.kernels.identity import Identity

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
            (comma list). Default: none.""",
        ),
        "KF_ADMIN_USERS",
    )
    shared_token_user = option(
        Unicode(
            "gateway",
            help="""The user name of requests authenticated with the shared token (when no
            trusted header or Basic user names someone). Default: gateway.""",
        ),
        "KF_SHARED_TOKEN_USER",
    )
    shared_token_is_admin = option(
        Bool(
            True,
            help="""Whether the shared token acts as an admin: it may then set KERNEL_USERNAME
            to any user, as a notebook server or hub does for its users. Default: true.""",
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
            user = basic_user or self.shared_token_user
            if self.trusted_user_header:
                forwarded = headers.get(self.trusted_user_header, "").strip()
                if forwarded:
                    return Identity(forwarded, admin=forwarded in self.admin_users)
            return Identity(user, admin=self.shared_token_is_admin or user in self.admin_users)
        for token, user in self.user_tokens.items():
            if hmac.compare_digest(presented.encode(), token.encode()):
                return Identity(user, admin=user in self.admin_users)
        raise Unauthorized("The token is not valid for this gateway.")


def _credentials(header: str) -> tuple[str, str | None]:
    """(token, basic user) from an Authorization header; empty token when absent."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "", None
        user, sep, password = decoded.partition(":")
        return (password, user or None) if sep else ("", None)
    return value, None
