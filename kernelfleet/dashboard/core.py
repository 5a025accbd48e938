"""The dashboard's state, shared by its handlers: settings, the session codec, who is logged in,
the live feed, spec jobs, the kernel environments (when the gateway serves them) and the
templates. One per gateway; nothing global.

Authentication is the API's (:class:`~kernelfleet.gateway.auth.Authenticator`): a request
with an ``Authorization`` header is authenticated by it on every request, exactly as the API
does; a browser logs in once with a token and then carries a signed session cookie
(:mod:`kernelfleet.dashboard.session`). Each request re-checks that the session's credential
still makes an admin (:meth:`Dashboard.still_admin`): a token removed from the configuration,
or a user removed from ``admin_users`` (a config reload), ends the sessions made with it at
their next request. Logging out ends a session in this gateway process (and deletes the cookie).
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from traitlets.config import Config

from kernelfleet import __version__
from kernelfleet.dashboard.hosts import HostHealth, check_hosts
from kernelfleet.dashboard.live import LiveFeed
from kernelfleet.dashboard.session import Session, SessionCodec, load_key
from kernelfleet.dashboard.settings import DashboardSettings
from kernelfleet.dashboard.specjobs import SpecJobs
from kernelfleet.envs.api import EnvApi
from kernelfleet.errors import Forbidden
from kernelfleet.gateway.auth import Authenticator
from kernelfleet.kernels.catalog import KernelSpecCatalog
from kernelfleet.kernels.identity import Identity
from kernelfleet.kernels.registry import KernelRegistry
from kernelfleet.placement.fleet import get_fleet
from kernelfleet.specs import installer


def not_an_admin(user: str) -> Forbidden:
    return Forbidden(
        f"The dashboard is for admins, and {user!r} is not one. An admin of this gateway can "
        "add the user to admin_users (KF_ADMIN_USERS), or log in here with an admin's token.",
        reason="Admins Only",
    )


class Dashboard:
    """See the module docstring."""

    def __init__(
        self,
        settings: DashboardSettings,
        *,
        registry: KernelRegistry,
        catalog: KernelSpecCatalog,
        auth: Authenticator,
        config: Config,
        data_dir: str,
        envs: EnvApi | None = None,
    ) -> None:
        """*envs*: the gateway's kernel environments (their admin API), when it serves them;
        the Environments pages are shown only then."""
        self.settings = settings
        self.envs = envs
        self.registry = registry
        self.catalog = catalog
        self.auth = auth
        self.codec = SessionCodec(load_key(settings.secret_path(data_dir)))
        self.feed = LiveFeed(
            registry,
            self.check_hosts,
            interval=settings.live_interval,
            host_interval=settings.host_check_interval,
            failures_kept=settings.recent_failures,
        )
        self.jobs = SpecJobs(config, catalog.invalidate)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("kernelfleet.dashboard", "templates"),
            autoescape=True,  # every template, whatever its name: user text is always escaped
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.static_path = str(resources.files("kernelfleet.dashboard").joinpath("static"))
        self.version = __version__
        self._revoked: dict[str, float] = {}  # session id -> its expiry
        self._fingerprints: tuple[object, dict[str, str]] | None = None

    async def check_hosts(self, probe: bool) -> list[HostHealth]:
        return await check_hosts(get_fleet(), probe=probe)

    def spec_root(self) -> Path:
        """Where a new kernelspec from the form is written."""
        if self.settings.spec_dir:
            return Path(os.path.abspath(os.path.expanduser(self.settings.spec_dir)))
        return installer.kernels_dir()

    # -- who is asking ------------------------------------------------------------------------

    async def authenticate(self, headers: Mapping[str, str]) -> Identity:
        """The identity of a request with an ``Authorization`` header, as the API sees it."""
        return await self.auth.identify(headers, None)

    async def login(self, token: str) -> tuple[Identity, Session]:
        """Check *token* as the API would; a session for it if it is an admin's."""
        identity = await self.authenticate({"Authorization": f"token {token}"})
        if not identity.admin:
            raise not_an_admin(identity.user)
        via, fp = self._credential(token)
        session = self.codec.issue(
            identity.user,
            via,
            fp,
            now=time.time(),
            lifetime=max(self.settings.session_hours, 0.01) * 3600,
        )
        return identity, session

    def _credential(self, token: str) -> tuple[str, str]:
        auth = self.auth
        if not auth.auth_enabled:
            return "open", ""
        fp = self.codec.fingerprint(token)
        if auth.token and hmac.compare_digest(token.encode(), auth.token.encode()):
            return "shared", fp
        if token in auth.user_tokens:
            return "user", fp
        return "other", fp

    def _user_fingerprints(self) -> dict[str, str]:
        """Fingerprint -> user of every per-user token (recomputed when the map changes)."""
        tokens = self.auth.user_tokens
        cached = self._fingerprints
        if cached is None or cached[0] is not tokens:
            cached = (tokens, {self.codec.fingerprint(t): u for t, u in tokens.items()})
            self._fingerprints = cached
        return cached[1]

    def still_admin(self, session: Session) -> bool:
        """Whether the credential *session* was made from still makes an admin now."""
        auth = self.auth
        if session.via == "open":
            return not auth.auth_enabled
        if not auth.auth_enabled:
            return True
        if session.via == "shared":
            return (
                bool(auth.token)
                and auth.shared_token_is_admin
                and hmac.compare_digest(session.fp, self.codec.fingerprint(auth.token))
            )
        if session.via == "user":
            owner = self._user_fingerprints().get(session.fp)
            return owner == session.user and session.user in auth.admin_users
        return True  # a credential only its authenticator can check: valid until it expires

    def session_of(self, cookie: str | None) -> Session | None:
        """The valid session in *cookie*, or None (missing, forged, expired, logged out, or
        its credential no longer an admin's)."""
        now = time.time()
        session = self.codec.decode(cookie, now=now)
        if session is None or session.sid in self._revoked or not self.still_admin(session):
            return None
        return session

    def revoke(self, session: Session) -> None:
        now = time.time()
        self._revoked = {sid: exp for sid, exp in self._revoked.items() if exp > now}
        self._revoked[session.sid] = session.expires

    # -- pages --------------------------------------------------------------------------------

    def render(self, template: str, **context: Any) -> str:
        return self.templates.get_template(template).render(**context)

    async def close(self) -> None:
        await self.feed.close()
        await self.jobs.close()
