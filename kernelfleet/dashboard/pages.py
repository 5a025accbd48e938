"""The dashboard's HTML pages: login and logout, overview, kernels, kernelspecs (list, details,
the create / edit form) and the progress of a kernelspec install.

Pages are rendered on the server (Jinja2, autoescaped) with what is known at that moment; the
overview and the kernels page then follow the live feed (:mod:`kernelfleet.dashboard.live`)
from ``static/dashboard.js``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tornado.escape import url_unescape

from kernelfleet.dashboard import guard, specform
from kernelfleet.dashboard.core import Dashboard
from kernelfleet.dashboard.session import new_nonce
from kernelfleet.dashboard.web import DashboardHandler
from kernelfleet.errors import Forbidden, NotFound, PublicError
from kernelfleet.kernels.catalog import SpecEntry
from kernelfleet.kernels.events import backend_of
from kernelfleet.specs.kinds import KINDS

#: How long the login form stays valid, in seconds.
LOGIN_FORM_SECONDS = 900
_NEXT = re.compile(r"^/[A-Za-z0-9_./%?=&-]*$")


class LoginPage(DashboardHandler):
    """Takes a token (checked as the API checks it) and keeps a signed session in a cookie."""

    public = True

    def get(self) -> None:
        if self.dash.session_of(self.get_cookie(guard.SESSION_COOKIE)) is not None:
            self.redirect(self._next())
            return
        self._form()

    def _form(self, status: int = 200, error: str = "") -> None:
        nonce = new_nonce()
        self.set_cookie(
            guard.LOGIN_COOKIE,
            nonce,
            **guard.cookie_attributes(  # type: ignore[arg-type]
                path=self.admin_path, secure=self.secure, max_age=LOGIN_FORM_SECONDS
            ),
        )
        self.page(
            "login.html",
            status,
            login_token=self.dash.codec.login_token(nonce),
            next=self._next(),
            error=error,
        )

    def _next(self) -> str:
        wanted = unquote(self.get_argument("next", "") or "")
        if wanted.startswith(self.admin_path) and _NEXT.match(wanted) and "//" not in wanted:
            return wanted
        return self.admin_path

    async def post(self) -> None:
        self.check_same_origin()
        if not self.dash.codec.login_ok(
            self.get_cookie(guard.LOGIN_COOKIE), self.get_body_argument(guard.CSRF_FIELD, None)
        ):
            raise Forbidden(
                "The login form has expired or did not come from this page: reload it and try "
                "again.",
                reason="CSRF Check Failed",
            )
        token = self.get_body_argument("token", "").strip()
        if not token:
            self._form(400, "Enter a token.")
            return
        try:
            identity, session = await self.dash.login(token)
        except PublicError as exc:
            if exc.status in {401, 400}:
                self._form(401, "That token is not valid for this gateway.")
                return
            raise
        self.clear_cookie(guard.LOGIN_COOKIE, path=self.admin_path)
        lifetime = int(session.expires - session.issued)
        self.set_cookie(
            guard.SESSION_COOKIE,
            self.dash.codec.encode(session),
            **guard.cookie_attributes(  # type: ignore[arg-type]
                path=self.admin_path, secure=self.secure, max_age=lifetime
            ),
        )
        self.identity = identity
        self.redirect(self._next(), status=303)


class LogoutHandler(DashboardHandler):
    def post(self) -> None:
        if self.session is not None:
            self.dash.revoke(self.session)
        self.clear_cookie(guard.SESSION_COOKIE, path=self.admin_path)
        self.redirect(f"{self.admin_path}/login", status=303)


class OverviewPage(DashboardHandler):
    async def get(self) -> None:
        feed = self.dash.feed
        if not feed.hosts:
            await feed.refresh_hosts(probe=False)
        rows = feed.rows()
        self.page("overview.html", nav="overview", overview=await feed.overview(rows))


class KernelsPage(DashboardHandler):
    def get(self) -> None:
        rows = sorted(self.dash.feed.rows().values(), key=lambda r: r["created"])
        self.page("kernels.html", nav="kernels", kernels=rows)


def profiles_for(dash: Dashboard, entry: SpecEntry) -> list[str]:
    """The kernel profiles that apply to *entry* (the profiles configuration decides, by
    kernelspec name patterns and backends; see kernelfleet.kernels.profiles)."""
    backend = backend_of(entry.spec)
    table = dash.registry.profiles.table()
    return sorted(n for n, p in table.profiles.items() if p.applies_to(entry.name, backend))


def spec_summary(entry: SpecEntry, profiles: list[str]) -> dict[str, Any]:
    meta = entry.spec.get("metadata") if isinstance(entry.spec.get("metadata"), dict) else {}
    stanza = meta.get("kernel_provisioner") if isinstance(meta, dict) else None
    config = stanza.get("config") if isinstance(stanza, dict) else None
    config = config if isinstance(config, dict) else {}
    hosts = config.get("remote_hosts") or []
    if isinstance(hosts, str):
        hosts = [h.strip() for h in hosts.split(",") if h.strip()]
    policy = entry.policy
    return {
        "name": entry.name,
        "display_name": str(entry.spec.get("display_name") or entry.name),
        "language": str(entry.spec.get("language") or ""),
        "backend": backend_of(entry.spec),
        "hosts": [str(h) for h in hosts],
        "authorized_users": sorted(policy.authorized_users),
        "unauthorized_users": sorted(policy.unauthorized_users),
        "authorized_groups": sorted(policy.authorized_groups),
        "resource_dir": entry.resource_dir,
        "editable": specform.values_from_spec(entry.spec) is not None,
        "profiles": profiles,
    }


class SpecsPage(DashboardHandler):
    async def get(self) -> None:
        entries = await self.dash.catalog.all()
        specs = [spec_summary(e, profiles_for(self.dash, e)) for _, e in sorted(entries.items())]
        self.page("specs.html", nav="specs", specs=specs)


class SpecPage(DashboardHandler):
    async def get(self, name: str) -> None:
        entry = await self.dash.catalog.get(url_unescape(name))
        self.page(
            "spec.html",
            nav="specs",
            spec=spec_summary(entry, profiles_for(self.dash, entry)),
            kernel_json=json.dumps(entry.spec, indent=2, sort_keys=True),
        )


class SpecFormPage(DashboardHandler):
    """``/admin/specs/new`` and ``/admin/specs/<name>/edit``: GET shows the form, POST checks it
    and, if it is valid, starts the install + sync job and shows its progress."""

    async def _editing(self, name: str | None) -> SpecEntry | None:
        if name is None:
            return None
        entry = await self.dash.catalog.get(url_unescape(name))
        if specform.values_from_spec(entry.spec) is None:
            raise NotFound(
                f"Kernelspec {entry.name!r} was not written by 'kernelfleet spec install', so "
                "the form cannot edit it without losing what it does not know about.",
                reason="Not Editable",
            )
        return entry

    async def get(self, name: str | None = None) -> None:
        entry = await self._editing(name)
        if entry is None:
            values = specform.default_values()
        else:
            values = specform.values_from_spec(entry.spec) or {}
            values["kernel_name"] = entry.name
        self._show(values, {}, entry)

    def _show(
        self, values: dict[str, Any], errors: dict[str, str], entry: SpecEntry | None
    ) -> None:
        self.page(
            "spec_form.html",
            400 if errors else 200,
            nav="specs",
            editing=entry.name if entry is not None else "",
            values=values,
            errors=errors,
            common=specform.COMMON_FIELDS,
            kinds={kind: specform.kind_fields(kind) for kind in KINDS},
            kind_names=list(KINDS),
            where=str(self.dash.spec_root()) if entry is None else str(Path(entry.resource_dir)),
        )

    async def post(self, name: str | None = None) -> None:
        entry = await self._editing(name)
        raw = {k: self.get_body_argument(k) for k in self.request.body_arguments}
        raw.pop(guard.CSRF_FIELD, None)
        if entry is not None:
            raw["kernel_name"] = entry.name  # an edit keeps its name
            existing: frozenset[str] = frozenset()
        else:
            existing = frozenset(await self.dash.catalog.all())
        result = specform.parse_form(raw, existing=existing)
        if not result.ok or result.options is None:
            self._show(result.values, result.errors, entry)
            return
        root = Path(entry.resource_dir).parent if entry is not None else self.dash.spec_root()
        job = self.dash.jobs.start(
            result.options, root, replace=entry is not None, actor=self.identity.user
        )
        self.redirect(f"{self.admin_path}/jobs/{job.id}", status=303)


class JobPage(DashboardHandler):
    def get(self, job_id: str) -> None:
        job = self.dash.jobs.get(job_id)
        if job is None:
            raise NotFound(f"No kernelspec job {job_id!r} (jobs are kept in memory, the last 20).")
        self.page("job.html", nav="specs", job=job.model(), lines=job.lines)
