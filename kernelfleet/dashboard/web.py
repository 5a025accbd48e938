"""The dashboard's base handler: who is asking, the CSRF and origin checks, the security
headers, templates and error pages.

Every dashboard response carries the headers of :data:`kernelfleet.dashboard.guard.
SECURITY_HEADERS` (a Content-Security-Policy without inline script or style, frame-ancestors
'none', nosniff, no-referrer) and ``Cache-Control: no-store``. A request is authenticated by its
``Authorization`` header (as the API) or else by the session cookie; only admins get further
(403 otherwise, saying so). A state-changing request with the cookie must pass
:func:`~kernelfleet.dashboard.guard.cross_origin_problem` and carry the session's CSRF token.
Pages answer a missing login with a redirect to the login page, JSON endpoints with a 401.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

from tornado import web

from kernelfleet.dashboard import guard
from kernelfleet.dashboard.core import Dashboard, not_an_admin
from kernelfleet.dashboard.session import Session
from kernelfleet.errors import Forbidden, PublicError, Unauthorized
from kernelfleet.kernels.identity import Identity

log = logging.getLogger("kernelfleet.dashboard")


class DashboardHandler(web.RequestHandler):
    """See the module docstring. Subclasses set :attr:`api` (JSON answers) or :attr:`public`
    (no login needed: the login page)."""

    api = False
    public = False

    dash: Dashboard
    identity: Identity
    session: Session | None = None

    def initialize(self, dash: Dashboard, base: str) -> None:
        self.dash = dash
        self.base = base  # the gateway's base URL, e.g. "/" or "/gw/"
        self.admin_path = f"{base}admin"

    def set_default_headers(self) -> None:
        for header, value in guard.SECURITY_HEADERS.items():
            self.set_header(header, value)
        self.set_header("Cache-Control", "no-store")

    # -- who is asking ----------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return guard.own_origin(self.request.protocol, self.request.host)

    @property
    def secure(self) -> bool:
        return self.request.protocol == "https" or self.dash.settings.secure_cookie

    async def prepare(self) -> None:
        if self.public:
            return
        headers = self.request.headers
        if headers.get("Authorization"):
            self.identity = await self.dash.authenticate(headers)
        else:
            session = self.dash.session_of(self.get_cookie(guard.SESSION_COOKIE))
            if session is None:
                self.not_logged_in()
                return
            self.session = session
            self.identity = Identity(session.user, admin=True)
        if not self.identity.admin:
            raise not_an_admin(self.identity.user)
        if self.request.method in guard.UNSAFE_METHODS and self.session is not None:
            self.check_same_origin()
            presented = headers.get(guard.CSRF_HEADER) or self.get_body_argument(
                guard.CSRF_FIELD, None
            )
            if not self.dash.codec.csrf_ok(self.session, presented):
                raise Forbidden(
                    "This request carries no valid CSRF token (reload the page and try again); "
                    "it was not carried out.",
                    reason="CSRF Check Failed",
                )

    def check_same_origin(self) -> None:
        problem = guard.cross_origin_problem(self.request.headers, self.origin)
        if problem is not None:
            raise Forbidden(
                f"Refused: {problem}. Nothing was changed.", reason="Cross-Origin Request"
            )

    def not_logged_in(self) -> None:
        if self.api or self.request.method != "GET":
            raise Unauthorized("Log in to the dashboard first (your session may have expired).")
        target = self.request.uri or self.admin_path
        self.redirect(f"{self.admin_path}/login?next={quote(target, safe='')}")

    @property
    def csrf(self) -> str:
        return self.dash.codec.csrf_token(self.session) if self.session is not None else ""

    # -- answers ------------------------------------------------------------------------------

    def page(self, template: str, status: int = 200, **context: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(self.dash.render(template, **self.context(), **context))

    def context(self) -> dict[str, Any]:
        identity = getattr(self, "identity", None)
        return {
            "admin": self.admin_path,
            "static": f"{self.admin_path}/static",
            "version": self.dash.version,
            "user": identity.user if identity is not None else "",
            "csrf": self.csrf,
            "csrf_field": guard.CSRF_FIELD,
            "logged_in": self.session is not None,
            "envs_enabled": self.dash.envs is not None,
        }

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, PublicError):
            reason, message = exc.reason, exc.message
        elif isinstance(exc, web.HTTPError):
            reason = exc.reason or self._reason
            message = exc.log_message or reason
            if exc.args and exc.log_message and "%" in exc.log_message:
                message = exc.log_message % exc.args
        else:
            reason = "Internal Server Error"
            message = "The dashboard hit an unexpected error; the gateway's log has the details."
        if self.api:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"reason": reason, "message": message}))
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(
            self.dash.render(
                "error.html", **self.context(), status=status_code, reason=reason, message=message
            )
        )

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, PublicError):
            if self._finished:
                return
            log.info("%s %s -> %d %s", self.request.method, self.request.path, e.status, e.message)
            self.send_error(e.status, reason=e.reason, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


class StaticHandler(web.StaticFileHandler):
    """The dashboard's own CSS and JavaScript, shipped in the package (no CDN)."""

    def set_default_headers(self) -> None:
        for header, value in guard.SECURITY_HEADERS.items():
            self.set_header(header, value)
