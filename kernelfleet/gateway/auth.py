"""Authentication: turn a request's credentials into an :class:`Identity`.

Accepted credentials (contract.md, "Headers and auth"):
- ``Authorization: token <t>`` (any scheme word is accepted before the token, so
  ``JUPYTER_GATEWAY_AUTH_SCHEME`` may be changed), or ``?token=<t>``;
- HTTP Basic ``user:<t>`` (jupyter_server replaces the token header with Basic when
  ``JUPYTER_GATEWAY_HTTP_USER``/``_PWD`` are set): the password is the token.

A token is the shared ``token``, one of ``user_tokens`` (token → user), or, with ``hub_api_url``
set, a JupyterHub API token that the Hub vouches for (:mod:`kernelfleet.gateway.hub`): a
single-user server's own token. Only :meth:`Authenticator.identify` asks the Hub;
:meth:`Authenticator.authenticate` knows the gateway's own tokens only.

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
- A Hub token is the Hub's user, whose name is fixed: a Basic user name is ignored, and so is a
  ``KERNEL_USERNAME`` naming anyone else (logged; the kernel is the Hub user's), even for an
  admin.

Admins: the admin shared token, and the users in ``admin_users`` authenticated as themselves,
by their per-user token, the trusted header or a Hub token; with ``hub_admins_are_admins``, also
the Hub's admins. A name given through Basic, ``KERNEL_USERNAME`` or ``shared_token_user`` never
makes a caller an admin, so a non-admin shared token cannot become one.

Valid names: a user name a client presents must pass
:func:`kernelfleet.kernels.policy.check_user_name`, else the request is answered 400: the Basic
user name of an authenticated request, even where it is ignored; the trusted header, where it is
honoured; ``KERNEL_USERNAME``, unless it is the caller's own name. Invalid credentials are a 401
first.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import os
import secrets
from collections.abc import Mapping
from typing import Any

from traitlets import Bool, Dict, Float, TraitError, Unicode, validate
from traitlets import Set as TSet
from traitlets.config import LoggingConfigurable

from kernelfleet.config import option
from kernelfleet.errors import Unauthorized
from kernelfleet.gateway.hub import HubSettings, HubVerifier
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

    hub_api_url = option(
        Unicode(
            "",
            help="""JupyterHub's REST API, as the gateway reaches it (e.g.
            http://127.0.0.1:8081/hub/api, the Hub's JUPYTERHUB_API_URL). When set, a token
            that is neither the shared token nor a user_tokens entry is checked with
            GET <hub_api_url>/user: a single-user server's own JUPYTERHUB_API_TOKEN then acts as
            its Hub user (with the user's Hub groups), and its KERNEL_USERNAME cannot name
            anyone else. No scope beyond the token's defaults is needed. Empty: off.
            Default: empty.""",
        ),
        "KF_HUB_API_URL",
    )
    hub_cache_seconds = option(
        Float(
            300.0,
            min=0.0,
            help="""Seconds the gateway trusts a token JupyterHub verified before asking the Hub
            again; also how long a token the Hub revoked, or a change of the user's groups or
            admin flag, takes to show here. 0: ask on every request. Default: 300.""",
        ),
        "KF_HUB_CACHE_SECONDS",
    )
    hub_refused_cache_seconds = option(
        Float(
            10.0,
            min=0.0,
            help="""Seconds the gateway remembers that JupyterHub refused a token, so that a
            client retrying with it does not reach the Hub each time. Default: 10.""",
        ),
        "KF_HUB_REFUSED_CACHE_SECONDS",
    )
    hub_timeout = option(
        Float(
            10.0,
            min=0.5,
            help="""Seconds to wait for JupyterHub's answer (connecting included); after it the
            request is answered 503 (the Hub is unavailable). Default: 10.""",
        ),
        "KF_HUB_TIMEOUT",
    )
    hub_ca_file = option(
        Unicode(
            "",
            help="""A PEM file of the CA certificates that sign an https hub_api_url's
            certificate. Empty: the system's CAs. Default: empty.""",
        ),
        "KF_HUB_CA_FILE",
    )
    hub_admins_are_admins = option(
        Bool(
            False,
            help="""Whether JupyterHub's admin users are gateway admins (see and act on every
            kernel) when they come with their Hub token. Users in admin_users are admins
            either way. Default: false.""",
        ),
        "KF_HUB_ADMINS_ARE_ADMINS",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hub: HubVerifier | None = None

    @validate("hub_api_url")
    def _check_hub_api_url(self, proposal: dict[str, Any]) -> str:
        url = str(proposal["value"]).strip()
        if url and not url.startswith(("http://", "https://")):
            raise TraitError(
                f"hub_api_url {url[:80]!r} is not an http(s) URL; use the Hub's API URL, e.g. "
                "http://127.0.0.1:8081/hub/api"
            )
        return url.rstrip("/")

    @validate("hub_ca_file")
    def _check_hub_ca_file(self, proposal: dict[str, Any]) -> str:
        path = str(proposal["value"])
        if path and not os.path.isfile(path):
            raise TraitError(f"hub_ca_file {path!r} is not a file; give a PEM file of CAs")
        return path

    def hub(self) -> HubVerifier | None:
        """The verifier for the Hub options in force (None: hub_api_url is empty). A change of
        the options (a config reload) starts a new one with an empty cache."""
        if not self.hub_api_url:
            self._hub = None
            return None
        settings = HubSettings(
            api_url=self.hub_api_url,
            cache_seconds=self.hub_cache_seconds,
            refused_cache_seconds=self.hub_refused_cache_seconds,
            timeout=self.hub_timeout,
            ca_file=self.hub_ca_file,
            admins_are_admins=self.hub_admins_are_admins,
        )
        if self._hub is None or self._hub.settings != settings:
            self._hub = HubVerifier(settings, self.log)
        return self._hub

    def ensure_token(self) -> str | None:
        """Generate the shared token if auth is on and none is configured; return it if new."""
        if self.auth_enabled and not self.token:
            self.token = secrets.token_hex(24)
            return self.token
        return None

    async def identify(self, headers: Mapping[str, str], query_token: str | None) -> Identity:
        """The caller's identity, asking JupyterHub about a token that is not the gateway's
        own when ``hub_api_url`` is set; else :class:`Unauthorized` with what to send instead
        (or the Hub's 403/503, :mod:`kernelfleet.gateway.hub`)."""
        if not self.auth_enabled:
            return Identity(ANONYMOUS, admin=True)
        presented, basic_user = self._presented(headers, query_token)
        own = self._own_token_identity(presented, basic_user, headers)
        if own is not None:
            return own
        hub = self.hub()
        if hub is None:
            raise Unauthorized("The token is not valid for this gateway.")
        who = await hub.identify(presented)
        _check_basic_user(basic_user)
        if who.user in self.admin_users and not who.admin:
            who = dataclasses.replace(who, admin=True)
        return who

    def authenticate(self, headers: Mapping[str, str], query_token: str | None) -> Identity:
        """Like :meth:`identify` with the gateway's own tokens only (no JupyterHub)."""
        if not self.auth_enabled:
            return Identity(ANONYMOUS, admin=True)
        presented, basic_user = self._presented(headers, query_token)
        own = self._own_token_identity(presented, basic_user, headers)
        if own is None:
            raise Unauthorized("The token is not valid for this gateway.")
        return own

    @staticmethod
    def _presented(headers: Mapping[str, str], query_token: str | None) -> tuple[str, str | None]:
        presented, basic_user = _credentials(headers.get("Authorization", ""))
        if not presented and query_token:
            presented = query_token
        if not presented:
            raise Unauthorized(
                "This gateway needs a token: send 'Authorization: token <token>' (jupyter "
                "--gateway-url: set JUPYTER_GATEWAY_AUTH_TOKEN).",
            )
        return presented, basic_user

    def _own_token_identity(
        self, presented: str, basic_user: str | None, headers: Mapping[str, str]
    ) -> Identity | None:
        if self.token and hmac.compare_digest(presented.encode(), self.token.encode()):
            _check_basic_user(basic_user)
            return self._shared_token_identity(headers, basic_user)
        for token, user in self.user_tokens.items():
            if hmac.compare_digest(presented.encode(), token.encode()):
                _check_basic_user(basic_user)
                return Identity(user, admin=user in self.admin_users)
        return None

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
