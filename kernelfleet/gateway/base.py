"""What every handler shares: authentication, the JSON error shape, CORS, JSON bodies."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tornado import web

from kernelfleet.errors import BadRequest, NotFound, PublicError
from kernelfleet.kernels.identity import Identity

if TYPE_CHECKING:
    from kernelfleet.gateway.auth import Authenticator
    from kernelfleet.gateway.bridge import BridgeSettings
    from kernelfleet.kernels.registry import KernelRegistry
    from kernelfleet.kernels.sessions import SessionStore
    from kernelfleet.specs.catalog import KernelSpecCatalog

log = logging.getLogger("kernelfleet.gateway")


@dataclass
class CorsSettings:
    allow_origin: str = ""
    allow_credentials: str = ""
    allow_headers: str = ""
    allow_methods: str = ""
    expose_headers: str = ""
    max_age: str = ""


@dataclass
class Services:
    """Everything handlers need, passed explicitly through the tornado settings."""

    registry: KernelRegistry
    catalog: KernelSpecCatalog
    sessions: SessionStore
    auth: Authenticator
    bridge: BridgeSettings
    base_url: str = "/"
    cors: CorsSettings = field(default_factory=CorsSettings)


class BaseHandler(web.RequestHandler):
    identity: Identity

    @property
    def kf(self) -> Services:
        services: Services = self.settings["kf"]
        return services

    def set_default_headers(self) -> None:
        cors = self.settings["kf"].cors
        for header, value in (
            ("Access-Control-Allow-Origin", cors.allow_origin),
            ("Access-Control-Allow-Credentials", cors.allow_credentials),
            ("Access-Control-Allow-Headers", cors.allow_headers),
            ("Access-Control-Allow-Methods", cors.allow_methods),
            ("Access-Control-Expose-Headers", cors.expose_headers),
            ("Access-Control-Max-Age", cors.max_age),
        ):
            if value:
                self.set_header(header, value)

    def prepare(self) -> None:
        if self.request.method == "OPTIONS":
            return
        self.identity = self.kf.auth.authenticate(
            self.request.headers, self.get_query_argument("token", None)
        )

    def options(self, *args: Any, **kwargs: Any) -> None:
        self.set_status(204)
        self.finish()

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object; ``Content-Type`` is not required."""
        raw = self.request.body
        if not raw or not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"The request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        return body

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, PublicError):
            body = exc.to_json()
            if exc.status == 401:
                self.set_header("WWW-Authenticate", 'token realm="kernelfleet"')
        elif isinstance(exc, web.HTTPError):
            reason = exc.reason or self._reason
            body = {"reason": reason, "message": exc.log_message or reason}
            if exc.args and exc.log_message and "%" in exc.log_message:
                body["message"] = exc.log_message % exc.args
        else:
            body = {
                "reason": "Internal Server Error",
                "message": "The gateway hit an unexpected error; its log has the details.",
            }
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def _request_summary(self) -> str:
        # The path only: the query may carry ?token=, which must never reach a log.
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, PublicError):
            if self._finished:
                return
            level = logging.WARNING if e.status >= 500 else logging.INFO
            log.log(
                level, "%s %s -> %d %s", self.request.method, self.request.path, e.status, e.message
            )
            self.send_error(e.status, reason=e.reason, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        raise NotFound(f"No such endpoint: {self.request.path}")
