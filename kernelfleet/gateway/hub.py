"""Identities from JupyterHub: a single-user server's Hub API token, verified with the Hub.

When a JupyterHub runs the notebook servers, each single-user server calls the gateway with its
own user's Hub API token (the spawner puts ``JUPYTERHUB_API_TOKEN`` into
``JUPYTER_GATEWAY_AUTH_TOKEN``). A token that is neither the gateway's shared token nor one of
its per-user tokens is checked here:

- **The question**: ``GET <hub_api_url>/user`` with ``Authorization: token <t>``. JupyterHub
  answers with the token owner's model. Every token may read its own ``name``, ``admin`` flag and
  ``groups`` there (the Hub grants ``read:users:name!user`` and ``read:users:groups!user`` on this
  endpoint to any token; checked against JupyterHub 6.1.1), so the single-user server's default
  token (role ``server``: ``users:activity!user``, ``access:servers!server``) needs no extra
  scope, nor does a token narrowed by ``Spawner.server_token_scopes``.
- **The answer**: a ``user`` model becomes an :class:`Identity` with the Hub's name and groups
  and ``authority`` :data:`~kernelfleet.kernels.identity.JUPYTERHUB`, so that a
  ``KERNEL_USERNAME`` naming anyone else is ignored. It is an admin only when the Hub says so and
  ``hub_admins_are_admins`` is on (or the name is in ``admin_users``, see
  :mod:`kernelfleet.gateway.auth`). A service's token, or a user name the gateway cannot use as
  a kernel owner, is refused.
- **Refusals**: the Hub's 401/403 is our 401 (the token expired or was revoked: the single-user
  server gets a new one when it restarts). A Hub that cannot be reached, answers after
  ``hub_timeout`` seconds, or answers with something else (a 404 from a wrong ``hub_api_url``,
  a 5xx, not JSON) is a 503 that says so; nothing about it is cached, so the next request asks
  again.
- **Cache**: verdicts are kept under a keyed BLAKE2b digest of the token (the key is random per
  process; a token itself lives only while its check is in flight and never reaches a log):
  an identity for ``hub_cache_seconds``, a refusal for ``hub_refused_cache_seconds``, at most
  :data:`MAX_ENTRIES` of them (the oldest go first). A token the Hub revokes therefore keeps
  working here until its entry expires, and a change of the user's groups or admin flag shows
  after that time too.
- **Concurrency**: requests with the same unverified token wait for one Hub call. That call runs
  on its own; a request that gives up (its client went away) does not cancel it for the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from kernelfleet.errors import BadRequest, Forbidden, PublicError, Unauthorized, describe
from kernelfleet.kernels.identity import JUPYTERHUB, Identity
from kernelfleet.kernels.policy import check_user_name

#: Cached verdicts at most; a flood of made-up tokens cannot grow the cache past this.
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class HubSettings:
    """The Authenticator's Hub options (see there for their meaning), as one value: a verifier
    built for one set of settings is replaced, with its cache, when they change."""

    api_url: str
    cache_seconds: float
    refused_cache_seconds: float
    timeout: float
    ca_file: str = ""
    admins_are_admins: bool = False


@dataclass(frozen=True)
class Verdict:
    """What the Hub said about a token: an identity, or the error to answer with."""

    identity: Identity | None = None
    status: int = 401
    reason: str = "Unauthorized"
    message: str = ""

    def result(self) -> Identity:
        """The identity, or the refusal raised (a fresh exception for every caller)."""
        if self.identity is not None:
            return self.identity
        raise PublicError(self.message, status=self.status, reason=self.reason)


class HubUnavailable(PublicError):
    """The Hub could not answer: the token is neither accepted nor refused."""

    status = 503
    reason = "JupyterHub Unavailable"


def identity_from_model(model: Any, *, admins_are_admins: bool) -> Identity:
    """The identity a Hub ``/user`` model describes; :class:`PublicError` when it names no user
    the gateway can serve, :class:`ValueError` when it is not a Hub model at all."""
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise ValueError("the answer has no user name")
    name: str = model["name"]
    kind = model.get("kind", "user")
    if kind != "user":
        raise Unauthorized(
            f"This token belongs to the JupyterHub {str(kind)[:20]} {name[:64]!r}, not to a "
            "user; a single-user server sends its user's token (JUPYTERHUB_API_TOKEN)."
        )
    try:
        check_user_name(name, "JupyterHub user name")
    except BadRequest as exc:
        raise Forbidden(
            f"{exc.message}; an admin renames the JupyterHub user to use this gateway.",
            reason="Invalid User Name",
        ) from None
    raw_groups = model.get("groups")
    groups = frozenset(
        g for g in (raw_groups if isinstance(raw_groups, list) else []) if isinstance(g, str)
    )
    admin = admins_are_admins and model.get("admin") is True
    return Identity(name, admin=admin, groups=groups, authority=JUPYTERHUB)


class HubVerifier:
    """Verifies tokens with one Hub and remembers the verdicts (module docstring)."""

    def __init__(
        self,
        settings: HubSettings,
        log: logging.Logger | logging.LoggerAdapter[Any],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.log = log
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, tuple[float, Verdict]] = OrderedDict()
        self._asking: dict[bytes, asyncio.Task[Verdict]] = {}
        #: Calls made to the Hub (each one a token that was neither cached nor in flight).
        self.hub_calls = 0

    def digest(self, token: str) -> bytes:
        return hashlib.blake2b(token.encode(), key=self._key, digest_size=32).digest()

    async def identify(self, token: str) -> Identity:
        """The identity the Hub gives *token*, from the cache when it is fresh there; a
        :class:`PublicError` (401, 403 or 503) otherwise."""
        key = self.digest(token)
        cached = self._cache.get(key)
        if cached is not None:
            if cached[0] > self.clock():
                return cached[1].result()
            del self._cache[key]
        task = self._asking.get(key)
        if task is None:
            task = asyncio.create_task(self._ask(key, token))
            self._asking[key] = task
        return (await asyncio.shield(task)).result()

    async def _ask(self, key: bytes, token: str) -> Verdict:
        try:
            verdict = await self._verdict(token, key.hex()[:8])
        except HubUnavailable as exc:
            return Verdict(status=exc.status, reason=exc.reason, message=exc.message)
        finally:
            del self._asking[key]
        ttl = (
            self.settings.cache_seconds
            if verdict.identity is not None
            else self.settings.refused_cache_seconds
        )
        if ttl > 0:
            self._cache[key] = (self.clock() + ttl, verdict)
            while len(self._cache) > MAX_ENTRIES:
                self._cache.popitem(last=False)
        return verdict

    async def _verdict(self, token: str, tag: str) -> Verdict:
        """Ask the Hub; *tag* names the token in the log (a prefix of its keyed digest)."""
        s = self.settings
        url = s.api_url.rstrip("/") + "/user"
        request = HTTPRequest(
            url,
            headers={"Authorization": f"token {token}", "Accept": "application/json"},
            connect_timeout=s.timeout,
            request_timeout=s.timeout,
            ca_certs=s.ca_file or None,
            follow_redirects=False,
        )
        self.hub_calls += 1
        try:
            async with asyncio.timeout(s.timeout + 1):
                response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except asyncio.CancelledError:
            raise
        except (TimeoutError, HTTPClientError, OSError) as exc:  # 599, refused, TLS, DNS
            cause = (
                f"no answer within {s.timeout:g} s"
                if isinstance(exc, TimeoutError) or getattr(exc, "code", 0) == 599
                else describe(exc, 200)
            )
            raise self._unavailable(url, cause) from None
        if response.code in (401, 403):
            self.log.info("JupyterHub refused token %s (%d)", tag, response.code)
            return Verdict(
                message="The token is not valid for this gateway, and JupyterHub does not "
                "accept it either (expired or revoked: restart the single-user server to get "
                "a new one)."
            )
        if response.code != 200:
            raise self._unavailable(url, f"it answered HTTP {response.code}")
        try:
            identity = identity_from_model(
                json.loads(response.body), admins_are_admins=s.admins_are_admins
            )
        except ValueError as exc:  # not JSON (JSONDecodeError is one) or not a user model
            raise self._unavailable(url, f"its answer is not a JupyterHub user ({exc})") from None
        except PublicError as exc:
            self.log.info("JupyterHub token %s refused here: %s", tag, exc.message)
            return Verdict(status=exc.status, reason=exc.reason, message=exc.message)
        self.log.debug(
            "JupyterHub verified token %s: user %r, groups %s, admin %s",
            tag,
            identity.user,
            sorted(identity.groups),
            identity.admin,
        )
        return Verdict(identity)

    def _unavailable(self, url: str, cause: str) -> HubUnavailable:
        self.log.warning("cannot verify a token with JupyterHub at %s: %s", url, cause)
        return HubUnavailable(
            f"The gateway cannot verify this token with JupyterHub: {cause}. Try again once the "
            "Hub is up; if this persists, an admin checks hub_api_url (KF_HUB_API_URL) and the "
            "gateway's log."
        )
