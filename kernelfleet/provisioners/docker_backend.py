"""One Docker engine's kernels, watched through **one** events stream.

:class:`DockerBackend` keeps a single ``GET /events`` stream open (container events of
containers labelled as kernelfleet kernels) and feeds each kernel's :class:`ContainerWatch`:
``oom`` marks an out-of-memory kill, ``die`` the exit with its code, ``destroy`` a container
removed from outside. Swarm tasks' containers carry their service's labels, so a service's
kernel is watched the same way (routed by its service name). When the stream breaks it is
opened again with backoff, and every watched container is looked up in one listing to catch
what happened meanwhile. No per-kernel polling while kernels run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kernelfleet.provisioners.base import Backend, KernelfleetProvisioner
from kernelfleet.provisioners.docker_spec import KERNEL_LABELS, LABEL_KERNEL, LABEL_NAME
from kernelfleet.transport.docker_api import DockerApi, DockerError, Endpoint, filters, path_id

log = logging.getLogger(__name__)

#: Exit code of a kernel whose container was removed before it reported an exit.
REMOVED_EXIT = -15
RETRY_SECONDS = (0.5, 1, 2, 5, 10)
#: Seconds of events replayed before the last one seen (or the engine's "now") on each open.
REPLAY_MARGIN = 1.0
SERVICE_LABEL = "com.docker.swarm.service.name"
KERNEL_FILTER = [f"{k}={v}" for k, v in KERNEL_LABELS.items()]
#: Task states after which a service's kernel no longer runs.
TASK_ENDED = ("complete", "failed", "rejected", "shutdown", "orphaned", "remove")


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class ContainerWatch:
    """Liveness of one kernel's container (or service task), fed by the backend."""

    def __init__(self, kernel_id: str, name: str, service: bool = False):
        self.kernel_id, self.name, self.service = kernel_id, name, service
        self.exit_code: int | None = None
        self.exited = asyncio.Event()
        self.changed = asyncio.Event()
        self.oom = False
        self.started = False

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    def mark_exited(self, code: int | None) -> None:
        if not self.exited.is_set():
            self.exit_code = REMOVED_EXIT if code is None else code
            self.exited.set()
        self.changed.set()

    def reason(self) -> str | None:
        """Why the kernel ended, when the engine said more than an exit code."""
        if self.oom:
            return "it ran out of memory (its container's memory limit) and was killed"
        if self.exit_code == REMOVED_EXIT:
            return "its container was removed"
        return None

    def state(self, state: dict[str, Any]) -> None:
        """A container's ``State`` from an inspect or a listing."""
        if state.get("OOMKilled"):
            self.oom = True
        status = str(state.get("Status", ""))
        if status in ("running", "restarting", "paused"):
            self.started = True
        elif status in ("exited", "dead"):
            self.mark_exited(_int(state.get("ExitCode"), 1))
        self.changed.set()


class DockerBackend(Backend):
    """See the module docstring."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.api = DockerApi(endpoint)
        self.watches: dict[str, ContainerWatch] = {}
        self._by_name: dict[str, ContainerWatch] = {}
        self._task: asyncio.Task[None] | None = None
        self._open = asyncio.Event()
        self._failed = asyncio.Event()  # set after each attempt that did not open the stream
        self._error: DockerError | None = None
        self._later: set[asyncio.Task[Any]] = set()
        self._node_name: str | None = None
        #: Engine time of the last event seen: a reopened stream replays from there.
        self._last_event: float | None = None

    # -- kernels ----------------------------------------------------------------------------
    def watch(self, kernel_id: str, name: str, service: bool = False) -> ContainerWatch:
        self.unwatch(kernel_id)
        w = self.watches[kernel_id] = ContainerWatch(kernel_id, name, service)
        self._by_name[name] = w
        return w

    def unwatch(self, kernel_id: str) -> None:
        w = self.watches.pop(kernel_id, None)
        if w is not None and self._by_name.get(w.name) is w:
            del self._by_name[w.name]

    async def ensure_watching(self, wait: float = 10.0) -> None:
        """Start the events stream unless running; return once it is open (raise the
        engine's DockerError if it cannot be opened within *wait* seconds)."""
        if self._task is None or self._task.done():
            self._open.clear()
            self._error = None
            self._task = asyncio.create_task(self._run(), name="docker-events")
        if self._open.is_set():
            return
        # an attempt that fails answers at once: a stopped engine is not waited out
        self._failed.clear()
        waiters = [asyncio.ensure_future(e.wait()) for e in (self._open, self._failed)]
        try:
            await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._open.is_set():
            return
        if self._error is not None:
            raise self._error
        raise DockerError(0, f"the events stream of {self.endpoint.url} did not open")

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._stream_once()
                failures = 0
                log.info("the events stream of %s ended; opening it again", self.endpoint.url)
            except asyncio.CancelledError:
                raise
            except DockerError as exc:
                self._error = exc
                log.warning("events of %s: %s", self.endpoint.url, exc.message)
            except Exception:
                log.exception("events of %s failed", self.endpoint.url)
            self._open.clear()
            self._failed.set()
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
            failures += 1

    async def _stream_once(self) -> None:
        """Open the stream, catch up, serve it until it ends."""
        # the engine subscribes after it answered: replay from before the last look
        since = self._last_event if self._last_event is not None else await self._engine_time()
        accepted = asyncio.Event()
        stream = self.api.events(
            accepted.set, since=since - REPLAY_MARGIN, type=["container"], label=KERNEL_FILTER
        )
        async with contextlib.aclosing(stream):
            first = asyncio.ensure_future(anext_or_none(stream))
            opened = asyncio.ensure_future(accepted.wait())
            try:
                await asyncio.wait([first, opened], return_when=asyncio.FIRST_COMPLETED)
                if not accepted.is_set():
                    await first  # it failed before the engine answered: its error
                    raise DockerError(0, f"the events stream of {self.endpoint.url} closed")
                self._error = None
                await self._reconcile()  # what the replay cannot say (a listing's states)
                self._open.set()
                event = await first
            finally:
                first.cancel()
                opened.cancel()
            while event is not None:
                self._event(event)
                event = await anext_or_none(stream)

    async def _engine_time(self) -> float:
        """Now on the engine's clock (``GET /info``: SystemTime), else on ours."""
        info = await self.api.get("/info")
        if isinstance(info, dict):
            self._node_name = str(info.get("Name") or "")
            text = str(info.get("SystemTime") or "")
            # RFC 3339 with up to nanoseconds: Python 3.11 reads microseconds at most
            m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
            if m:
                frac = (m.group(2) or ".0")[:7]
                zone = "+00:00" if m.group(3) == "Z" else m.group(3)
                with contextlib.suppress(ValueError):
                    return datetime.fromisoformat(m.group(1) + frac + zone).timestamp()
        return time.time()

    def _event(self, event: dict[str, Any]) -> None:
        actor = event.get("Actor") or {}
        attrs = actor.get("Attributes") or {}
        if not isinstance(attrs, dict):
            return
        name = str(attrs.get(SERVICE_LABEL) or attrs.get("name") or "")
        w = self._by_name.get(name)
        if w is None:
            return
        stamp = event.get("timeNano")
        if isinstance(stamp, int) and not isinstance(stamp, bool):
            self._last_event = max(self._last_event or 0.0, stamp / 1e9)
        action = str(event.get("Action") or event.get("status") or "")
        if action == "start":
            w.started = True
            w.changed.set()
        elif action == "oom":
            w.oom = True
            w.changed.set()
        elif action == "die":
            w.mark_exited(_int(attrs.get("exitCode"), 1))
        elif action == "destroy":
            w.mark_exited(None)

    async def _reconcile(self) -> None:
        """Every kernel container's state in one listing (after the stream was (re)opened)."""
        if not self._by_name:
            return
        items = await self.api.get(
            "/containers/json", all="1", filters=filters(label=KERNEL_FILTER)
        )
        present: set[str] = set()
        for item in items if isinstance(items, list) else []:
            labels = item.get("Labels") or {}
            names = [str(n).lstrip("/") for n in item.get("Names") or []]
            name = str(labels.get(SERVICE_LABEL) or (names[0] if names else ""))
            present.add(name)
            w = self._by_name.get(name)
            if w is None:
                continue
            state = str(item.get("State", ""))
            if state in ("exited", "dead"):
                info = await self.inspect(str(item.get("Id", "")))
                w.state((info or {}).get("State") or {"Status": state})
            else:
                w.state({"Status": state})
        for name, w in list(self._by_name.items()):
            # a service's task may run on another node: check() follows services
            if name not in present and w.started and not w.service:
                w.mark_exited(None)

    async def inspect(self, container: str) -> dict[str, Any] | None:
        """``GET /containers/<id>/json`` (None when it does not exist)."""
        try:
            found = await self.api.get(f"/containers/{path_id(container)}/json")
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise
        return found if isinstance(found, dict) else None

    async def node_name(self) -> str:
        """The engine's host name (``GET /info``), asked once."""
        if self._node_name is None:
            info = await self.api.get("/info")
            self._node_name = str((info or {}).get("Name") or "") if isinstance(info, dict) else ""
        return self._node_name

    # -- Backend ----------------------------------------------------------------------------
    def later(self, coro: Any) -> None:
        """Run *coro* in the background (a best-effort removal); failures are logged."""
        task = asyncio.ensure_future(coro)
        self._later.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._later.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("docker clean-up failed: %s", t.exception())

        task.add_done_callback(done)

    async def remove(self, name: str, swarm: bool) -> None:
        """Remove a kernel's service or container (force; a missing one is removed)."""
        try:
            if swarm:
                await self.api.delete(f"/services/{path_id(name)}")
            else:
                await self.api.delete(f"/containers/{path_id(name)}", force="1", v="1")
        except DockerError as exc:
            if exc.status != 404:
                raise

    async def stop_orphan(self, kernel_id: str) -> int:
        """Remove every container and service labelled with *kernel_id*."""
        label = filters(label=[*KERNEL_FILTER, f"{LABEL_KERNEL}={kernel_id}"])
        stopped = 0
        try:
            for svc in await self.api.get("/services", filters=label) or []:
                await self.remove(str(svc.get("ID", "")), swarm=True)
                stopped += 1
        except DockerError as exc:
            if exc.status != 503:  # 503: not a Swarm manager, so no services
                log.warning("orphan services of %s: %s", kernel_id, exc.message)
        try:
            for item in await self.api.get("/containers/json", all="1", filters=label) or []:
                if SERVICE_LABEL in (item.get("Labels") or {}):
                    continue  # a task's container goes with its service
                await self.remove(str(item.get("Id", "")), swarm=False)
                stopped += 1
        except DockerError as exc:
            log.warning("orphan containers of %s: %s", kernel_id, exc.message)
        return stopped

    async def check(self, provisioners: Sequence[KernelfleetProvisioner]) -> dict[str, int | None]:
        """The events stream reports exits of containers on this engine; a Swarm service's
        task may run on another node, so the tasks of all kernel services are read in one
        call per tick and a task that ended marks its kernel exited."""
        services = {
            w.name: w
            for prov in provisioners
            if (w := self.watches.get(str(prov.kernel_id))) is not None and w.service and w.alive
        }
        if services:
            try:
                tasks = await self.api.get("/tasks", filters=filters(service=sorted(services)))
            except DockerError as exc:
                log.warning("tasks of %s: %s", self.endpoint.url, exc.message)
                tasks = None
            if isinstance(tasks, list):
                self.tasks_seen(services, tasks)
        return {str(p.kernel_id): await p.poll() for p in provisioners}

    @staticmethod
    def tasks_seen(services: dict[str, ContainerWatch], tasks: list[Any]) -> None:
        """A service whose task ended, or that has no task left (removed), has exited."""
        with_task: set[str] = set()
        for task in tasks:
            labels = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
            w = services.get(str(labels.get(LABEL_NAME, "")))
            if w is None:
                continue
            with_task.add(w.name)
            status = task.get("Status") or {}
            if str(status.get("State", "")) in TASK_ENDED:
                w.mark_exited(_int((status.get("ContainerStatus") or {}).get("ExitCode"), 1))
        for name, w in services.items():
            if name not in with_task:
                w.mark_exited(None)

    async def warm_up(self) -> None:
        with contextlib.suppress(DockerError, TimeoutError):
            await self.ensure_watching(wait=2.0)

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._later) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        await self.api.close()


async def anext_or_none(stream: Any) -> dict[str, Any] | None:
    try:
        return await anext(stream)  # type: ignore[no-any-return]
    except StopAsyncIteration:
        return None


__all__ = ["ContainerWatch", "DockerBackend"]
