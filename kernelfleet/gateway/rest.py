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
from kernelfleet.kernels import profiles as prof
from kernelfleet.kernels.events import backend_of
from kernelfleet.kernels.logs import kernel_log
from kernelfleet.kernels.record import kernel_model


class ApiHandler(BaseHandler):
    def get(self) -> None:
        model: dict[str, Any] = {
            "version": jupyter_server.__version__,
            "kernelfleet_version": __version__,
        }
        if self.kf.generation is not None:
            model["config"] = self.kf.generation().model()
        self.write_json(model)


class SpecYamlHandler(BaseHandler):
    _cache: bytes | None = None

    async def get(self) -> None:
        if SpecYamlHandler._cache is None:
            ref = resources.files("kernelfleet.gateway").joinpath("openapi.yaml")
            SpecYamlHandler._cache = await asyncio.to_thread(ref.read_bytes)
        self.set_header("Content-Type", "text/x-yaml; charset=utf-8")
        self.finish(SpecYamlHandler._cache)


# -- kernelspecs ----------------------------------------------------------------------------


class _SpecModels(BaseHandler):
    def _offer(self, user: str | None) -> tuple[prof.ProfileTable, prof.Allowance]:
        """The profile table and the allowance of *user* (else the caller) for listings."""
        table = self.kf.registry.profiles.table()
        identity = self.identity
        if user and user != identity.user and identity.admin:
            return table, prof.allowance_for(user, (), table.allowances)
        return table, prof.allowance_for(identity.user, identity.groups, table.allowances)

    async def _one(self, name: str, user: str | None) -> dict[str, Any]:
        """The model of kernelspec *name*, which may be a published pair <spec>--<profile>."""
        table, allowance = self._offer(user)
        base, profile_name = prof.split_published(name, table.profiles)
        entry = await self.kf.catalog.get(base)
        model = entry.model(self.kf.base_url)
        if profile_name is None:
            return model
        profile = table.profiles[profile_name]
        if not (
            profile.applies_to(base, backend_of(entry.spec)) and allowance.allows(profile_name)
        ):
            raise NotFound(
                f"No such kernelspec: '{name}'. GET /api/kernelspecs lists the available ones.",
                reason="No Such Kernelspec",
            )
        return prof.published_model(model, profile)


class KernelSpecsHandler(_SpecModels):
    async def get(self) -> None:
        catalog = self.kf.catalog
        user = self.get_query_argument("user", None)
        if user and self.identity.name_fixed:
            # a name an authority verified (JupyterHub): jupyter_server's ?user= (its
            # KERNEL_USERNAME) cannot list another user's kernelspecs
            _, slash, name = user.partition("/")
            user = f"{self.identity.user}/{name}" if slash else self.identity.user
        if user and "/" in user:
            # jupyter_server with KERNEL_USERNAME asks for one spec as ?user=<u>/<name>.
            owner, _, name = user.partition("/")
            self.write_json(await self._one(name, owner))
            return
        specs = await catalog.all()
        table, allowance = self._offer(user)
        default = await catalog.default_name()
        models = {}
        for name, entry in specs.items():
            pol = entry.policy
            if user and (
                user in pol.unauthorized_users
                or (pol.authorized_users and user not in pol.authorized_users)
            ):
                continue
            model = entry.model(self.kf.base_url)
            offered = prof.offered(name, backend_of(entry.spec), table, allowance)
            if offered is None:
                models[name] = model
                continue
            pairs = [prof.published_model(model, profile) for profile in offered]
            models.update((pair["name"], pair) for pair in pairs)
            if name == default and pairs:  # the default profile's pair comes first
                default = pairs[0]["name"]
        self.write_json({"default": default, "kernelspecs": models})


class KernelSpecHandler(_SpecModels):
    async def get(self, name: str) -> None:
        self.write_json(await self._one(url_unescape(name), None))


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
