"""``kernelfleet-k8s``: each kernel a Kubernetes pod.

Select it in a kernelspec with ``metadata.kernel_provisioner.provisioner_name = "kernelfleet-k8s"``;
its ``config`` sets :class:`~kernelfleet.provisioners.k8s_options.K8sOptions`. Works under our
gateway and in library mode.

How a kernel starts (the hooks of :class:`~kernelfleet.provisioners.remote.RemoteProvisioner`):
the first checkpoint names the pod, its namespace and its secret *before* anything is created,
so a launch cut short at any point is cleaned up by name (and by the kernel-id label when even
that checkpoint was lost). Then, in order: the namespace and its quota (per-kernel mode), a
Secret with the response listener's key (a pod's env is readable by whoever may read pods; the
Secret lives until the kernel answered), and the pod, rendered from the kernelspec's template
(:mod:`~kernelfleet.provisioners.k8s_pod`). The backend's single watch reports the pod's
progress; the launch fails at once, with the cluster's own words, when the pod cannot be
scheduled, its image cannot be pulled, its container cannot start or exits — and names the
phase it was in (``pending``, ``pulling its image``, ``running``) when its time runs out.

Interrupts are ``interrupt_request`` messages (no signal reaches a pod without exec rights);
stop is the kernel's shutdown request, then the pod deleted with ``delete_grace``, then with
grace 0; logs are the pod's; a restarted gateway re-attaches to the pods its checkpoints name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncGenerator, Hashable
from pathlib import Path
from typing import Any

from kernelfleet.errors import (
    BadRequest,
    Forbidden,
    LaunchFailed,
    LaunchTimeout,
    NotFound,
    ResourcesUnavailable,
)
from kernelfleet.launchers.respond import KEY_ENV
from kernelfleet.provisioners.k8s_backend import K8sBackend, PodWatch
from kernelfleet.provisioners.k8s_options import K8sOptions
from kernelfleet.provisioners.k8s_pod import (
    DEFAULT_TEMPLATE,
    finish_pod,
    limit_range_manifest,
    namespace_manifest,
    pod_name,
    quota_manifest,
    render_template,
    request_params,
    secret_manifest,
)
from kernelfleet.provisioners.k8s_status import PodView, launch_failure, phase_text
from kernelfleet.provisioners.remote import RemoteProvisioner, jsonable_connection_info
from kernelfleet.transport.k8s_api import KubeError, ns_path
from kernelfleet.transport.listener import get_listener

log = logging.getLogger(__name__)

TEMPLATE_FILE = "pod-template.yaml.j2"
#: Seconds our own phase-naming timeout fires before the gateway's launch deadline.
DEADLINE_MARGIN = 1.0
#: Seconds between looks at a pending pod's events (to report an image pull).
EVENTS_EVERY = 1.0
#: Seconds a new namespace may lack its default service account (the controller makes it).
SA_WAIT = 10.0
#: Seconds a per-kernel namespace's new quota may take to be in force before the pod is made.
QUOTA_WAIT = 15.0
#: Seconds a log request waits for the kubelet to report a running kernel's container started.
LOG_WAIT = 10.0


class K8sProvisioner(RemoteProvisioner, K8sOptions):  # type: ignore[misc,metaclass]
    """Runs the kernel in a pod of its own."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.phase = "not started"
        #: Every phase the last launch went through, in order (shown in logs and tests).
        self.phases: list[str] = []
        self._restart = -1  # the last launch attempt's number (its pod's -r<n> suffix)

    # -- backend ------------------------------------------------------------------------------
    def backend_key(self) -> Hashable:
        return (type(self), self.connection(), self.watch_scope())

    def make_backend(self) -> K8sBackend:
        return K8sBackend(self.connection(), self.watch_scope())

    @property
    def k8s(self) -> K8sBackend:
        backend = self.backend
        assert isinstance(backend, K8sBackend)
        return backend

    # -- what the checkpoint says -------------------------------------------------------------
    @property
    def pod(self) -> str | None:
        name = self.checkpoint.get("pod")
        return name if isinstance(name, str) else None

    @property
    def pod_namespace(self) -> str:
        return str(self.checkpoint.get("namespace") or "")

    @property
    def host(self) -> str | None:
        """The node the pod runs on (the pod itself is in the model's ``kubernetes``)."""
        node = self.checkpoint.get("host")
        return node if isinstance(node, str) and node else None

    def model_extras(self) -> dict[str, Any]:
        if not self.pod:
            return {}
        view = self.watch.view if isinstance(self.watch, PodWatch) else None
        return {
            "kubernetes": {
                "namespace": self.pod_namespace,
                "pod": self.pod,
                "node": (view.node if view else "") or self.host or "",
                "ip": (view.ip if view else "") or self.checkpoint.get("ip", ""),
                "phase": view.phase if view else "",
            }
        }

    def check_settings(self) -> None:
        if not self.image:
            raise LaunchFailed(
                f"Kernel '{self.kernelspec_name}' not started: its kernelspec names no image. "
                "Set image (KF_K8S_IMAGE) to a kernel image with an explicit tag."
            )
        self.limits()
        self.declared_volumes()

    # -- launch --------------------------------------------------------------------------------
    def _template_text(self) -> str:
        spec = self.kernel_spec
        base = Path(spec.resource_dir) if spec is not None and spec.resource_dir else None
        name = self.pod_template or TEMPLATE_FILE
        if base is not None:
            path = (base / name).resolve()
            if not path.is_relative_to(base.resolve()):
                raise LaunchFailed(
                    f"Kernel '{self.kernelspec_name}' not started: its pod template "
                    f"{self.pod_template!r} is outside the kernelspec's directory. Fix it."
                )
            if path.is_file():
                try:
                    return path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise LaunchFailed(
                        f"Kernel '{self.kernelspec_name}' not started: its pod template "
                        f"{path} cannot be read ({exc}). Fix the kernelspec."
                    ) from None
        if self.pod_template:
            raise LaunchFailed(
                f"Kernel '{self.kernelspec_name}' not started: its pod template "
                f"{self.pod_template!r} is missing from {base}. Fix the kernelspec."
            )
        return DEFAULT_TEMPLATE

    async def do_launch(
        self, cmd: list[str], env: dict[str, str], cwd: str | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        kid = str(self.kernel_id)
        # a failed restart keeps the previous checkpoint: count attempts, never reuse a name
        last = int(self.previous.get("restart", -1)) if self.previous else -1
        restart = self._restart = max(last, self._restart) + 1
        namespace, own = self.choose_namespace(env, kid)
        username, uid, gid = self.user(env)
        name = pod_name(kid, restart)
        params = request_params(
            env,
            kernel_id=kid,
            kernel_name=self.kernelspec_name,
            pod_name=name,
            namespace=namespace,
            image=self.image,
            allowed_images=self.allowed_images,
            uid=uid,
            gid=gid,
            limits=self.limits(),
            gpu_resource=self.gpu_resource,
            volumes=self.declared_volumes(),
            username=username,
        )
        template = await asyncio.to_thread(self._template_text)
        rendered = render_template(template, params)
        deadline = self.launch_deadline() - DEADLINE_MARGIN
        listener = await get_listener(self)
        registration = await listener.expect(kid)
        secret = f"{name}-response"
        backend = self.k8s
        self.phase = "creating its pod"
        self.phases = [self.phase]
        with registration:
            yield {"namespace": namespace, "pod": name, "own_namespace": own, "secret": secret}
            yield {"restart": restart}
            response_env = dict(registration.env)
            key = response_env.pop(KEY_ENV)
            # the image decides PATH; everything else of the kernel's environment goes in
            plain = {k: v for k, v in env.items() if k != "PATH"}
            command = self.launcher_command(cmd, self.launcher_python, self.launcher)
            pod = finish_pod(
                rendered, params, command, {**plain, **response_env}, {KEY_ENV: (secret, "key")}
            )  # fmt: skip
            try:
                async with asyncio.timeout_at(deadline):
                    if own:
                        await self._create_namespace(namespace, params)
                    await self._watching(namespace)
                    await self._create(
                        ns_path(namespace, "secrets"),
                        secret_manifest(secret, {"key": key}, params),
                        "secrets",
                        replace=True,  # a stale secret of that name would hold another key
                    )
                    watch = self.watch = backend.watch(kid, namespace, name)
                    created = await self._create_pod(namespace, pod)
                    if watch.pod is None:  # the watch may already know a newer state
                        watch.update(created)
            except TimeoutError:
                raise self._timeout() from None
            info = await self._until_answered(registration, watch, deadline)
            self.phase = "answered"
            backend.later(backend.api.delete(ns_path(namespace, "secrets", secret)))
            view = watch.view
            yield {
                "host": view.node,
                "ip": view.ip,
                "connection_info": jsonable_connection_info(
                    {k: v for k, v in info.items() if k not in ("pid", "timestamp")}
                ),
            }
        log.info("kernel %s runs in pod %s/%s on %s", kid, namespace, name, view.node)

    async def _watching(self, namespace: str) -> None:
        try:
            await self.k8s.ensure_watching(namespace, wait=max(1.0, self.time_left()))
        except KubeError as exc:
            raise self._api_error(exc, "list and watch", "pods", namespace) from None

    async def _create_namespace(self, namespace: str, params: Any) -> None:
        try:
            await self.k8s.api.create("/api/v1/namespaces", namespace_manifest(namespace, params))
        except KubeError as exc:
            if exc.status != 409:
                raise self._api_error(exc, "create", "namespaces", namespace) from None
        if self.namespace_quota:
            quota = quota_manifest(namespace, self.namespace_quota, params)
            await self._create(ns_path(namespace, "resourcequotas"), quota, "resourcequotas")
            await self._create(
                ns_path(namespace, "limitranges"),
                limit_range_manifest(namespace, self.cpus, self.memory, params),
                "limitranges",
            )
            await self._quota_in_force(namespace, quota["metadata"]["name"])

    async def _quota_in_force(self, namespace: str, name: str) -> None:
        """Wait until the quota controller has taken the new quota in (its status has
        ``hard``): a pod created before the API server's quota admission knows the quota is
        admitted without it (a just-made namespace's empty quota list is cached), and the
        kernel would then run outside its quota."""
        loop = asyncio.get_running_loop()
        until = loop.time() + min(QUOTA_WAIT, max(0.5, self.time_left()))
        delay = 0.05
        while True:
            try:
                found = await self.k8s.api.get(f"{ns_path(namespace, 'resourcequotas')}/{name}")
            except KubeError as exc:
                raise self._api_error(exc, "get", "resourcequotas", namespace) from None
            if (found.get("status") or {}).get("hard"):
                return
            if loop.time() >= until:
                log.warning(
                    "quota %s/%s not in force after %.0f s; going on", namespace, name, QUOTA_WAIT
                )
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _create(
        self, path: str, body: dict[str, Any], resource: str, replace: bool = False
    ) -> dict[str, Any]:
        """Create *body*; one that exists already is kept (or, with *replace*, deleted and
        created again)."""
        namespace = str(body.get("metadata", {}).get("namespace", ""))
        try:
            try:
                return await self.k8s.api.create(path, body)
            except KubeError as exc:
                if exc.status != 409:
                    raise
                if not replace:
                    return {}
                await self.k8s.api.delete(f"{path}/{body['metadata']['name']}", grace=0)
                return await self.k8s.api.create(path, body)
        except KubeError as exc:
            raise self._api_error(exc, "create", resource, namespace) from None

    async def _create_pod(self, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        until = loop.time() + SA_WAIT
        while True:
            try:
                return await self.k8s.api.create(ns_path(namespace, "pods"), pod)
            except KubeError as exc:
                # a fresh namespace's default service account comes a moment later
                no_sa = "serviceaccount" in exc.message and "not found" in exc.message
                if no_sa and loop.time() < until:
                    await asyncio.sleep(0.1)
                    continue
                if exc.status == 403 and "failed quota" in exc.message:
                    raise LaunchFailed(
                        f"Kernel '{self.kernelspec_name}' not started: namespace "
                        f"{namespace!r} has a quota its pod does not meet (Kubernetes: "
                        f"{exc.message[:300]}). Set cpus/memory or the template's resources."
                    ) from None
                if exc.status == 403 and "exceeded quota" in exc.message:
                    raise ResourcesUnavailable(
                        f"Kernel '{self.kernelspec_name}' not started: namespace "
                        f"{namespace!r} has no room (Kubernetes: {exc.message[:300]}). Ask for "
                        "less (KERNEL_MEMORY, KERNEL_CPUS) or raise the quota."
                    ) from None
                raise self._api_error(exc, "create", "pods", namespace) from None

    def _api_error(self, exc: KubeError, verb: str, resource: str, namespace: str) -> Exception:
        where = f"in namespace {namespace!r}" if namespace else "cluster-wide"
        if exc.status in (401, 403):
            return Forbidden(
                f"Kernel '{self.kernelspec_name}' not started: the gateway may not {verb} "
                f"{resource} {where}. Grant its service account the kernelfleet role there "
                f"(deploy/kubernetes). Kubernetes: {exc.message[:300]}"
            )
        if exc.status == 404 and namespace:
            return BadRequest(
                f"Kernel '{self.kernelspec_name}' not started: namespace {namespace!r} does "
                f"not exist. Create it or choose another. Kubernetes: {exc.message[:200]}"
            )
        if exc.status in (400, 422):
            return LaunchFailed(
                f"Kernel '{self.kernelspec_name}' not started: Kubernetes refused its "
                f"{resource[:-1]}: {exc.message[:400]}. Fix the kernelspec's pod template."
            )
        return LaunchFailed(
            f"Kernel '{self.kernelspec_name}' not started: the Kubernetes API failed to "
            f"{verb} {resource} {where} ({exc.status} {exc.reason}: {exc.message[:300]})."
        )

    async def _until_answered(
        self, registration: Any, watch: PodWatch, deadline: float
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        answer = asyncio.ensure_future(registration.wait())
        events: list[str] = []
        next_events = 0.0
        unschedulable_since: float | None = None
        try:
            while not answer.done():
                watch.changed.clear()  # before reading: a change while we work wakes us
                view = watch.view
                why = launch_failure(view)
                if view.unschedulable:
                    unschedulable_since = unschedulable_since or loop.time()
                    if loop.time() - unschedulable_since < self.unschedulable_grace:
                        why = None
                if why is not None:
                    raise await self._failed(view, why)
                if watch.exited.is_set():
                    raise LaunchFailed(
                        f"Kernel '{self.kernelspec_name}' failed to start: its pod "
                        f"{watch.namespace}/{watch.name} was deleted."
                    )
                if view.node and view.phase == "Pending" and loop.time() >= next_events:
                    events = await self._events(watch)
                    next_events = loop.time() + EVENTS_EVERY
                self.phase = phase_text(view, events)
                if not self.phases or self.phases[-1] != self.phase:
                    self.phases.append(self.phase)
                    log.debug("kernel %s: pod %s", self.kernel_id, self.phase)
                if loop.time() >= deadline:
                    raise self._timeout()
                limit = deadline
                if view.node and view.phase == "Pending":
                    limit = min(limit, next_events)
                if unschedulable_since is not None:
                    limit = min(limit, unschedulable_since + self.unschedulable_grace + 0.01)
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
            except LaunchFailed as exc:  # the launcher's own report: add the pod's log
                raise LaunchFailed(
                    f"Kernel '{self.kernelspec_name}' failed to start in pod "
                    f"{watch.namespace}/{watch.name}: {exc.message}{await self.log_tail()}"
                ) from None
        finally:
            answer.cancel()

    async def _events(self, watch: PodWatch) -> list[str]:
        """'Reason: message' of the pod's events, oldest first ([] when unreadable)."""
        try:
            out = await self.k8s.api.get(
                ns_path(watch.namespace, "events"),
                fieldSelector=f"involvedObject.name={watch.name}",
            )
        except KubeError:
            return []
        items = sorted(
            out.get("items") or [],
            key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""),
        )
        return [f"{e.get('reason', '')}: {e.get('message', '')}" for e in items]

    async def _failed(self, view: PodView, why: str) -> Exception:
        where = f"{self.pod_namespace}/{self.pod}"
        if view.unschedulable:
            return ResourcesUnavailable(
                f"Kernel '{self.kernelspec_name}' not started: no node can take its pod "
                f"{where}. Kubernetes: {view.unschedulable[:400]} Ask for less "
                "(KERNEL_MEMORY, KERNEL_CPUS, KERNEL_GPUS) or try later."
            )
        tail = await self.log_tail() if view.exit_code is not None else ""
        return LaunchFailed(
            f"Kernel '{self.kernelspec_name}' failed to start in pod {where}: {why[:500]}{tail}"
        )

    def _timeout(self) -> LaunchTimeout:
        where = f"{self.pod_namespace}/{self.pod}" if self.pod else "(not yet created)"
        hint = ""
        if isinstance(self.watch, PodWatch) and self.watch.view.phase == "Running":
            hint = (
                " Check that pods can reach the gateway's response listener (KF_RESPONSE_ADDRESS)."
            )
        return LaunchTimeout(
            f"Kernel '{self.kernelspec_name}' not ready within its launch timeout: its pod "
            f"{where} was {self.phase}. Raise KERNEL_LAUNCH_TIMEOUT or the kernelspec's "
            f"launch_timeout if the cluster is just slow.{hint}"
        )

    def launch_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, TimeoutError):
            return self._timeout()
        return exc

    # -- running kernels ---------------------------------------------------------------------
    async def do_signal(self, signum: int) -> None:
        """SIGINT (a kernelspec in signal mode) becomes an ``interrupt_request``; no other
        signal reaches a pod."""
        if signum == signal.SIGINT and self.interrupt_by_message():
            return
        log.warning("kernel %s: signal %s cannot reach a pod", self.kernel_id, signum)

    async def do_stop(self, signum: int) -> None:
        if not self.pod:
            return
        grace = 0 if signum == signal.SIGKILL else self.delete_grace
        try:
            await self.k8s.delete_pod(self.pod_namespace, self.pod, grace)
        except KubeError as exc:
            log.warning("kernel %s: pod delete failed: %s", self.kernel_id, exc)
            if signum == signal.SIGKILL and self.watch is not None:
                pod, ns = self.pod, self.pod_namespace
                self.k8s.later(self.k8s.delete_pod(ns, pod, 0))
                self.watch.mark_exited(None)

    async def do_abort(self) -> None:
        kid = str(self.kernel_id)
        backend = self.k8s
        backend.unwatch(kid)
        ns, pod, secret = self.pod_namespace, self.pod, self.checkpoint.get("secret")
        if not pod:
            await backend.stop_orphan(kid)
            return
        with contextlib.suppress(KubeError):
            await backend.delete_pod(ns, pod, 0)
        if isinstance(secret, str):
            with contextlib.suppress(KubeError):
                await backend.api.delete(ns_path(ns, "secrets", secret))
        if self.checkpoint.get("own_namespace"):
            with contextlib.suppress(KubeError):
                await backend.api.delete(f"/api/v1/namespaces/{ns}")

    async def do_cleanup(self, restart: bool) -> None:
        kid = str(self.kernel_id)
        backend = self.k8s
        watch = backend.watches.get(kid)
        if watch is not None and watch is self.watch:
            backend.unwatch(kid)
        ns, pod, secret = self.pod_namespace, self.pod, self.checkpoint.get("secret")
        if not pod:
            return
        # a pod that ended stays (Succeeded/Failed) until deleted
        with contextlib.suppress(KubeError):
            await backend.delete_pod(ns, pod, 0)
        if isinstance(secret, str):
            backend.later(backend.api.delete(ns_path(ns, "secrets", secret)))
        if self.checkpoint.get("own_namespace") and not restart:
            with contextlib.suppress(KubeError):
                await backend.api.delete(f"/api/v1/namespaces/{ns}")

    async def do_log(self, max_bytes: int) -> str | None:
        """The end of the kernel container's output (the launcher's and the kernel's)."""
        if not self.pod:
            raise NotFound(f"kernel {self.kernel_id} has no pod yet")
        path = ns_path(self.pod_namespace, "pods", self.pod, "log")
        # The API serves a log only once the kubelet reported the container started, which
        # can lag behind a kernel that already answered: wait for that report, briefly.
        answered = isinstance(self.checkpoint.get("connection_info"), dict)
        until = asyncio.get_running_loop().time() + (LOG_WAIT if answered else 0.0)
        while True:
            try:
                text = await self.k8s.api.text(path, {"container": "kernel", "tailLines": 2000})
            except KubeError as exc:
                if exc.status != 400:
                    raise NotFound(f"no log for kernel {self.kernel_id}: {exc.message}") from None
                if asyncio.get_running_loop().time() >= until:
                    log.info("kernel %s: no pod log yet (%s)", self.kernel_id, exc.message)
                    return None  # the container has not started: no log yet
                await asyncio.sleep(0.25)
                continue
            return text[-max_bytes:]

    async def do_reattach(self) -> None:
        pod = self.pod
        if not pod or not isinstance(self.checkpoint.get("connection_info"), dict):
            return
        ns = self.pod_namespace
        watch = self.watch = self.k8s.watch(str(self.kernel_id), ns, pod, existing=True)
        self._has_process = True
        try:
            await self.k8s.ensure_watching(ns)
        except (KubeError, TimeoutError) as exc:
            log.warning("kernel %s: pod watch not ready after reattach: %s", self.kernel_id, exc)
        try:  # the watch's listing may predate this kernel's watch: ask for the pod itself
            found = await self.k8s.api.get(ns_path(ns, "pods", pod))
        except KubeError as exc:
            if exc.status == 404:
                watch.deleted(None)
            else:
                log.warning("kernel %s: its pod's state is unknown: %s", self.kernel_id, exc)
        else:
            if watch.pod is None:
                watch.update(found)


__all__ = ["K8sProvisioner"]
