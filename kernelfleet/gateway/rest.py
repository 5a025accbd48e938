"""The REST handlers of the Kernel Gateway API. Thin: parse, call the registry, render.

Why not jupyter_server's own handlers: they authorize per resource type, not per kernel
owner, list every kernel to every caller, and render errors and models in ways the gateway
client trips over (contract.md). The wire codecs and the kernel lifecycle (jupyter_client) are
reused; the policy here is ours.
"""

from __future__ import annotations

import asyncio
import mimetypes
from importlib import resources
from typing import Any

import jupyter_server
from tornado.escape import url_unescape

from kernelfleet import __version__
from kernelfleet.errors import NotFound
from kernelfleet.gateway.base import BaseHandler
from kernelfleet.kernels.logs import kernel_log
from kernelfleet.kernels.record import kernel_model


class ApiHandler(BaseHandler):
    def get(self) -> None:
        self.write_json({"version": jupyter_server.__version__, "kernelfleet_version": __version__})


class SpecYamlHandler(BaseHandler):
    _cache: bytes | None = None

    async def get(self) -> None:
        if SpecYamlHandler._cache is None:
            ref = resources.files("kernelfleet.gateway").joinpath("openapi.yaml")
            SpecYamlHandler._cache = await asyncio.to_thread(ref.read_bytes)
        self.set_header("Content-Type", "text/x-yaml; charset=utf-8")
        self.finish(SpecYamlHandler._cache)


# -- kernelspecs ----------------------------------------------------------------------------


class KernelSpecsHandler(BaseHandler):
    async def get(self) -> None:
        catalog = self.kf.catalog
        user = self.get_query_argument("user", None)
        if user and "/" in user:
            # jupyter_server with KERNEL_USERNAME asks for one spec as ?user=<u>/<name>.
            _, _, name = user.partition("/")
            entry = await catalog.get(name)
            self.write_json(entry.model(self.kf.base_url))
            return
        specs = await catalog.all()
        models = {}
        for name, entry in specs.items():
            pol = entry.policy
            if user and (
                user in pol.unauthorized_users
                or (pol.authorized_users and user not in pol.authorized_users)
            ):
                continue
            models[name] = entry.model(self.kf.base_url)
        self.write_json({"default": await catalog.default_name(), "kernelspecs": models})


class KernelSpecHandler(BaseHandler):
    async def get(self, name: str) -> None:
        entry = await self.kf.catalog.get(url_unescape(name))
        self.write_json(entry.model(self.kf.base_url))


class KernelSpecResourceHandler(BaseHandler):
    async def get(self, name: str, path: str) -> None:
        await self._serve(name, path, include_body=True)

    async def head(self, name: str, path: str) -> None:
        await self._serve(name, path, include_body=False)

    async def _serve(self, name: str, path: str, *, include_body: bool) -> None:
        full = await self.kf.catalog.resource_file(url_unescape(name), path)
        mime, _ = mimetypes.guess_type(full)
        self.set_header("Content-Type", mime or "application/octet-stream")
        self.set_header("Cache-Control", "max-age=3600")
        if include_body:
            self.finish(await asyncio.to_thread(_read_bytes, full))
        else:
            self.finish()


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


# -- kernels --------------------------------------------------------------------------------


class KernelsHandler(BaseHandler):
    async def get(self) -> None:
        await self.kf.registry.refresh()
        records = self.kf.registry.visible(self.identity)
        self.write_json([kernel_model(r) for r in records])

    async def post(self) -> None:
        record = await self.kf.registry.start_kernel(self.identity, self.json_body())
        self.set_header("Location", f"{self.kf.base_url.rstrip('/')}/api/kernels/{record.id}")
        self.write_json(kernel_model(record), status=201)


class KernelHandler(BaseHandler):
    async def get(self, kernel_id: str) -> None:
        self.write_json(kernel_model(await self.kf.registry.find(kernel_id, self.identity)))

    async def delete(self, kernel_id: str) -> None:
        await self.kf.registry.shutdown_kernel(kernel_id, self.identity)
        self.set_status(204)
        self.finish()


class KernelActionHandler(BaseHandler):
    async def post(self, kernel_id: str, action: str) -> None:
        registry = self.kf.registry
        if action == "interrupt":
            await registry.interrupt_kernel(kernel_id, self.identity)
            self.set_status(204)
            self.finish()
            return
        record = await registry.restart_kernel(kernel_id, self.identity)
        self.write_json(kernel_model(record))


class KernelLogsHandler(BaseHandler):
    """The kernel's stdout/stderr, for its owner and admins: "my kernel died" without a shell."""

    async def get(self, kernel_id: str) -> None:
        record = await self.kf.registry.find(kernel_id, self.identity)
        max_bytes = _int_arg(self.get_query_argument("max_bytes", None), 65536)
        text = await kernel_log(record, max_bytes)
        if text is None:
            raise NotFound(f"No log is kept for kernel {kernel_id}.")
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text)


def _int_arg(raw: str | None, default: int) -> int:
    try:
        return max(1, min(int(raw), 16 * 1024 * 1024)) if raw else default
    except ValueError:
        return default


# -- sessions -------------------------------------------------------------------------------


class SessionsHandler(BaseHandler):
    def get(self) -> None:
        store = self.kf.sessions
        self.write_json([store.model(s) for s in store.visible(self.identity)])

    async def post(self) -> None:
        store = self.kf.sessions
        session = await store.create(self.identity, self.json_body())
        self.write_json(store.model(session), status=201)


class SessionHandler(BaseHandler):
    def get(self, session_id: str) -> None:
        store = self.kf.sessions
        self.write_json(store.model(store.get(session_id, self.identity)))

    async def patch(self, session_id: str) -> None:
        store = self.kf.sessions
        session = await store.update(session_id, self.identity, self.json_body())
        self.write_json(store.model(session))

    async def delete(self, session_id: str) -> None:
        await self.kf.sessions.delete(session_id, self.identity)
        self.set_status(204)
        self.finish()


def routes(base: str) -> list[tuple[str, type[Any]]]:
    kid = r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)"
    return [
        (rf"{base}api/?", ApiHandler),
        (rf"{base}api/spec.yaml", SpecYamlHandler),
        (rf"{base}api/kernelspecs/?", KernelSpecsHandler),
        (rf"{base}api/kernelspecs/(?P<name>[\w.\-%]+)/?", KernelSpecHandler),
        (rf"{base}kernelspecs/(?P<name>[\w.\-%]+)/(?P<path>.+)", KernelSpecResourceHandler),
        (rf"{base}api/kernels/?", KernelsHandler),
        (rf"{base}api/kernels/{kid}/?", KernelHandler),
        (rf"{base}api/kernels/{kid}/(?P<action>interrupt|restart)/?", KernelActionHandler),
        (rf"{base}api/kernels/{kid}/logs/?", KernelLogsHandler),
        (rf"{base}api/sessions/?", SessionsHandler),
        (rf"{base}api/sessions/(?P<session_id>[\w-]+)/?", SessionHandler),
    ]
