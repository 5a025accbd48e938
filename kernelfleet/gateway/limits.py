"""Limits on what one HTTP request may cost the gateway before it is authenticated and read.

Real API requests are a few kilobytes. Without limits a client (authenticated or not) could
make the gateway buffer 100 MiB bodies, hold a connection for an hour by never finishing its
headers, or send headers no parser should keep. So, for every request:

- **Headers** larger than ``max_header_kb`` are answered 431 (JSON). The server itself reads at
  most four times that much before it drops a connection without an answer.
- **Authentication and the body's declared size come before the body**: every handler streams
  its body, so a request without valid credentials (401), with a malformed ``Content-Length``
  (400) or a larger one than ``max_body_kb`` (413) is answered before a byte of its body is
  read; a chunked body is counted as it arrives and refused (413) once it passes the limit.
- **Time**: a client has ``header_timeout`` seconds to send its headers (also the idle time of a
  kept-alive connection) and ``body_timeout`` seconds to send its body.

Websocket frames have their own limit (the bridge's settings).
"""

from __future__ import annotations

from traitlets import Float, Int
from traitlets.config import LoggingConfigurable

from kernelfleet.config import option

#: How much more than ``max_header_kb`` the server reads before it drops a connection unanswered.
HEADER_SLACK = 4


class RequestLimits(LoggingConfigurable):
    """Per-request limits of the HTTP API (see the module docstring)."""

    max_body_kb = option(
        Int(
            1024,
            help="""Largest request body accepted, in KiB; a larger one is refused with 413
            before it is read. API requests are a few KiB (each KERNEL_* entry,
            NAME=value, is capped at 128 KiB). Default: 1024.""",
        ),
        "KF_MAX_BODY_KB",
    )
    max_header_kb = option(
        Int(
            64,
            help="""Largest total size of a request's headers, in KiB; larger ones are refused
            with 431. Default: 64.""",
        ),
        "KF_MAX_HEADER_KB",
    )
    header_timeout = option(
        Float(
            30.0,
            help="""Seconds a client has to send a request's headers (and how long an idle
            kept-alive connection stays open). Default: 30.""",
        ),
        "KF_HEADER_TIMEOUT",
    )
    body_timeout = option(
        Float(
            30.0,
            help="Seconds a client has to send a request's body. Default: 30.",
        ),
        "KF_BODY_TIMEOUT",
    )

    @property
    def max_body_bytes(self) -> int:
        return max(self.max_body_kb, 1) * 1024

    @property
    def max_header_bytes(self) -> int:
        return max(self.max_header_kb, 1) * 1024

    def server_options(self) -> dict[str, float | int]:
        """Keyword arguments for tornado's ``HTTPServer``."""
        return {
            "idle_connection_timeout": self.header_timeout,
            "body_timeout": self.body_timeout,
            "max_header_size": HEADER_SLACK * self.max_header_bytes,
            "max_body_size": self.max_body_bytes,
        }
