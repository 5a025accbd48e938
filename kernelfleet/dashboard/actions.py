"""The dashboard's JSON and event-stream endpoints under ``<base_url>admin/api``.

They serve the dashboard's own pages (cookie session + CSRF token) and scripts (an admin's
``Authorization`` header). They are not the Kernel Gateway API: clients of kernels use
``/api``. Kernel actions go through the registry with ``source="dashboard"``, so the audit
log records them as the dashboard's, with the admin as the actor.
"""

from __future__ import annotations

import contextlib

from tornado.iostream import StreamClosedError

from kernelfleet.dashboard import guard, views
from kernelfleet.dashboard.live import Listener
from kernelfleet.dashboard.web import DashboardHandler
from kernelfleet.errors import NotFound
from kernelfleet.kernels.logs import kernel_log

#: Seconds between keep-alive comments on an idle event stream (proxies drop silent ones).
KEEPALIVE = 15.0
SOURCE = "dashboard"


class KernelActionHandler(DashboardHandler):
    api = True

    async def post(self, kernel_id: str, action: str) -> None:
        registry = self.dash.registry
        if action == "interrupt":
            await registry.interrupt_kernel(kernel_id, self.identity, source=SOURCE)
        elif action == "restart":
            await registry.restart_kernel(kernel_id, self.identity, source=SOURCE)
        else:
            await registry.shutdown_kernel(kernel_id, self.identity, source=SOURCE)
        record = registry.records.get(kernel_id)
        row = views.kernel_row(record, views.kernel_rss(record)) if record is not None else None
        self.write_json({"action": action, "kernel": row})


class KernelLogHandler(DashboardHandler):
    api = True

    async def get(self, kernel_id: str) -> None:
        record = await self.dash.registry.find(kernel_id, self.identity)
        text = await kernel_log(record, max(self.dash.settings.log_kb, 1) * 1024)
        if text is None:
            raise NotFound(f"No log is kept for kernel {kernel_id}.")
        self.write_json({"kernel_id": kernel_id, "text": text})


class EventStreamHandler(DashboardHandler):
    """A stream of server-sent events; subclasses say which listener it follows."""

    api = True
    listener: Listener | None = None

    async def open_listener(self) -> Listener:
        raise NotImplementedError

    def close_listener(self, listener: Listener) -> None:
        listener.close()

    async def get(self, **kwargs: str) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("X-Accel-Buffering", "no")  # nginx: pass events on at once
        listener = self.listener = await self.open_listener()
        try:
            self.write("retry: 3000\n\n")
            await self.flush()
            while True:
                text = await listener.next(KEEPALIVE)
                if text is None and listener.closed.is_set():
                    break
                if (
                    self.session is not None
                    and self.dash.session_of(self.get_cookie(guard.SESSION_COOKIE)) is None
                ):
                    break  # logged out or expired: the page's next reconnect goes to login
                self.write(text if text is not None else ": keep-alive\n\n")
                await self.flush()
        except StreamClosedError:
            pass
        finally:
            self.close_listener(listener)
        if not self._finished:
            with contextlib.suppress(StreamClosedError):
                self.finish()

    def on_connection_close(self) -> None:
        if self.listener is not None:
            self.listener.close()


class LiveEventsHandler(EventStreamHandler):
    async def open_listener(self) -> Listener:
        return await self.dash.feed.subscribe()

    def close_listener(self, listener: Listener) -> None:
        self.dash.feed.unsubscribe(listener)


class JobEventsHandler(EventStreamHandler):
    async def open_listener(self) -> Listener:
        job = self.dash.jobs.get(self.path_kwargs["job_id"])
        if job is None:
            raise NotFound(f"No kernelspec job {self.path_kwargs['job_id']!r}.")
        return job.listen()

    def close_listener(self, listener: Listener) -> None:
        job = self.dash.jobs.get(self.path_kwargs["job_id"])
        if job is not None:
            job.listeners.discard(listener)
        listener.close()
