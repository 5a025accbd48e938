"""A stand-in for JupyterHub's ``GET /hub/api/user``, in-process, for the verifier's unit tests.

It answers as JupyterHub 6 does for a user's token (name, admin, groups, kind, scopes), counts
the calls, and can be made slow (``gate``) or broken (``status``) to test caching, sharing and
outages. The real Hub is in test_jupyterhub.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tornado import httpserver, netutil, web


@dataclass
class FakeHub:
    #: token -> the user model the Hub returns for it
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: int = 0
    #: When set, every answer waits for it (concurrency tests).
    gate: asyncio.Event | None = None
    #: Answer every request with this status instead (outage tests).
    status: int | None = None
    body: bytes | None = None
    port: int = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hub/api"

    def add_user(
        self, token: str, name: str, *, groups: tuple[str, ...] = (), admin: bool = False
    ) -> None:
        self.users[token] = {
            "kind": "user",
            "name": name,
            "admin": admin,
            "groups": list(groups),
            "scopes": ["access:servers!server=" + name + "/", "users:activity!user=" + name],
            "session_id": None,
            "token_id": "a1",
        }


class _UserHandler(web.RequestHandler):
    def initialize(self, hub: FakeHub) -> None:
        self.hub = hub

    async def get(self) -> None:
        hub = self.hub
        hub.calls += 1
        if hub.gate is not None:
            await hub.gate.wait()
        if hub.status is not None:
            self.set_status(hub.status)
            self.finish(hub.body or b"{}")
            return
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        model = hub.users.get(token) if scheme == "token" else None
        if model is None:
            self.set_status(403)
            self.finish({"status": 403, "message": "Missing or invalid credentials."})
            return
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(model))


@contextlib.asynccontextmanager
async def fake_hub() -> AsyncIterator[FakeHub]:
    hub = FakeHub()
    app = web.Application([(r"/hub/api/user", _UserHandler, {"hub": hub})])
    server = httpserver.HTTPServer(app)
    sockets = netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    hub.port = sockets[0].getsockname()[1]
    try:
        yield hub
    finally:
        if hub.gate is not None:
            hub.gate.set()
        server.stop()
        await server.close_all_connections()
