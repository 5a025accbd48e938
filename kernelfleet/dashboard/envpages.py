"""The dashboard's kernel environment pages, shown when the gateway serves environments
(:class:`kernelfleet.envs.api.EnvApi`):

- ``admin/envs``: every environment, usage per owner against the quota, the builds running;
  per environment a Remove and a Rebuild button (forms posted to ``admin/envs/<name>/remove``
  and ``…/rebuild``, with the session's CSRF token like every dashboard action);
- ``admin/envs/new``: the form (:mod:`kernelfleet.dashboard.envform`); a valid one starts the
  build job and redirects to its progress page;
- ``admin/envs/jobs/<id>``: a build's progress, its lines followed live from
  ``admin/api/envs/jobs/<id>/events`` (server-sent events: ``line``, then ``done``).

Everything goes through the API's own object (:class:`EnvApi`: its service and its jobs), as
the admin who is logged in, so the dashboard refuses exactly what the API refuses, with the
API's message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kernelfleet.dashboard import envform, guard
from kernelfleet.dashboard.actions import EventStreamHandler
from kernelfleet.dashboard.live import Listener, frame
from kernelfleet.dashboard.web import DashboardHandler
from kernelfleet.envs.api import NAME, EnvApi
from kernelfleet.envs.jobs import EnvJob
from kernelfleet.envs.model import NAME_RE, EnvRecord, Quota, Usage
from kernelfleet.errors import Conflict, NotFound, PublicError

log = logging.getLogger("kernelfleet.dashboard")
JOB_ID = r"(?P<job_id>[0-9a-f]{16})"
MB = 1e6


def env_row(record: EnvRecord, job: EnvJob | None) -> dict[str, Any]:
    """One row of the environments table; *job*: the build running for it, if any."""
    return {
        "name": record.name,
        "owner": record.owner,
        "kernel_name": record.kernel_name,
        "kind": record.kind,
        "python": record.python_version or record.python,
        "size_mb": record.size_bytes / MB,
        "requested": list(record.requirements),
        "installed": len(record.locked),
        "state": record.state,
        "hosts": list(record.hosts),
        "job": job.id if job is not None else "",
    }


def usage_rows(usage: Mapping[str, Usage], quota: Quota) -> list[dict[str, Any]]:
    """Each owner's environments and megabytes beside the per-user limits, by owner."""
    return [
        {
            "owner": owner,
            "envs": u.envs,
            "max_envs": quota.max_per_user,
            "mb": u.mb,
            "max_mb": quota.max_disk_mb_per_user,
            "full": u.envs >= quota.max_per_user or u.mb >= quota.max_disk_mb_per_user,
        }
        for owner, u in sorted(usage.items())
    ]


def job_row(job: EnvJob) -> dict[str, Any]:
    last = job.lines[-1]["text"] if job.lines else ""
    return {"id": job.id, "env": job.env, "action": job.action, "actor": job.actor, "last": last}


class EnvPage(DashboardHandler):
    """A page of the environments (routed only when the dashboard has the :class:`EnvApi`)."""

    @property
    def envs(self) -> EnvApi:
        if self.dash.envs is None:  # the routes exist only when it is given
            raise NotFound("This gateway does not serve kernel environments.")
        return self.dash.envs

    def refuse_while_building(self, name: str) -> None:
        job = self.envs.jobs.running(name)
        if job is not None:
            raise Conflict(
                f"Environment '{name}' is being built (job {job.id}, a {job.action} by "
                f"{job.actor}). Wait until it ends, then try again."
            )

    async def show_envs(self, status: int = 200, *, error: str = "", notice: str = "") -> None:
        """The environments page; *error*: why the action asked for was refused."""
        api = self.envs
        caller = api.caller(self.identity)
        records = await asyncio.to_thread(api.service.visible, caller)
        usage = await asyncio.to_thread(api.service.usage)
        running = [j for j in api.jobs.jobs.values() if not j.done]
        by_env = {j.env: j for j in running}
        self.page(
            "envs.html",
            status,
            nav="envs",
            envs=[env_row(r, by_env.get(r.name)) for r in records],
            usage=usage_rows(usage, api.service.settings.quota()),
            jobs=[job_row(j) for j in running],
            error=error,
            notice=notice,
        )


class EnvsPage(EnvPage):
    async def get(self) -> None:
        removed = self.get_query_argument("removed", "")
        notice = f"Environment '{removed}' was removed." if NAME_RE.match(removed) else ""
        await self.show_envs(notice=notice)


class EnvActionHandler(EnvPage):
    """``POST admin/envs/<name>/remove`` and ``…/rebuild``. A refusal (in use, being built, no
    such environment) shows the environments page with the message."""

    async def post(self, name: str, action: str) -> None:
        try:
            self.refuse_while_building(name)
            if action == "rebuild":
                job = self.envs.start_rebuild(self.identity, name)
                self.redirect(f"{self.admin_path}/envs/jobs/{job.id}", status=303)
                return
            await self.envs.service.remove(name, self.envs.caller(self.identity))
            log.info("dashboard: %s removed environment %s", self.identity.user, name)
        except PublicError as exc:
            await self.show_envs(exc.status, error=exc.message)
            return
        self.redirect(f"{self.admin_path}/envs?removed={name}", status=303)


class EnvFormPage(EnvPage):
    """``admin/envs/new``: GET shows the form, POST starts the build or shows the form again
    with the API's message beside the field it is about."""

    async def get(self) -> None:
        pythons = await self.pythons()
        newest = pythons[-1]["path"] if pythons else ""
        await self.show(envform.default_values(newest), {}, pythons=pythons)

    async def pythons(self) -> list[dict[str, str]]:
        found = await self.envs.service.interpreters()
        ordered = sorted(found, key=lambda i: tuple(int(p) for p in i.version.split(".")))
        return [{"path": i.path, "version": i.version} for i in ordered]

    async def show(
        self,
        values: dict[str, Any],
        errors: dict[str, str],
        *,
        status: int = 200,
        pythons: list[dict[str, str]] | None = None,
    ) -> None:
        settings = self.envs.service.settings
        self.page(
            "env_form.html",
            status,
            nav="envs",
            values=values,
            errors=errors,
            fields={f.name: f for f in envform.FIELDS},
            allow_source=envform.ALLOW_SOURCE if settings.allow_source_builds else None,
            kinds={kind: envform.kind_fields(kind) for kind in envform.ENV_KINDS},
            pythons=pythons if pythons is not None else await self.pythons(),
            index_url=settings.index_url,
        )

    async def post(self) -> None:
        raw = {k: self.get_body_argument(k) for k in self.request.body_arguments}
        raw.pop(guard.CSRF_FIELD, None)
        source = self.envs.service.settings.allow_source_builds
        form = envform.parse_form(raw, source_allowed=source)
        if form.body is None:
            await self.show(form.values, form.errors, status=400)
            return
        try:
            job = await self.envs.start_create(self.identity, form.body)
        except PublicError as exc:
            name, message = envform.error_field(exc.message, form.values["kind"])
            await self.show(form.values, {name: message}, status=exc.status)
            return
        self.redirect(f"{self.admin_path}/envs/jobs/{job.id}", status=303)


class EnvJobPage(EnvPage):
    def get(self, job_id: str) -> None:
        job = self.envs.jobs.get(job_id)
        if job is None:
            raise NotFound(f"No environment job {job_id!r} (jobs are kept in memory, the last 50).")
        self.page("env_job.html", nav="envs", job=job.model(), lines=job.lines)


class EnvJobEventsHandler(EventStreamHandler):
    """A job's lines so far, then each new one as it comes, then ``done`` (``ok`` and
    ``error``); the stream ends with the job. A browser that falls far behind is cut off and
    reconnects (EventSource does), getting every line again."""

    _unsubscribe: Callable[[], None] | None = None

    async def open_listener(self) -> Listener:
        api = self.dash.envs
        job = api.jobs.get(self.path_kwargs["job_id"]) if api is not None else None
        if job is None:
            raise NotFound(f"No environment job {self.path_kwargs['job_id']!r}.")
        listener = Listener()
        if job.lines:  # one frame: a long history must not overflow the listener's queue
            listener.put("".join(frame("line", line) for line in job.lines))
        if job.done:
            listener.put(frame("done", {"ok": job.ok, "error": job.error}))
            listener.close()
            return listener

        def forward(kind: str, data: Any) -> None:
            listener.put(frame(kind, data))
            if kind == "done" or listener.behind:
                listener.close()

        job.subscribers.add(forward)
        self._unsubscribe = lambda: job.subscribers.discard(forward)
        return listener

    def close_listener(self, listener: Listener) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        listener.close()


def routes(admin: str, kw: dict[str, Any]) -> list[tuple[str, type[Any], dict[str, Any]]]:
    """The environment pages under *admin* (``<base_url>admin``)."""
    return [
        (rf"{admin}/envs/?", EnvsPage, kw),
        (rf"{admin}/envs/new", EnvFormPage, kw),
        (rf"{admin}/envs/jobs/{JOB_ID}", EnvJobPage, kw),
        (rf"{admin}/envs/{NAME}/(?P<action>remove|rebuild)", EnvActionHandler, kw),
        (rf"{admin}/api/envs/jobs/{JOB_ID}/events", EnvJobEventsHandler, kw),
    ]
