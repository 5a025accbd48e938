"""What every handler shares: authentication, the JSON error shape, CORS, JSON bodies."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tornado import web

from kernelfleet.errors import (
    BadRequest,
    HeadersTooLarge,
    NotFound,
    PayloadTooLarge,
    PublicError,
)
from kernelfleet.gateway.limits import HEADER_SLACK
from kernelfleet.kernels.identity import Identity

if TYPE_CHECKING:
    from collections.abc import Callable

    from kernelfleet.gateway.auth import Authenticator
    from kernelfleet.gateway.bridge import BridgeSettings, Traffic
    from kernelfleet.gateway.limits import RequestLimits
    from kernelfleet.gateway.reload import Generation
    from kernelfleet.kernels.catalog import KernelSpecCatalog
    from kernelfleet.kernels.registry import KernelRegistry
    from kernelfleet.kernels.sessions import SessionStore

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
    limits: RequestLimits
    traffic: Traffic
    base_url: str = "/"
    cors: CorsSettings = field(default_factory=CorsSettings)
    #: Whether the gateway is serving (readiness): set once started, cleared when stopping.
    ready: bool = False
    #: The configuration generation in force (kernelfleet.gateway.reload).
    generation: Callable[[], Generation] | None = None


@web.stream_request_body
class BaseHandler(web.RequestHandler):
    """Every handler authenticates and checks a request's size before reading its body (see
    :mod:`kernelfleet.gateway.limits`); the body then arrives through :meth:`data_received`."""

    identity: Identity
    _body: bytearray | None = None
    _body_over = False

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

    async def prepare(self) -> None:
        limits = self.kf.limits
        headers = self.request.headers
        size = sum(len(k) + len(v) + 4 for k, v in headers.get_all())
        if size > limits.max_header_bytes:
            raise HeadersTooLarge(
                f"Request headers are too large ({size // 1024} KiB, the limit is "
                f"{limits.max_header_kb} KiB); send fewer or smaller headers."
            )
        if self.request.method == "OPTIONS":
            return
        self.identity = await self.kf.auth.identify(headers, self.get_query_argument("token", None))
        declared = headers.get("Content-Length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise BadRequest(
                    f"Content-Length {declared[:40]!r} is not a byte count; send a valid one."
                )
            if int(declared) > limits.max_body_bytes:
                raise self._too_large(f"{-(-int(declared) // 1024)} KiB")  # rounded up
        # A chunked body over the limit is dropped as it arrives (json_body answers 413); the
        # server cuts off at four times the limit (a bare 400: it no longer reads at all).
        self.request.connection.set_max_body_size(HEADER_SLACK * limits.max_body_bytes)  # type: ignore[union-attr]

    def _too_large(self, size: str) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The request body is too large (the limit is {self.kf.limits.max_body_kb} KiB, "
            f"it has {size}); API requests are a few KiB."
        )

    def data_received(self, chunk: bytes) -> None:
        # Raising here would close the connection unanswered: mark and drop instead.
        body = self._body
        if body is None:
            body = self._body = bytearray()
        if self._body_over or len(body) + len(chunk) > self.kf.limits.max_body_bytes:
            self._body_over = True
            body.clear()
            return
        body.extend(chunk)

    def options(self, *args: Any, **kwargs: Any) -> None:
        self.set_status(204)
        self.finish()

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object; ``Content-Type`` is not required."""
        if self._body_over:
            raise self._too_large("more than that")
        raw = bytes(self._body or b"")
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"The request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise BadRequest("The request body is nested too deeply; send plain JSON.") from None
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        return body

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:  # RFC 9110: say which methods the URL takes
            own = type(self)
            allowed = [
                m
                for m in self.SUPPORTED_METHODS
                if getattr(own, m.lower(), None) is not getattr(web.RequestHandler, m.lower())
            ]
            self.set_header("Allow", ", ".join(allowed))
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
    async def prepare(self) -> None:
        raise NotFound(f"No such endpoint: {self.request.path}")
