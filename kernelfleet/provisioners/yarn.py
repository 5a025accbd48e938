"""``kernelfleet-yarn``: kernels as Spark drivers in YARN cluster mode.

Select it in a kernelspec with ``metadata.kernel_provisioner.provisioner_name =
"kernelfleet-yarn"``; its ``config`` sets :class:`~kernelfleet.provisioners.yarn_options.
YarnOptions`. Works under our gateway and in library mode.

How a kernel starts (the hooks of :class:`~kernelfleet.provisioners.remote.RemoteProvisioner`):
the response listener gives the launch a key; the first checkpoint names the application's
tags (``kf-kernel-<id>``), so a launch cut short at any point is found and killed;
``spark-submit --deploy-mode cluster`` (argv from :mod:`~kernelfleet.provisioners.yarn_submit`,
secrets in a 0600 properties file) submits the kernelspec's launcher (``kernel_launcher.py``,
shipped with the application with the kernelspec's ``scripts/`` files: nothing of kernelfleet
need be installed on the nodes) as the driver's main program; the second checkpoint holds the
application id as soon as spark-submit prints it. Then phases, each named in errors and
timeouts: **submitted** → **accepted** (waiting for room in the queue; past
``accepted_timeout`` the launch fails with the queue's state) → **running** (the driver
started the launcher) → **answered** (the launcher sent the kernel's connection info to the
listener; the last checkpoint).

One :class:`YarnBackend` per cluster watches every kernel with **one** RM query per interval
(live applications tagged ``kernelfleet``), follows RM failover (:mod:`~kernelfleet.transport.
yarn_rest`), and kills what a dead gateway left (:meth:`YarnBackend.stop_orphan`). Interrupts
need ``interrupt_mode: message`` (no signal reaches a YARN container); stop is the kernel's
shutdown request, then the application killed through the RM; logs are the AM container's,
from its NodeManager.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncGenerator, Hashable, Sequence
from pathlib import Path
from typing import Any

from kernelfleet.errors import LaunchFailed, LaunchTimeout, NotFound, ResourcesUnavailable
from kernelfleet.launchers import kernel_launcher, respond
from kernelfleet.provisioners.remote import RemoteProvisioner, jsonable_connection_info
from kernelfleet.provisioners.yarn_backend import AppWatch, YarnBackend
from kernelfleet.provisioners.yarn_options import YarnOptions
from kernelfleet.provisioners.yarn_submit import (
    kernel_tags,
    properties_text,
    resources,
    submission,
    submitted_app_id,
)
from kernelfleet.transport.listener import get_listener
from kernelfleet.transport.yarn_rest import AppReport, RMError, describe_queue

log = logging.getLogger(__name__)

#: Seconds our own phase-naming timeout fires before the gateway's launch deadline.
DEADLINE_MARGIN = 1.0
OUTPUT_LINES = 30


class YarnProvisioner(RemoteProvisioner, YarnOptions):  # type: ignore[misc,metaclass]
    """Runs the kernel as the driver of a Spark application in YARN cluster mode."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.phase = "not started"

    # -- backend ------------------------------------------------------------------------------
    def backend_key(self) -> Hashable:
        return (type(self), tuple(self.endpoints()), self.rest_user, self.ca_bundle)

    def make_backend(self) -> YarnBackend:
        return YarnBackend(self.endpoints(), self.rest_user, self.ca_bundle, self.poll_interval)

    @property
    def yarn(self) -> YarnBackend:
        backend = self.backend
        assert isinstance(backend, YarnBackend)
        return backend

    # -- what the checkpoint says -------------------------------------------------------------
    @property
    def host(self) -> str | None:
        host = self.checkpoint.get("host")
        return host if isinstance(host, str) else None

    @property
    def app_id(self) -> str | None:
        app = self.checkpoint.get("app_id")
        return app if isinstance(app, str) else None

    def model_extras(self) -> dict[str, Any]:
        report = self.watch.report if isinstance(self.watch, AppWatch) else None
        if not self.app_id:
            return {}
        return {
            "yarn": {
                "application_id": self.app_id,
                "tracking_url": (report.tracking_url if report else "")
                or self.checkpoint.get("tracking_url", ""),
                "queue": self.checkpoint.get("queue", ""),
                "state": report.state if report else "",
                "host": self.host or "",
            }
        }

    def check_settings(self) -> None:
        if not self.endpoints():
            raise LaunchFailed(
                f"Kernel '{self.kernelspec_name}' not started: no YARN ResourceManager is "
                f"configured. Set yarn_endpoints (KF_YARN_ENDPOINTS) or a hadoop_conf_dir with "
                f"a yarn-site.xml (looked in {self.conf_dir()})."
            )
        self.limits()  # a bad max_memory fails here, before anything is submitted

    # -- launch --------------------------------------------------------------------------------
    def _files(self) -> tuple[str, list[str], list[str], str]:
        """(launcher, files, py-files, spark-submit): the launcher; the kernelspec's
        ``scripts/`` it ships into the container's working directory; respond.py, which goes
        on the driver's PYTHONPATH; spark-submit. Blocking (reads directories)."""
        here = Path(kernel_launcher.__file__).resolve()
        files: list[str] = []
        spec = self.kernel_spec
        scripts = Path(spec.resource_dir) / "scripts" if spec and spec.resource_dir else None
        if scripts is not None and scripts.is_dir():
            files += sorted(str(p) for p in scripts.iterdir() if p.is_file())
        py_files = [str(Path(respond.__file__).resolve())]
        return (
            str(here),
            files,
            py_files,
            os.path.join(self.spark_home_dir(), "bin", "spark-submit"),
        )

    def _python(self, argv: Sequence[str]) -> str:
        if self.python:
            return str(self.python)
        first = argv[0] if argv else ""
        name = os.path.basename(first)
        # a kernel command that is not Python itself (R, a shell wrapper) needs `python` set
        return first if name.startswith(("python", "pypy")) else "python3"

    async def do_launch(
        self, cmd: list[str], env: dict[str, str], cwd: str | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        kid = str(self.kernel_id)
        res = resources({}, self.limits(), env)
        proxy = self.proxy_user(env)
        launcher, files, py_files, spark_submit = await asyncio.to_thread(self._files)
        deadline = self.launch_deadline() - DEADLINE_MARGIN
        listener = await get_listener(self)
        registration = await listener.expect(kid)  # our own clock names the phase
        backend = self.yarn
        self.phase = "submitting"
        tags = kernel_tags(kid)
        with registration:
            yield {"tags": tags, "queue": res.queue, "submitted_ms": int(time.time() * 1000)}
            watch = self.watch = backend.watch(kid, hurry=True)
            if isinstance(self.previous.get("app_id"), str):
                watch.exclude.add(self.previous["app_id"])
            python = self._python(cmd)
            sub = submission(
                spark_submit=spark_submit,
                kernel_id=kid,
                launcher=launcher,
                files=files,
                py_files=py_files,
                kernel_argv=cmd,
                python=python,
                resources=res,
                spark_conf=self.spark_conf,
                response_env=registration.env,
                kernel_env=env,
                submit_env=self._submit_env(python),
                tags=tags,
                ready_timeout=max(1.0, self.time_left()),
                proxy_user=proxy,
                curve=bool(self.transport_encryption),
                launcher_spark_context=bool(self.spark_context_in_launcher),
            )
            app_id = await self._submit(sub.argv, sub.properties, sub.env, watch, deadline)
            yield {"app_id": app_id}
            self.phase = "submitted (YARN has not reported the application's state yet)"
            info = await self._until_answered(registration, watch, res.queue, deadline)
            self.phase = "answered"
            report = watch.report
            watch.hurry = False
            host = registration.peer or (report.am_host if report else "")
            yield {
                "host": host,
                "tracking_url": report.tracking_url if report else "",
                "connection_info": jsonable_connection_info(
                    {k: v for k, v in info.items() if k not in ("pid", "timestamp")}
                ),
            }
        log.info("kernel %s runs as YARN application %s on %s", kid, app_id, host)

    def _submit_env(self, python: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "JAVA_HOME", "LANG", "LC_ALL", "TZ", "HOME", "USER")
        }
        if self.pyspark_archives:
            env["PYSPARK_ARCHIVES_PATH"] = self.pyspark_archives
        env["HADOOP_CONF_DIR"] = env["YARN_CONF_DIR"] = self.conf_dir()
        env["SPARK_HOME"] = self.spark_home_dir()
        env["PYSPARK_PYTHON"] = python
        return env

    async def _submit(
        self,
        argv: list[str],
        props: dict[str, str],
        env: dict[str, str],
        watch: AppWatch,
        deadline: float,
    ) -> str:
        """Run spark-submit; the application id as soon as it is known (its output, or the
        backend's query finding the kernel's tag)."""
        tmp = await asyncio.to_thread(tempfile.mkdtemp, prefix="kf-yarn-submit-")
        path = os.path.join(tmp, "kernel.properties")
        await asyncio.to_thread(_write_private, path, properties_text(props))
        argv = [path if a == "{properties_file}" else a for a in argv]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        lines: list[str] = []
        found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def read() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                lines.append(line)
                del lines[:-OUTPUT_LINES]
                app = submitted_app_id(line)
                if app and not found.done():
                    found.set_result(app)

        def kill() -> None:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

        async def finish() -> None:
            try:
                await read()
                await proc.wait()
            finally:
                if proc.returncode is None:  # cancelled: the gateway is closing
                    kill()
                    await asyncio.shield(proc.wait())
                await asyncio.to_thread(shutil.rmtree, tmp, True)

        finishing = asyncio.ensure_future(finish())
        self.yarn.track_submit(finishing)
        try:
            async with asyncio.timeout_at(deadline):
                while not found.done():
                    if watch.app_id:
                        return watch.app_id
                    if finishing.done():
                        raise LaunchFailed(self._submit_failed(proc.returncode, lines))
                    watch.changed.clear()
                    changed: asyncio.Future[Any] = asyncio.ensure_future(watch.changed.wait())
                    waits: list[asyncio.Future[Any]] = [found, finishing, changed]
                    try:
                        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        changed.cancel()
                return found.result()
        except TimeoutError:
            raise self._timeout(None) from None
        except BaseException:
            kill()
            raise
        finally:
            finishing.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _submit_failed(self, code: int | None, lines: list[str]) -> str:
        tail = log_excerpt("\n".join(lines), 700)
        return (
            f"Kernel '{self.kernelspec_name}' not submitted to YARN: spark-submit exited with "
            f"status {code} before the application was accepted. Its output ends: {tail}"
        )

    async def _until_answered(
        self, registration: Any, watch: AppWatch, queue: str, deadline: float
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        answer = asyncio.ensure_future(registration.wait())
        accepted_since: float | None = None
        try:
            while not answer.done():
                report = watch.report
                if report is not None and not report.live:
                    raise await self._ended(report)
                waiting = report is not None and report.state != "RUNNING" and not report.am_host
                if report is not None and report.state == "RUNNING":
                    self.phase = "running (the driver started; no connection info yet)"
                elif report is not None and report.am_host:
                    self.phase = f"accepted (the driver's container starts on {report.am_host})"
                elif report is not None:
                    state = report.state.lower()
                    self.phase = f"{state} (waiting for resources in queue {queue!r})"
                # the accepted bound counts only time without a container: YARN says ACCEPTED
                # until the driver registers, also while its container already starts
                accepted_since = (accepted_since or loop.time()) if waiting else None
                limit = deadline
                if accepted_since is not None and report is not None:
                    if loop.time() - accepted_since > self.accepted_timeout:
                        raise await self._no_room(report, queue)
                    limit = min(limit, accepted_since + self.accepted_timeout + 0.01)
                if loop.time() >= deadline:
                    raise self._timeout(report)
                watch.changed.clear()
                waiter = asyncio.ensure_future(watch.changed.wait())
                try:
                    await asyncio.wait(
                        [answer, waiter],
                        timeout=max(0.0, limit - loop.time()),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waiter.cancel()
            try:
                return dict(answer.result())
            except LaunchTimeout:
                raise
            except LaunchFailed as exc:  # the launcher's own report: add the container's log
                raise LaunchFailed(
                    f"Kernel '{self.kernelspec_name}' failed to start in its YARN application "
                    f"{self.app_id}: {exc.message}{await self._log_tail()}"
                ) from None
        finally:
            answer.cancel()

    async def _log_tail(self) -> str:
        """' — log: …' with what the AM container's log says went wrong (the launcher's
        lines, exceptions and errors first), or '' when there is no log."""
        text = ""
        with contextlib.suppress(Exception):
            text = await self.do_log(16384) or ""
        return f" — log: {log_excerpt(text)}" if text.strip() else ""

    def _timeout(self, report: AppReport | None) -> LaunchTimeout:
        app = f"its YARN application {self.app_id or '(not yet submitted)'}"
        hint = ""
        if report is not None and report.state == "RUNNING":
            hint = (
                f" Check that the node {report.am_host or '?'} can reach the gateway's response "
                "listener (KF_RESPONSE_ADDRESS)."
            )
        return LaunchTimeout(
            f"Kernel '{self.kernelspec_name}' not ready within its launch timeout: {app} was "
            f"{self.phase}. Raise KERNEL_LAUNCH_TIMEOUT or the kernelspec's launch_timeout if "
            f"the cluster is just slow; the kernel's log may say more.{hint}"
        )

    async def _no_room(self, report: AppReport, queue: str) -> ResourcesUnavailable:
        try:
            described = describe_queue((await self.yarn.rest.queues()).get(queue), queue)
        except RMError as exc:
            described = f"the queue's state is unknown ({exc.message})"
        why = f" YARN says: {report.diagnostics.strip()[:300]}" if report.diagnostics else ""
        return ResourcesUnavailable(
            f"YARN queue {queue!r} has no room for kernel '{self.kernelspec_name}': its "
            f"application {report.id} waited {self.accepted_timeout:g} s in ACCEPTED; "
            f"{described}. Try again later, use a smaller kernel, or another queue.{why}"
        )

    async def _ended(self, report: AppReport) -> LaunchFailed:
        why = report.diagnostics.strip()[:500] or "no diagnostics"
        return LaunchFailed(
            f"Kernel '{self.kernelspec_name}' failed to start: its YARN application "
            f"{report.id} ended {report.state}/{report.final_status}: {why}"
            f"{await self._log_tail()}"
        )

    def launch_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, TimeoutError):
            return self._timeout(self.watch.report if isinstance(self.watch, AppWatch) else None)
        return exc

    # -- running kernels ---------------------------------------------------------------------
    async def shutdown_requested(self, restart: bool = False) -> None:
        if isinstance(self.watch, AppWatch):
            self.watch.hurry = True  # see the application end soon after the kernel
            self.yarn.wake()

    async def do_signal(self, signum: int) -> None:
        """No signal reaches a process in a YARN container: SIGINT (an interrupt of a
        kernelspec in signal mode) becomes an ``interrupt_request`` on the kernel's control
        channel, which ipykernel answers by signalling itself; other signals are logged."""
        if signum == signal.SIGINT and self.interrupt_by_message():
            return
        log.warning("kernel %s: signal %s cannot reach a YARN container", self.kernel_id, signum)

    async def do_stop(self, signum: int) -> None:
        app_id = self.app_id
        watch = self.watch
        if app_id is None:
            return
        if isinstance(watch, AppWatch):
            watch.hurry = True
        killed = await self.yarn.kill(app_id)
        unreachable = not killed and app_id in self.yarn.kill_later
        if unreachable and signum == signal.SIGKILL and watch is not None:
            watch.mark_exited(None)  # the RM is unreachable: killed when it is back
        self.yarn.wake()

    async def do_abort(self) -> None:
        kid = str(self.kernel_id)
        backend = self.yarn
        backend.unwatch(kid)
        if self.app_id:
            await backend.kill(self.app_id)
        elif self.checkpoint.get("tags"):
            await backend.stop_orphan(kid)

    async def do_cleanup(self, restart: bool) -> None:
        kid = str(self.kernel_id)
        watch = self.yarn.watches.get(kid)
        if watch is not None and watch is self.watch:
            self.yarn.unwatch(kid)
        staging = str(self.spark_conf.get("spark.yarn.stagingDir", ""))
        if self.app_id and staging.startswith(("/", "file:/")):
            path = Path(staging.removeprefix("file:").replace("///", "/")) / ".sparkStaging"
            await asyncio.to_thread(shutil.rmtree, path / self.app_id, True)

    async def do_log(self, max_bytes: int) -> str | None:
        """The end of the AM container's stdout and stderr (the launcher's and the kernel's
        output, and Spark's driver log), from its NodeManager."""
        app_id = self.app_id
        if not app_id:
            raise NotFound(f"kernel {self.kernel_id} has no YARN application yet")
        report = self.watch.report if isinstance(self.watch, AppWatch) else None
        if report is None or not report.am_container_logs:
            try:
                report = await self.yarn.rest.app(app_id)
            except RMError as exc:
                raise NotFound(f"no log for kernel {self.kernel_id}: {exc.message}") from None
        where = report.am_container if report is not None else None
        if where is None:
            return None
        node, container = where
        parts = []
        for name in ("stdout", "stderr"):
            try:
                text = await self.yarn.rest.container_log(node, container, name, max_bytes)
            except RMError:
                text = None
            if text:
                parts.append(text)
        return "\n".join(parts)[-max_bytes:] if parts else None

    async def do_reattach(self) -> None:
        app_id = self.app_id
        if not app_id:
            return
        self.watch = self.yarn.watch(str(self.kernel_id), app_id)
        self._has_process = True


def log_excerpt(text: str, limit: int = 900) -> str:
    """The lines of a driver's log or of spark-submit's output that say why it failed (the
    launcher's own lines, Python and Java exceptions, errors), else its last lines; at most
    *limit* characters."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    telling = [
        ln
        for ln in lines
        if not ln.lstrip().startswith("at ")
        and any(
            word in ln
            for word in (
                "kernelfleet launcher:",
                "Error",
                "ERROR",
                "Exception",
                "Traceback",
                "FAILED",
            )
        )
    ]
    picked = telling[-8:] if telling else lines[-8:]
    return " | ".join(picked)[-limit:]


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


__all__ = ["AppWatch", "YarnBackend", "YarnProvisioner"]
