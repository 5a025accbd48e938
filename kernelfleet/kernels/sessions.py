"""Sessions (``/api/sessions``): a notebook path bound to a kernel, kept in memory.

jupyter_server keeps its own sessions and never forwards them to a gateway; these serve
clients that talk to the gateway directly (tools, Enterprise Gateway's clients). A session is
owned by its creator, like its kernel.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from kernelfleet.errors import BadRequest, NotFound
from kernelfleet.kernels.identity import Identity
from kernelfleet.kernels.record import kernel_model
from kernelfleet.kernels.registry import KernelRegistry


@dataclass
class Session:
    id: str
    owner: str
    path: str
    name: str
    type: str
    kernel_id: str


class SessionStore:
    def __init__(self, registry: KernelRegistry) -> None:
        self.registry = registry
        self.sessions: dict[str, Session] = {}
        registry.on_kernel_removed.append(self._kernel_removed)

    def _kernel_removed(self, kernel_id: str) -> None:
        for sid in [s.id for s in self.sessions.values() if s.kernel_id == kernel_id]:
            del self.sessions[sid]

    def model(self, session: Session) -> dict[str, Any]:
        record = self.registry.records.get(session.kernel_id)
        return {
            "id": session.id,
            "path": session.path,
            "name": session.name,
            "type": session.type,
            "kernel": kernel_model(record) if record else None,
        }

    def visible(self, identity: Identity) -> list[Session]:
        return [s for s in self.sessions.values() if identity.may_access(s.owner)]

    def get(self, session_id: str, identity: Identity) -> Session:
        session = self.sessions.get(session_id)
        if session is None or not identity.may_access(session.owner):
            raise NotFound(f"Session does not exist: {session_id}", reason="No Such Session")
        return session

    async def create(self, identity: Identity, body: dict[str, Any]) -> Session:
        path = body.get("path") or ""
        name = body.get("name") or ""
        stype = body.get("type") or "notebook"
        if not all(isinstance(v, str) for v in (path, name, stype)):
            raise BadRequest("'path', 'name' and 'type' must be strings.")
        kernel = body.get("kernel") or {}
        if not isinstance(kernel, dict):
            raise BadRequest("'kernel' must be an object with 'name' or 'id'.")
        if kernel.get("id"):
            record = await self.registry.find(str(kernel["id"]), identity)
        else:
            record = await self.registry.start_kernel(
                identity, {"name": kernel.get("name"), "env": body.get("env") or kernel.get("env")}
            )
        session = Session(str(uuid.uuid4()), record.owner, path, name, stype, record.id)
        self.sessions[session.id] = session
        return session

    async def update(self, session_id: str, identity: Identity, body: dict[str, Any]) -> Session:
        session = self.get(session_id, identity)
        for key in ("path", "name", "type"):
            if key in body:
                if not isinstance(body[key], str):
                    raise BadRequest(f"'{key}' must be a string.")
                setattr(session, key, body[key])
        kernel = body.get("kernel")
        if isinstance(kernel, dict):
            if kernel.get("id"):
                session.kernel_id = (await self.registry.find(str(kernel["id"]), identity)).id
            elif kernel.get("name"):
                old = session.kernel_id
                record = await self.registry.start_kernel(identity, {"name": kernel["name"]})
                session.kernel_id = record.id
                if old in self.registry.records:
                    await self.registry.shutdown_kernel(old, identity)
        return session

    async def delete(self, session_id: str, identity: Identity) -> None:
        session = self.get(session_id, identity)
        self.sessions.pop(session_id, None)
        if session.kernel_id in self.registry.records:
            await self.registry.shutdown_kernel(session.kernel_id, identity)
