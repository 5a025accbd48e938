"""The dashboard's options: each a config entry, a ``--DashboardSettings.*`` flag and a
``KF_DASHBOARD_*`` environment variable (:func:`kernelfleet.config.option`)."""

from __future__ import annotations

import os

from traitlets import Bool, Float, Int, Unicode
from traitlets.config import LoggingConfigurable

from kernelfleet.config import option


class DashboardSettings(LoggingConfigurable):
    """Options of the admin dashboard at ``<base_url>admin``."""

    enabled = option(
        Bool(
            True,
            help="""Serve the admin dashboard at <base_url>admin (admins only; the API is
            unaffected either way). Default: true.""",
        ),
        "KF_DASHBOARD",
    )
    secret_file = option(
        Unicode(
            "",
            help="""File holding the key that signs dashboard sessions and CSRF tokens (created
            with mode 0600 if missing). Gateways behind one address must share it; replacing it
            ends every session. Default: <data_dir>/secret/dashboard.key.""",
        ),
        "KF_DASHBOARD_SECRET_FILE",
    )
    session_hours = option(
        Float(
            8.0,
            help="""How long, in hours, a dashboard login lasts before the admin must enter a
            token again. Default: 8.""",
        ),
        "KF_DASHBOARD_SESSION_HOURS",
    )
    secure_cookie = option(
        Bool(
            False,
            help="""Mark the session cookie Secure even on plain HTTP requests (behind a proxy
            that terminates TLS without X-Forwarded-Proto). It is always Secure on HTTPS.
            Default: false.""",
        ),
        "KF_DASHBOARD_SECURE_COOKIE",
    )
    live_interval = option(
        Float(
            1.0,
            help="""Seconds between two comparisons of the kernels' state (execution state,
            connections, memory) whose changes are pushed to open dashboards; kernel events
            (start, stop, restart, ...) are pushed at once. Default: 1.0.""",
        ),
        "KF_DASHBOARD_LIVE_INTERVAL",
    )
    host_check_interval = option(
        Float(
            5.0,
            help="""Seconds between two health checks of the SSH hosts while a dashboard is
            open: load and free memory from each connected host's agent, and a connection
            attempt to a host that is down once its backoff has passed. 0: show only what
            kernel starts find out. Default: 5.""",
        ),
        "KF_DASHBOARD_HOST_CHECK_INTERVAL",
    )
    spec_dir = option(
        Unicode(
            "",
            help="""The kernels directory where kernelspecs created with the dashboard's form
            are written (it must be on the gateway's Jupyter path). An edited kernelspec is
            rewritten where it is. Default: where 'kernelfleet spec install' writes, the
            system-wide Jupyter directory (e.g. /usr/local/share/jupyter/kernels).""",
        ),
        "KF_DASHBOARD_SPEC_DIR",
    )
    recent_failures = option(
        Int(
            20,
            help="""How many recent failed or refused kernel starts the overview lists, with
            their reasons. Default: 20.""",
        ),
        "KF_DASHBOARD_RECENT_FAILURES",
    )
    log_kb = option(
        Int(
            64,
            help="""How much of the end of a kernel's log the dashboard shows, in KiB.
            Default: 64.""",
        ),
        "KF_DASHBOARD_LOG_KB",
    )

    def secret_path(self, data_dir: str) -> str:
        return self.secret_file or os.path.join(data_dir, "secret", "dashboard.key")
