"""Wiring: the dashboard's routes, and :func:`install`, which adds them to a gateway.

The kernel environment pages (:mod:`kernelfleet.dashboard.envpages`) are routed only when
``install`` is given the gateway's :class:`~kernelfleet.envs.api.EnvApi` (``kernelfleet serve``
installs both).

The gateway does not import the dashboard (it is a layer above it): ``kernelfleet serve`` (and a
test) calls ``install(gateway)`` before the gateway starts, which appends a route provider to
:attr:`Gateway.route_providers`. Every route lives under ``<base_url>admin``.
"""

from __future__ import annotations

from typing import Any

from kernelfleet.dashboard import actions, envpages, pages
from kernelfleet.dashboard.core import Dashboard
from kernelfleet.dashboard.settings import DashboardSettings
from kernelfleet.dashboard.web import StaticHandler
from kernelfleet.envs.api import EnvApi
from kernelfleet.gateway.app import Gateway

KERNEL_ID = r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)"
SPEC_NAME = r"(?P<name>[\w.\-%]+)"


def routes(dash: Dashboard, base: str) -> list[tuple[str, type[Any], dict[str, Any]]]:
    """The dashboard's routes under *base* (the gateway's normalized base URL)."""
    admin = f"{base}admin"
    kw = {"dash": dash, "base": base}
    envs = envpages.routes(admin, kw) if dash.envs is not None else []
    return [
        *envs,
        (rf"{admin}/?", pages.OverviewPage, kw),
        (rf"{admin}/login", pages.LoginPage, kw),
        (rf"{admin}/logout", pages.LogoutHandler, kw),
        (rf"{admin}/kernels/?", pages.KernelsPage, kw),
        (rf"{admin}/specs/?", pages.SpecsPage, kw),
        (rf"{admin}/specs/new", pages.SpecFormPage, kw),
        (rf"{admin}/specs/{SPEC_NAME}/edit", pages.SpecFormPage, kw),
        (rf"{admin}/specs/{SPEC_NAME}", pages.SpecPage, kw),
        (rf"{admin}/jobs/(?P<job_id>[0-9a-f]+)", pages.JobPage, kw),
        (rf"{admin}/api/events", actions.LiveEventsHandler, kw),
        (
            rf"{admin}/api/kernels/{KERNEL_ID}/(?P<action>interrupt|restart|shutdown)",
            actions.KernelActionHandler,
            kw,
        ),
        (rf"{admin}/api/kernels/{KERNEL_ID}/log", actions.KernelLogHandler, kw),
        (rf"{admin}/api/jobs/(?P<job_id>[0-9a-f]+)/events", actions.JobEventsHandler, kw),
        (rf"{admin}/static/(.*)", StaticHandler, {"path": dash.static_path}),
    ]


def install(gateway: Gateway, envs: EnvApi | None = None) -> Dashboard | None:
    """Serve the dashboard from *gateway* (unless ``DashboardSettings.enabled`` is off);
    call before :meth:`Gateway.start`. *envs*: the gateway's kernel environments, whose pages
    are shown only when given. Returns the dashboard, or None when it is off."""
    settings = DashboardSettings(parent=gateway)
    if not settings.enabled:
        return None
    dash = Dashboard(
        settings,
        registry=gateway.registry,
        catalog=gateway.catalog,
        auth=gateway.auth,
        config=gateway.config,
        data_dir=gateway.data_dir,
        envs=envs,
    )
    gateway.route_providers.append(lambda base: routes(dash, base))
    gateway.stop_hooks.append(dash.close)
    return dash
