"""``kernelfleet-docker``: each kernel a Docker container, or a Swarm service.

Select it in a kernelspec with ``metadata.kernel_provisioner.provisioner_name =
"kernelfleet-docker"``; its ``config`` sets :class:`~kernelfleet.provisioners.docker_options.
DockerOptions` (``swarm: true`` for a service per kernel). Works under our gateway and in
library mode.

How a kernel starts (the hooks of :class:`~kernelfleet.provisioners.remote.RemoteProvisioner`):
the first checkpoint names the container (or service) *before* it is created, so a launch cut
short at any point is removed by name (and by the kernel-id label when even that checkpoint was
lost). The image must already be on the engine: kernelfleet never pulls, and a missing image
fails the request at once. The container gets the kernel's environment as data, the launcher
as its command, the limits of :mod:`~kernelfleet.provisioners.docker_spec`; it answers the
gateway's response listener with its connection info. A container that exits first fails the
request with its exit status and the end of its log; a Swarm task that is rejected or cannot
be placed fails it with Swarm's words.

Interrupts are ``interrupt_request`` messages (the same for a container and a service task);
stop is the kernel's shutdown request, then the container stopped with ``stop_grace`` (a
service removed), then removed; logs are the container's or the service's; a restarted gateway
re-attaches to the containers its checkpoints name. The engine's single events stream
(:mod:`~kernelfleet.provisioners.docker_backend`) reports exits, and out-of-memory kills as the
reason of a death.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
from collections.abc import AsyncGenerator, Hashable
from typing import Any

from kernelfleet.errors import LaunchFailed, LaunchTimeout, NotFound, ResourcesUnavailable
from kernelfleet.provisioners.docker_backend import ContainerWatch, DockerBackend
from kernelfleet.provisioners.docker_options import DockerOptions
from kernelfleet.provisioners.docker_spec import (
    container_body,
    container_name,
    request_params,
    service_body,
)
from kernelfleet.provisioners.remote import RemoteProvisioner, jsonable_connection_info
from kernelfleet.transport.docker_api import DockerError, path_id
from kernelfleet.transport.listener import get_listener

log = logging.getLogger(__name__)

#: Seconds our own phase-naming timeout fires before the gateway's launch deadline.
DEADLINE_MARGIN = 1.0
#: Seconds between looks at a Swarm service's task while it starts.
TASK_EVERY = 0.25
#: Swarm task states that end a launch.
TASK_FAILED = ("failed", "rejected", "shutdown", "orphaned", "remove", "complete")


class DockerProvisioner(RemoteProvisioner, DockerOptions):  # type: ignore[misc,metaclass]
    """Runs the kernel in a container (or a Swarm service) of its own."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.phase = "not started"
        self._restart = -1

    # -- backend ----------------------------------------------------------------------------
    def backend_key(self) -> Hashable:
        return (type(self), self.endpoint())

    def make_backend(self) -> DockerBackend:
        return DockerBackend(self.endpoint())

    @property
    def docker(self) -> DockerBackend:
        backend = self.backend
        assert isinstance(backend, DockerBackend)
        return backend

    # -- what the checkpoint says -------------------------------------------------------------
    @property
    def container(self) -> str | None:
        name = self.checkpoint.get("container")
        return name if isinstance(name, str) else None

    @property
    def is_service(self) -> bool:
        return bool(self.checkpoint.get("service"))

    @property
    def host(self) -> str | None:
        node = self.checkpoint.get("host")
        return node if isinstance(node, str) and node else None

    def model_extras(self) -> dict[str, Any]:
        if not self.container:
            return {}
        return {
            "docker": {
                "engine": self.checkpoint.get("engine", ""),
                ("service" if self.is_service else "container"): self.container,
                "container_id": self.checkpoint.get("container_id", ""),
                "ip": self.checkpoint.get("ip", ""),
            }
        }

    def check_settings(self) -> None:
        self.check_options(self.kernelspec_name)

    def exit_reason(self) -> str | None:
        return self.watch.reason() if isinstance(self.watch, ContainerWatch) else None

    # -- launch --------------------------------------------------------------------------------
    async def do_launch(
        self, cmd: list[str], env: dict[str, str], cwd: str | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        kid = str(self.kernel_id)
        last = int(self.previous.get("restart", -1)) if self.previous else -1
        restart = self._restart = max(last, self._restart) + 1
        name = container_name(kid, restart)
        username, uid, gid = await asyncio.to_thread(self.user, env)
        params = request_params(
            env,
            kernel_id=kid,
            kernel_name=self.kernelspec_name,
            name=name,
            image=self.image,
            allowed_images=self.allowed_images,
            network=self.network,
            uid=uid,
            gid=gid,
            username=username,
            limits=self.limits(),
            mounts=self.mounts(),
        )
        deadline = self.launch_deadline() - DEADLINE_MARGIN
        listener = await get_listener(self)
        registration = await listener.expect(kid)
        backend = self.docker
        swarm = bool(self.swarm)
        self.phase = "creating its container"
        with registration:
            yield {"container": name, "service": swarm, "engine": self.endpoint().url}
            yield {"restart": restart}
            plain = {k: v for k, v in env.items() if k != "PATH"}  # the image decides PATH
            full_env = {**plain, **registration.env}
            command = self.launcher_command(cmd, self.launcher_python, self.launcher)
            try:
                async with asyncio.timeout_at(deadline):
                    await backend.ensure_watching(wait=max(1.0, self.time_left()))
                    watch = self.watch = backend.watch(kid, name, service=swarm)
                    if swarm:
                        # by ID: for a tag, each task's dockerd would first try a registry
                        image_id = await self._check_image(params.image)
                        by_id = dataclasses.replace(params, image=image_id)
                        body = service_body(
                            by_id, command, full_env, self.placement, self.stop_grace
                        )
                        await self._create(backend, "/services/create", body, None)
                        container_id = ""
                    else:  # creating never pulls: a missing image is a 404 at once
                        body = container_body(params, command, full_env)
                        created = await self._create(backend, "/containers/create", body, name)
                        container_id = str((created or {}).get("Id", ""))
                        await backend.api.post(f"/containers/{path_id(name)}/start")
            except TimeoutError:
                raise self._timeout() from None
            except DockerError as exc:
                if exc.status == 404 and exc.message.lower().startswith("no such image"):
                    raise self._missing_image(params.image) from None
                raise self._engine_error(exc, "start") from None
            self.phase = "started; waiting for the kernel to answer"
            info = await self._until_answered(registration, watch, deadline)
            self.phase = "answered"
            if swarm:
                where = await self._where(name, registration.peer or "")
            else:  # it answered from its own address
                host = await self._node_name()
                where = {"host": host, "ip": registration.peer or "", "container_id": container_id}
        yield {
            **where,
            "connection_info": jsonable_connection_info(
                {k: v for k, v in info.items() if k not in ("pid", "timestamp")}
            ),
        }
        log.info("kernel %s runs in %s %s on %s", kid, self._kind(), name, where.get("host"))

    def _kind(self) -> str:
        return "service" if self.is_service else "container"

    async def _check_image(self, image: str) -> str:
        """The image's ID; LaunchFailed at once when the engine lacks it."""
        try:
            found = await self.docker.api.get(f"/images/{path_id(image)}/json")
            return str((found or {}).get("Id") or image) if isinstance(found, dict) else image
        except DockerError as exc:
            if exc.status != 404:
                raise
            raise self._missing_image(image) from None

    def _missing_image(self, image: str) -> LaunchFailed:
        return LaunchFailed(
            f"Kernel '{self.kernelspec_name}' not started: image {image} is not on the "
            f"Docker engine {self.endpoint().url}. Load it there (kernelfleet image import "
            "or docker load): kernelfleet never pulls."
        )

    async def _node_name(self) -> str:
        with contextlib.suppress(DockerError):
            return await self.docker.node_name()
        return ""

    async def _create(
        self, backend: DockerBackend, path: str, body: dict[str, Any], name: str | None
    ) -> Any:
        """Create (the engine's answer); a container left under the same name by a gateway
        that died is removed and the creation tried once more."""
        params = {"name": name} if name else {}
        try:
            return await backend.api.post(path, body, **params)
        except DockerError as exc:
            if exc.status != 409:
                raise
            await backend.remove(str(body.get("Name") or name), swarm=name is None)
            return await backend.api.post(path, body, **params)

    def _engine_error(self, exc: DockerError, verb: str) -> Exception:
        what = self._kind()
        if exc.status == 0:
            return LaunchFailed(f"Kernel '{self.kernelspec_name}' not started: {exc.message}.")
        if exc.status == 503 and self.swarm:
            return LaunchFailed(
                f"Kernel '{self.kernelspec_name}' not started: the engine "
                f"{self.endpoint().url} is not a Swarm manager ({exc.message[:200]}). Run "
                "'docker swarm init' there, or set swarm to false."
            )
        return LaunchFailed(
            f"Kernel '{self.kernelspec_name}' not started: the Docker engine refused to {verb} "
            f"its {what} ({exc.status}: {exc.message[:300]}). Check the kernelspec's image, "
            "network and volumes."
        )

    async def _until_answered(
        self, registration: Any, watch: ContainerWatch, deadline: float
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        answer = asyncio.ensure_future(registration.wait())
        try:
            while not answer.done():
                watch.changed.clear()  # before reading: a change while we work wakes us
                if watch.exited.is_set():
                    raise await self._exited(watch)
                if self.is_service:
                    await self._check_task()
                if loop.time() >= deadline:
                    raise self._timeout()
                limit = deadline
                if self.is_service:
                    limit = min(limit, loop.time() + TASK_EVERY)
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
            except LaunchFailed as exc:  # the launcher's own report: add the log's end
                raise LaunchFailed(
                    f"Kernel '{self.kernelspec_name}' failed to start in {self._kind()} "
                    f"{watch.name}: {exc.message}{await self.log_tail()}"
                ) from None
        finally:
            answer.cancel()

    async def _exited(self, watch: ContainerWatch) -> Exception:
        why = watch.reason()
        status = f"exit status {watch.exit_code}" + (f": {why}" if why else "")
        return LaunchFailed(
            f"Kernel '{self.kernelspec_name}' failed to start: its {self._kind()} "
            f"{watch.name} ended ({status}){await self.log_tail()}"
        )

    async def _check_task(self) -> None:
        """Fail a service launch whose task Swarm rejected or cannot place."""
        assert self.container is not None
        try:
            tasks = await self.docker.api.get(
                "/tasks", filters=json.dumps({"service": [self.container]})
            )
        except DockerError as exc:
            log.debug("tasks of %s: %s", self.container, exc.message)
            return
        for task in tasks if isinstance(tasks, list) else []:
            status = task.get("Status") or {}
            state, err = str(status.get("State", "")), str(status.get("Err") or "")
            self.phase = f"task {state or 'new'}"
            if state in TASK_FAILED:
                raise LaunchFailed(
                    f"Kernel '{self.kernelspec_name}' failed to start: Swarm's task for "
                    f"service {self.container} is {state}: {err[:300] or status.get('Message')}"
                    f"{await self.log_tail()}"
                )
            if state == "pending" and "no suitable node" in err:
                raise ResourcesUnavailable(
                    f"Kernel '{self.kernelspec_name}' not started: no Swarm node can take its "
                    f"service {self.container}. Swarm: {err[:300]}. Check the kernelspec's "
                    "placement constraints and the nodes' resources."
                )

    async def _where(self, name: str, peer: str) -> dict[str, Any]:
        """host (the node), ip and container id of a running service's kernel (best effort:
        a task on another node has no container here, and *peer* is its address)."""
        backend = self.docker
        out: dict[str, Any] = {"host": "", "ip": peer, "container_id": ""}
        with contextlib.suppress(DockerError):
            tasks = await backend.api.get("/tasks", filters=json.dumps({"service": [name]}))
            for task in tasks if isinstance(tasks, list) else []:
                status = task.get("Status") or {}
                out["container_id"] = str(
                    (status.get("ContainerStatus") or {}).get("ContainerID") or ""
                )
                node = await backend.api.get(f"/nodes/{path_id(str(task.get('NodeID')))}")
                out["host"] = str(((node or {}).get("Description") or {}).get("Hostname", ""))
        return out

    def _timeout(self) -> LaunchTimeout:
        where = f"{self._kind()} {self.container}" if self.container else "(not yet created)"
        return LaunchTimeout(
            f"Kernel '{self.kernelspec_name}' not ready within its launch timeout: its "
            f"{where} was {self.phase}. Raise KERNEL_LAUNCH_TIMEOUT or the kernelspec's "
            "launch_timeout if the engine is just slow; check that containers reach the "
            "gateway's response listener (KF_RESPONSE_ADDRESS)."
        )

    def launch_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, TimeoutError):
            return self._timeout()
        if isinstance(exc, DockerError):
            return self._engine_error(exc, "start")
        return exc

    # -- running kernels ---------------------------------------------------------------------
    async def do_signal(self, signum: int) -> None:
        """SIGINT becomes an ``interrupt_request``; other signals go to the container's
        launcher, which relays them to the kernel (not for a service: no signal API)."""
        if signum == signal.SIGINT and self.interrupt_by_message():
            return
        if self.is_service or not self.container:
            log.warning("kernel %s: signal %s cannot reach a service", self.kernel_id, signum)
            return
        await self.docker.api.post(
            f"/containers/{path_id(self.container)}/kill", signal=signal.Signals(signum).name
        )

    async def do_stop(self, signum: int) -> None:
        name = self.container
        if not name:
            return
        backend = self.docker
        try:
            if self.is_service:
                await backend.remove(name, swarm=True)  # a missing one counts as removed
                if self.watch is not None:
                    self.watch.mark_exited(None)  # its task may be on a node we cannot see
            elif signum == signal.SIGKILL:
                await backend.api.post(f"/containers/{path_id(name)}/kill", signal="SIGKILL")
            else:
                await backend.api.request(
                    "POST",
                    f"/containers/{path_id(name)}/stop",
                    params={"t": str(self.stop_grace)},
                    seconds=self.stop_grace + 30,
                )
        except DockerError as exc:
            if exc.status in (304, 404, 409):
                return  # already stopped, gone, or not running
            log.warning("kernel %s: stopping %s failed: %s", self.kernel_id, name, exc.message)
            if signum == signal.SIGKILL and self.watch is not None:
                backend.later(backend.remove(name, swarm=self.is_service))
                self.watch.mark_exited(None)

    async def do_abort(self) -> None:
        kid = str(self.kernel_id)
        backend = self.docker
        backend.unwatch(kid)
        name = self.container
        if not name:
            await backend.stop_orphan(kid)
            return
        with contextlib.suppress(DockerError):
            await backend.remove(name, swarm=self.is_service)

    async def do_cleanup(self, restart: bool) -> None:
        kid = str(self.kernel_id)
        backend = self.docker
        if backend.watches.get(kid) is self.watch:
            backend.unwatch(kid)
        name = self.container
        if not name:
            return
        with contextlib.suppress(DockerError):
            await backend.remove(name, swarm=self.is_service)

    async def do_log(self, max_bytes: int) -> str | None:
        """The end of the kernel's output (the launcher's and the kernel's)."""
        name = self.container
        if not name:
            raise NotFound(f"kernel {self.kernel_id} has no container yet")
        kind = "services" if self.is_service else "containers"
        try:
            text = await self.docker.api.log(f"/{kind}/{path_id(name)}/logs", tail=2000)
        except DockerError as exc:
            raise NotFound(f"no log for kernel {self.kernel_id}: {exc.message}") from None
        return text[-max_bytes:]

    async def do_reattach(self) -> None:
        name = self.container
        if not name or not isinstance(self.checkpoint.get("connection_info"), dict):
            return
        backend = self.docker
        watch = self.watch = backend.watch(str(self.kernel_id), name, service=self.is_service)
        watch.started = True
        self._has_process = True
        try:
            await backend.ensure_watching()
        except (DockerError, TimeoutError) as exc:
            log.warning("kernel %s: events not watched after reattach: %s", self.kernel_id, exc)
        try:
            if self.is_service:  # its task may run on another node: ask Swarm
                tasks = await backend.api.get("/tasks", filters=json.dumps({"service": [name]}))
                backend.tasks_seen({name: watch}, tasks if isinstance(tasks, list) else [])
                return
            info = await backend.inspect(str(self.checkpoint.get("container_id") or name))
        except DockerError as exc:
            log.warning("kernel %s: its state is unknown: %s", self.kernel_id, exc.message)
            return
        if info is None:
            watch.mark_exited(None)
        else:
            watch.state(info.get("State") or {})


__all__ = ["DockerProvisioner"]
