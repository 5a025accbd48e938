"""The one exception family whose text is safe to show a user.

Anything raised as a :class:`PublicError` reaches the client as JSON
``{"reason": <reason>, "message": <message>}`` with :attr:`status`. Every other exception is
logged with context and answered with a generic 500 that carries no internals. Messages are
formatted where they are raised: a message says what failed, where (which host, which
kernelspec), and what to do about it.
"""

from __future__ import annotations


class PublicError(Exception):
    """An error whose message is written for the user who caused it."""

    status: int = 500
    reason: str = "Internal Server Error"

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason

    def to_json(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message}


class BadRequest(PublicError):
    status = 400
    reason = "Bad Request"


class Unauthorized(PublicError):
    status = 401
    reason = "Unauthorized"


class Forbidden(PublicError):
    status = 403
    reason = "Forbidden"


class NotFound(PublicError):
    status = 404
    reason = "Not Found"


class PayloadTooLarge(PublicError):
    status = 413
    reason = "Payload Too Large"


class HeadersTooLarge(PublicError):
    status = 431
    reason = "Request Header Fields Too Large"


class Conflict(PublicError):
    status = 409
    reason = "Conflict"


class LimitReached(PublicError):
    """A kernel limit (global or per user) would be exceeded."""

    status = 403
    reason = "Kernel Limit Reached"


class LaunchFailed(PublicError):
    """The kernel process could not be started or never became ready."""

    status = 500
    reason = "Kernel Launch Failed"


class LaunchTimeout(LaunchFailed):
    status = 504
    reason = "Kernel Launch Timeout"


class ResourcesUnavailable(PublicError):
    """A resource manager cannot run the kernel now (a full queue, no active manager)."""

    status = 503
    reason = "Cluster Resources Unavailable"


class HostsUnavailable(PublicError):
    """No host allowed for the kernelspec can take a kernel right now.

    :attr:`hosts` maps each host that was tried to why it is out (empty when none was)."""

    status = 503
    reason = "No Host Available"

    def __init__(
        self, message: str, *, hosts: dict[str, str] | None = None, reason: str | None = None
    ):
        super().__init__(message, reason=reason)
        self.hosts: dict[str, str] = dict(hosts or {})


def describe(exc: BaseException, limit: int = 500) -> str:
    """*exc* for a user-facing message: its text (or its type), at most *limit* characters."""
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "…"
