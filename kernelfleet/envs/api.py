"""The admin API of kernel environments, served by the gateway under ``<base_url>api/envs``.

=======  ==============================  ===================================================
GET      ``api/envs``                    the caller's environments (an admin's: all), usage
                                         per owner, the quota, the installed interpreters
POST     ``api/envs``                    start building one: 202 ``{"job": …}``
GET      ``api/envs/<name>``             one environment, with its lock
DELETE   ``api/envs/<name>``             remove it: 204, 409 while kernels use it
POST     ``api/envs/<name>/rebuild``     build it again from its lock: 202 ``{"job": …}``
GET      ``api/envs/jobs/<id>?after=N``  a job's lines after the N-th; waits up to 20 s for
                                         a new line (long poll), then answers anyway
=======  ==============================  ===================================================

The body of ``POST api/envs``::

    {"name": "pandas22", "packages": ["pandas==2.2.*", "scikit-learn"], "python": "3.11",
     "kind": "ssh", "spec": {"remote_hosts": ["host1"], "authorized_groups": ["ds"]},
     "owner": "alice", "allow_source": false}

``spec`` holds ``spec install``'s options by name: the shared ones (``kernel_name``,
``display_name``, ``authorized_users``, ``unauthorized_users``, ``authorized_groups``,
``launch_timeout``) and the kind's own. Everything is checked before the job starts (the
name, the quota, the package list, the kernelspec's options, the interpreter), so a bad
request is a 4xx naming the problem, not a failed job.

:func:`install` wires it into a gateway (as the dashboard is: the gateway does not import this
layer).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from kernelfleet.envs import service as env_service
from kernelfleet.envs.jobs import EnvJob, EnvJobs
from kernelfleet.envs.settings import EnvSettings
from kernelfleet.errors import BadRequest, Conflict, NotFound
from kernelfleet.gateway.app import Gateway
from kernelfleet.gateway.base import BaseHandler
from kernelfleet.kernels.identity import Identity
from kernelfleet.kernels.record import Lifecycle
from kernelfleet.specs import installer, kinds
from kernelfleet.specs.options import SpecOptions

NAME = r"(?P<name>[a-z0-9][a-z0-9_.\-]{0,62})"
LONG_POLL_SECONDS = 20.0
_COMMON = (
    "kernel_name",
    "display_name",
    "authorized_users",
    "unauthorized_users",
    "authorized_groups",
    "launch_timeout",
)
_LISTS = ("authorized_users", "unauthorized_users", "authorized_groups")


class EnvApi:
    """The service, its jobs, and the gateway's view of which kernels use what."""

    def __init__(self, gateway: Gateway, settings: EnvSettings) -> None:
        self.gateway = gateway
        self.jobs = EnvJobs()
        self.service = env_service.EnvService(
            settings,
            data_dir=gateway.data_dir,
            kernels_dir=Path(settings.kernels_dir)
            if settings.kernels_dir
            else installer.kernels_dir(),
            in_use=self.in_use,
            config=gateway.config,
            on_spec_written=gateway.catalog.invalidate,
        )
        self.service.forget_stale()

    async def in_use(self, kernel_name: str) -> list[str]:
        registry = self.gateway.registry
        await registry.refresh()
        everyone = Identity("kernelfleet", admin=True)
        return [
            r.id
            for r in registry.visible(everyone)
            if r.name == kernel_name and r.lifecycle is not Lifecycle.DEAD and not r.pooled
        ]

    def caller(self, identity: Identity) -> env_service.Caller:
        return env_service.Caller(identity.user, identity.admin, identity.groups)

    async def start_create(self, identity: Identity, body: dict[str, Any]) -> EnvJob:
        request = request_from_json(body)
        caller = self.caller(identity)
        self.refuse_while_building(request.name, "create")
        prepared = await self.service.prepare(request, caller)
        return self.jobs.start(
            request.name,
            "create",
            caller.user,
            lambda job: self.service.build_prepared(prepared, job),
        )

    def refuse_while_building(self, name: str, what: str) -> None:
        job = self.jobs.running(name)
        if job is not None:
            raise Conflict(
                f"Environment '{name}' is being built (job {job.id}); {what} it once the build "
                "is done."
            )

    def start_rebuild(self, identity: Identity, name: str) -> EnvJob:
        caller = self.caller(identity)
        self.service.get(name, caller)
        self.refuse_while_building(name, "rebuild")
        return self.jobs.start(
            name, "rebuild", caller.user, lambda job: self.service.rebuild(name, caller, job)
        )

    async def close(self) -> None:
        await self.jobs.close()


def request_from_json(body: dict[str, Any]) -> env_service.EnvRequest:
    """An :class:`EnvRequest` from the API's JSON; :class:`BadRequest` naming the field."""

    def text(key: str, default: str = "") -> str:
        value = body.get(key, default)
        if not isinstance(value, str):
            raise BadRequest(f"'{key}' must be a string.")
        return value

    packages = body.get("packages", [])
    if isinstance(packages, str):
        packages = packages.splitlines()
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        raise BadRequest("'packages' must be a list of strings (or lines of text).")
    kind = text("kind", "local")
    kind_class = kinds.KINDS.get(kind)
    if kind_class is None or kind not in env_service.KINDS:
        raise BadRequest(f"'kind' must be one of {', '.join(env_service.KINDS)}, not {kind!r}.")
    spec = body.get("spec", {})
    if not isinstance(spec, dict):
        raise BadRequest("'spec' must be an object of kernelspec options.")
    own = kind_class.option_traits()
    common: dict[str, Any] = {}
    kind_options: dict[str, Any] = {}
    for key, raw in spec.items():
        if key in _COMMON:
            common[key] = _common_value(key, raw)
        elif key in own:
            kind_options[key] = tuple(raw) if isinstance(raw, list) else raw
        else:
            raise BadRequest(
                f"'spec.{key[:60]}' is not an option of '{kind}' kernelspecs (shared: "
                f"{', '.join(_COMMON)}; the kind's: {', '.join(own) or 'none'})."
            )
    if "launch_timeout" not in common:
        default = kind_class.common_defaults.get("launch_timeout")
        common["launch_timeout"] = float(default.value) if default else 60.0
    allow_source = body.get("allow_source", False)
    if not isinstance(allow_source, bool):
        raise BadRequest("'allow_source' must be true or false.")
    return env_service.EnvRequest(
        name=text("name"),
        packages=tuple(packages),
        python=text("python", "3"),
        spec=SpecOptions(kind=kind, **common, kind_options=kind_options),
        owner=text("owner"),
        allow_source=allow_source,
    )


def _common_value(key: str, value: Any) -> Any:
    if key in _LISTS:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BadRequest(f"'spec.{key}' must be a list of strings.")
        return tuple(value)
    if key == "launch_timeout":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise BadRequest("'spec.launch_timeout' must be a number of seconds.")
        return float(value)
    if not isinstance(value, str):
        raise BadRequest(f"'spec.{key}' must be a string.")
    return value


class _Handler(BaseHandler):
    def initialize(self, api: EnvApi) -> None:
        self.api = api


class EnvsHandler(_Handler):
    async def get(self) -> None:
        api = self.api
        caller = api.caller(self.identity)
        records = await asyncio.to_thread(api.service.visible, caller)
        usage = await asyncio.to_thread(api.service.usage)
        quota = api.service.settings.quota()
        shown = usage if caller.admin else {k: v for k, v in usage.items() if k == caller.user}
        self.write_json(
            {
                "envs": [r.summary() for r in records],
                "usage": {owner: {"envs": u.envs, "bytes": u.bytes} for owner, u in shown.items()},
                "quota": {
                    "max_per_user": quota.max_per_user,
                    "max_disk_mb_per_user": quota.max_disk_mb_per_user,
                },
                "pythons": [dataclasses.asdict(i) for i in await api.service.interpreters()],
                "jobs": [j.model(len(j.lines)) for j in api.jobs.jobs.values() if not j.done],
            }
        )

    async def post(self) -> None:
        job = await self.api.start_create(self.identity, self.json_body())
        self.set_header("Location", f"{self.kf.base_url.rstrip('/')}/api/envs/jobs/{job.id}")
        self.write_json({"job": job.id, "env": job.env}, status=202)


class EnvHandler(_Handler):
    async def get(self, name: str) -> None:
        caller = self.api.caller(self.identity)
        record = await asyncio.to_thread(self.api.service.get, name, caller)
        self.write_json(record.summary())

    async def delete(self, name: str) -> None:
        caller = self.api.caller(self.identity)
        self.api.refuse_while_building(name, "remove")
        await self.api.service.remove(name, caller)
        self.set_status(204)
        self.finish()


class RebuildHandler(_Handler):
    async def post(self, name: str) -> None:
        job = self.api.start_rebuild(self.identity, name)
        self.set_header("Location", f"{self.kf.base_url.rstrip('/')}/api/envs/jobs/{job.id}")
        self.write_json({"job": job.id, "env": job.env}, status=202)


class JobHandler(_Handler):
    async def get(self, job_id: str) -> None:
        job = self.api.jobs.get(job_id)
        if job is None or not (self.identity.admin or job.actor == self.identity.user):
            raise NotFound(f"No environment job {job_id} (jobs are kept in memory, the last 50).")
        raw = self.get_query_argument("after", "0") or "0"
        after = int(raw) if raw.isdigit() else 0
        await job.wait_after(after, LONG_POLL_SECONDS)
        self.write_json(job.model(after))


def routes(api: EnvApi, base: str) -> list[tuple[str, type[Any], dict[str, Any]]]:
    kw = {"api": api}
    return [
        (rf"{base}api/envs/?", EnvsHandler, kw),
        (rf"{base}api/envs/jobs/(?P<job_id>[0-9a-f]{{16}})/?", JobHandler, kw),
        (rf"{base}api/envs/{NAME}/?", EnvHandler, kw),
        (rf"{base}api/envs/{NAME}/rebuild/?", RebuildHandler, kw),
    ]


def install(gateway: Gateway) -> EnvApi:
    """Serve the environments API from *gateway*; call before :meth:`Gateway.start`."""
    api = EnvApi(gateway, EnvSettings(parent=gateway))
    gateway.route_providers.append(lambda base: routes(api, base))
    gateway.stop_hooks.append(api.close)
    return api
