"""Environment builds as background jobs with progress lines, for the admin API and the
dashboard (the CLI prints its lines directly).

A job keeps every line it emitted; a reader asks for the lines after the ones it has
(:meth:`EnvJob.wait_after` returns at once when there are newer lines or the job is done, else
waits up to a deadline), and the dashboard subscribes to lines as they come. Jobs live in
memory (the last :data:`KEEP`); the gateway's log has each outcome.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kernelfleet.errors import PublicError, describe

log = logging.getLogger("kernelfleet.envs")
KEEP = 50
Line = dict[str, Any]


@dataclass
class EnvJob:
    id: str
    env: str
    action: str  # create, rebuild, remove
    actor: str
    lines: list[Line] = field(default_factory=list)
    done: bool = False
    ok: bool = False
    error: str = ""
    subscribers: set[Callable[[str, Any], None]] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, text: str, *, level: str = "info", host: str = "") -> None:
        """Emit one progress line (a :class:`~kernelfleet.envs.service.Say`)."""
        line = {"time": int(time.time() * 1000), "level": level, "host": host, "text": text}
        self.lines.append(line)
        for subscriber in list(self.subscribers):
            subscriber("line", line)
        self._wake()

    def finish(self, ok: bool, error: str = "") -> None:
        self.done, self.ok, self.error = True, ok, error
        for subscriber in list(self.subscribers):
            subscriber("done", {"ok": ok, "error": error})
        self.subscribers.clear()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_after(self, seen: int, seconds: float) -> None:
        if self.done or len(self.lines) > seen:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)

    def model(self, after: int = 0) -> dict[str, Any]:
        return {
            "id": self.id,
            "env": self.env,
            "action": self.action,
            "actor": self.actor,
            "done": self.done,
            "ok": self.ok,
            "error": self.error,
            "lines": self.lines[after:],
            "next": len(self.lines),
        }


class EnvJobs:
    def __init__(self) -> None:
        self.jobs: collections.OrderedDict[str, EnvJob] = collections.OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, job_id: str) -> EnvJob | None:
        return self.jobs.get(job_id)

    def running(self, env: str) -> EnvJob | None:
        for job in self.jobs.values():
            if job.env == env and not job.done:
                return job
        return None

    def start(
        self, env: str, action: str, actor: str, work: Callable[[EnvJob], Awaitable[Any]]
    ) -> EnvJob:
        job = EnvJob(secrets.token_hex(8), env, action, actor)
        self.jobs[job.id] = job
        while len(self.jobs) > KEEP:
            self.jobs.popitem(last=False)
        task = asyncio.create_task(self._run(job, work), name=f"env-{action}-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, job: EnvJob, work: Callable[[EnvJob], Awaitable[Any]]) -> None:
        try:
            await work(job)
        except asyncio.CancelledError:
            job("stopped: the gateway is shutting down", level="error")
            job.finish(False, "stopped: the gateway is shutting down")
            raise
        except PublicError as exc:
            job(exc.message, level="error")
            job.finish(False, exc.message)
        except Exception as exc:
            log.exception("environment %s: %s failed", job.env, job.action)
            job(f"failed: {describe(exc)}", level="error")
            job.finish(False, describe(exc))
        else:
            job.finish(True)
        log.info(
            "environment %s: %s by %s %s",
            job.env,
            job.action,
            job.actor,
            "ok" if job.ok else f"failed: {job.error}",
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
