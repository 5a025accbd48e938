"""Liveness and readiness, for proxies and Kubernetes probes: no credentials, no details.

``GET <base_url>healthz`` answers 200 while the process serves HTTP at all (liveness: restart
the gateway when it stops answering). ``GET <base_url>readyz`` answers 200 once the gateway
has reattached its kernels and started its services, and 503 from the moment it begins to
stop (readiness: send it requests or not). Both bodies are ``{"status": …}`` and nothing
else: no version, no counts, no host names, no ``Server`` header; probes need no more, and
anyone can call them.
"""

from __future__ import annotations

import json
from typing import Any

from tornado import web

from kernelfleet.gateway.base import Services


class _ProbeHandler(web.RequestHandler):
    def set_default_headers(self) -> None:
        self.clear_header("Server")
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")

    def _answer(self, ok: bool) -> None:
        self.set_status(200 if ok else 503)
        self.finish(json.dumps({"status": "ok" if ok else "unavailable"}))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:  # RFC 9110: say which methods the URL takes
            self.set_header("Allow", "GET, HEAD")
        self.finish(json.dumps({"status": "error"}))


class LiveHandler(_ProbeHandler):
    def get(self) -> None:
        self._answer(True)

    head = get


class ReadyHandler(_ProbeHandler):
    def get(self) -> None:
        services: Services = self.settings["kf"]
        self._answer(services.ready and not services.registry.closing)

    head = get


def routes(base: str) -> list[tuple[str, type[Any]]]:
    return [(rf"{base}healthz", LiveHandler), (rf"{base}readyz", ReadyHandler)]
