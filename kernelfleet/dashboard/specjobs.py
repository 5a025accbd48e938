"""Installing a kernelspec from the dashboard's form and syncing it to its hosts, with progress.

The work is ``kernelfleet spec install`` and ``kernelfleet spec sync``'s own:
:func:`kernelfleet.specs.installer.install` writes the spec (atomically, the old one kept until
the new one is in place), then for an SSH kernelspec :func:`kernelfleet.specs.sync.sync` copies
it to each of its hosts, connecting with the SSH provisioner's settings as the CLI does
(:func:`kernelfleet.specs.kinds.ssh.provisioner_settings`). Each step is a line of the job's
progress; a browser follows it as server-sent events (``line``, then ``done``). Other kinds
write only the spec: their kernels do not read it on a host.

Jobs live in memory (the last :data:`KEEP` of them); the gateway's log has each one's outcome.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traitlets.config import Config

from kernelfleet.dashboard.live import Listener, frame
from kernelfleet.errors import PublicError, describe
from kernelfleet.specs import builders, installer, sync
from kernelfleet.specs.kinds import ssh as ssh_kind
from kernelfleet.specs.options import SpecOptions

log = logging.getLogger("kernelfleet.dashboard")

KEEP = 20


@dataclass
class Job:
    id: str
    spec: str
    actor: str
    lines: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    ok: bool = False
    listeners: set[Listener] = field(default_factory=set)

    def emit(self, text: str, *, level: str = "info", host: str = "") -> None:
        line = {"time": int(time.time() * 1000), "level": level, "host": host, "text": text}
        self.lines.append(line)
        for listener in list(self.listeners):
            listener.put(frame("line", line))

    def finish(self, ok: bool) -> None:
        self.done, self.ok = True, ok
        for listener in list(self.listeners):
            listener.put(frame("done", {"ok": ok}))
            listener.close()  # its stream ends once the frames are sent
        self.listeners.clear()

    def listen(self) -> Listener:
        """A listener that first gets every line so far (and ``done`` if it is)."""
        listener = Listener()
        for line in self.lines:
            listener.put(frame("line", line))
        if self.done:
            listener.put(frame("done", {"ok": self.ok}))
            listener.close()
        else:
            self.listeners.add(listener)
        return listener

    def model(self) -> dict[str, Any]:
        return {"id": self.id, "spec": self.spec, "done": self.done, "ok": self.ok}


class SpecJobs:
    """Runs install + sync jobs (see the module docstring)."""

    def __init__(self, config: Config, on_written: Callable[[], None]) -> None:
        """*config*: the gateway's (the SSH provisioner's settings); *on_written*: called once
        a spec is written (the gateway's catalog re-reads the disk)."""
        self.config = config
        self.on_written = on_written
        self.jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def start(self, opts: SpecOptions, root: Path, *, replace: bool, actor: str) -> Job:
        job = Job(secrets.token_hex(8), opts.name, actor)
        self.jobs[job.id] = job
        while len(self.jobs) > KEEP:
            self.jobs.popitem(last=False)
        task = asyncio.create_task(self._run(job, opts, root, replace), name=f"spec-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, job: Job, opts: SpecOptions, root: Path, replace: bool) -> None:
        ok = False
        try:
            ok = await self._install_and_sync(job, opts, root, replace)
        except asyncio.CancelledError:
            job.emit("stopped: the gateway is shutting down", level="error")
            raise
        except PublicError as exc:
            job.emit(exc.message, level="error")
        except Exception as exc:
            log.exception("kernelspec %s: install or sync failed", opts.name)
            job.emit(f"failed: {describe(exc)}", level="error")
        finally:
            job.finish(ok)
            log.info(
                "dashboard: %s installed kernelspec %s: %s",
                job.actor,
                opts.name,
                "ok" if ok else "failed",
            )

    async def _install_and_sync(
        self, job: Job, opts: SpecOptions, root: Path, replace: bool
    ) -> bool:
        job.emit(f"writing kernelspec {opts.name} into {root}")
        done = await asyncio.to_thread(installer.install, opts, root, replace=replace)
        self.on_written()
        verb = "replaced" if done.replaced else "installed"
        job.emit(f"{verb} kernelspec {done.name} in {done.path}")
        for warning in builders.install_warnings(opts):
            job.emit(warning, level="warning")
        if opts.kind != ssh_kind.SSHKind.kind:
            job.emit(f"a '{opts.kind}' kernelspec is read by the gateway only: nothing to sync")
            return True
        config = done.kernel_json["metadata"]["kernel_provisioner"]["config"]
        provisioner = ssh_kind.provisioner_settings(self.config, config)
        hosts = [h.strip() for h in provisioner.remote_hosts if h.strip()]
        if not hosts:
            job.emit(
                "no hosts to sync to: give the kernelspec remote hosts, or set the gateway's "
                "KF_REMOTE_HOSTS",
                level="error",
            )
            return False
        local = await asyncio.to_thread(sync.LocalSpec.read, done.name, str(done.path))
        work = {host: (provisioner.target_for(host), [local]) for host in hosts}
        job.emit(f"syncing to {len(hosts)} host(s): {', '.join(hosts)}")

        def progress(host: str, spec: str, text: str) -> None:
            job.emit(text, host=host)

        results = await sync.sync(work, progress)
        for result in results:
            if result.ok:
                job.emit(
                    f"{result.status}: {result.sent} file(s) sent, {result.linked} kept, "
                    f"{result.seconds:.2f} s",
                    host=result.host,
                )
            else:
                job.emit(f"{result.error}; fix: {result.fix}", level="error", host=result.host)
        good = sum(r.ok for r in results)
        job.emit(f"{good} of {len(results)} host(s) up to date", level="info")
        return good == len(results)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
