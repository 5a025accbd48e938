"""One Kubernetes backend per API server and scope: a single watch of all kernel pods.

:class:`K8sBackend` lists and then watches the pods labelled ``app.kubernetes.io/managed-by=
kernelfleet, app.kubernetes.io/component=kernel`` — across all namespaces for per-kernel
namespaces, else in each namespace of its scope — and feeds every kernel's :class:`PodWatch`
from that one stream: no request per kernel, whatever their number. The watch is renewed when
the server closes it and relisted after ``410 Expired``; an unreachable API server is retried
with back-off, the kernels keeping their last known state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kernelfleet.provisioners.base import Backend
from kernelfleet.provisioners.k8s_pod import COMPONENT, LABEL_KERNEL, OWNED, PodView, pod_view
from kernelfleet.transport.k8s_api import Connection, KubeApi, KubeError, label_selector, ns_path

log = logging.getLogger(__name__)

SELECTOR = label_selector({**OWNED, COMPONENT: "kernel"})
#: Exit code a kernel gets when its pod vanished without a terminated status (deleted).
DELETED_EXIT = -15
RETRY_SECONDS = (0.5, 1, 2, 5, 10)


class PodWatch:
    """Liveness of one kernel pod (the provisioner's Watch), fed by the backend."""

    def __init__(self, kernel_id: str, namespace: str, name: str, existing: bool = False):
        self.kernel_id, self.namespace, self.name = kernel_id, namespace, name
        self.pod: dict[str, Any] | None = None
        self.view = PodView()
        self.exit_code: int | None = None
        self.exited = asyncio.Event()
        self.changed = asyncio.Event()
        #: The pod was seen (or is known to exist): its absence from a listing means it is gone.
        self.seen = existing
        self.seen_at = 0.0

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    def mark_exited(self, code: int | None) -> None:
        if not self.exited.is_set():
            self.exit_code = code
            self.exited.set()
        self.changed.set()

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        self.view = pod_view(pod)
        self.seen = True
        self.seen_at = asyncio.get_running_loop().time()
        if self.view.ended:
            self.mark_exited(self.view.exit_code if self.view.exit_code is not None else 1)
        self.changed.set()

    def deleted(self, pod: dict[str, Any] | None) -> None:
        if pod is not None:
            self.pod, self.view = pod, pod_view(pod)
        code = self.view.exit_code
        self.mark_exited(code if code is not None else DELETED_EXIT)


class K8sBackend(Backend):
    """See the module docstring. *scope*: the namespaces watched, None for all."""

    def __init__(self, conn: Connection, scope: tuple[str, ...] | None):
        self.api = KubeApi(conn)
        self.scope = scope
        self.watches: dict[str, PodWatch] = {}
        self._by_pod: dict[tuple[str, str], PodWatch] = {}
        self._loops: dict[str | None, asyncio.Task[None]] = {}
        self._ready: dict[str | None, asyncio.Future[None]] = {}
        self._pending: set[asyncio.Task[Any]] = set()

    # -- watches of kernels ---------------------------------------------------------------
    def watch(self, kernel_id: str, namespace: str, name: str, existing: bool = False) -> PodWatch:
        self.unwatch(kernel_id)
        w = PodWatch(kernel_id, namespace, name, existing)
        self.watches[kernel_id] = w
        self._by_pod[(namespace, name)] = w
        return w

    def unwatch(self, kernel_id: str) -> None:
        w = self.watches.pop(kernel_id, None)
        if w is not None and self._by_pod.get((w.namespace, w.name)) is w:
            del self._by_pod[(w.namespace, w.name)]

    # -- the watch loop -------------------------------------------------------------------
    def _key(self, namespace: str) -> str | None:
        return None if self.scope is None else namespace

    async def ensure_watching(self, namespace: str, wait: float = 10.0) -> None:
        """Start the watch that covers *namespace* unless running; return once its first
        listing is done (raises the API's :class:`KubeError` when that listing fails)."""
        key = self._key(namespace)
        ready = self._ready.get(key)
        if ready is None or (ready.done() and ready.exception() is not None):
            ready = self._ready[key] = asyncio.get_running_loop().create_future()
            old = self._loops.get(key)
            if old is not None:
                old.cancel()
            self._loops[key] = asyncio.ensure_future(self._run(key, ready))
        async with asyncio.timeout(wait):
            await asyncio.shield(ready)

    def _path(self, key: str | None) -> str:
        return "/api/v1/pods" if key is None else ns_path(key, "pods")

    async def _run(self, key: str | None, ready: asyncio.Future[None]) -> None:
        failures = 0
        path = self._path(key)
        while True:
            try:
                started = asyncio.get_running_loop().time()
                listing = await self.api.get(path, labelSelector=SELECTOR)
                self._relisted(key, listing.get("items") or [], started)
                if not ready.done():
                    ready.set_result(None)
                version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
                failures = 0
                while True:  # renewed from the last version until it expires (410)
                    async for kind, obj in self.api.watch(path, version, labelSelector=SELECTOR):
                        meta = obj.get("metadata") or {}
                        version = str(meta.get("resourceVersion") or version)
                        if kind != "BOOKMARK":
                            self._event(kind, obj)
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                if not ready.done():
                    ready.set_exception(exc)
                    ready.exception()  # retrieved: the waiter may have gone
                    return
                if exc.status != 410:
                    log.warning("watch of kernel pods (%s): %s", key or "all namespaces", exc)
                    failures += 1
            except Exception:
                log.exception("watch of kernel pods (%s) failed", key or "all namespaces")
                failures += 1
            if failures:
                await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1])

    def _event(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        w = self._by_pod.get((str(meta.get("namespace")), str(meta.get("name"))))
        if w is None:
            return
        if kind == "DELETED":
            w.deleted(pod)
        else:
            w.update(pod)

    def _relisted(self, key: str | None, pods: list[dict[str, Any]], started: float) -> None:
        present = set()
        for pod in pods:
            meta = pod.get("metadata") or {}
            present.add((str(meta.get("namespace")), str(meta.get("name"))))
            self._event("MODIFIED", pod)
        for (ns, name), w in list(self._by_pod.items()):
            if key is not None and ns != key:
                continue
            if (ns, name) not in present and w.seen and w.seen_at <= started:
                w.deleted(None)

    def wake(self) -> None:
        """Nothing to do: pod changes are pushed."""

    # -- actions ---------------------------------------------------------------------------
    async def delete_pod(self, namespace: str, name: str, grace: int | None) -> None:
        await self.api.delete(ns_path(namespace, "pods", name), grace=grace)

    def later(self, coro: Any) -> None:
        """Run *coro* in the background (best-effort deletes), logged if it fails."""
        task = asyncio.ensure_future(coro)
        self._pending.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._pending.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("kubernetes clean-up failed: %s", t.exception())

        task.add_done_callback(done)

    async def stop_orphan(self, kernel_id: str) -> int:
        """Delete every pod, secret and per-kernel namespace labelled with *kernel_id*."""
        selector = label_selector({**OWNED, LABEL_KERNEL: kernel_id})
        stopped = 0
        namespaces: list[str | None] = [None] if self.scope is None else list(self.scope)
        try:
            for ns in namespaces:
                pods_path = "/api/v1/pods" if ns is None else ns_path(ns, "pods")
                for pod in (await self.api.get(pods_path, labelSelector=selector)).get(
                    "items"
                ) or []:
                    meta = pod.get("metadata") or {}
                    await self.delete_pod(str(meta["namespace"]), str(meta["name"]), 0)
                    stopped += 1
                sec_path = "/api/v1/secrets" if ns is None else ns_path(ns, "secrets")
                with contextlib.suppress(KubeError):
                    for sec in (await self.api.get(sec_path, labelSelector=selector)).get(
                        "items"
                    ) or []:
                        meta = sec.get("metadata") or {}
                        await self.api.delete(
                            ns_path(str(meta["namespace"]), "secrets", str(meta["name"]))
                        )
            if self.scope is None:
                for nsobj in (await self.api.get("/api/v1/namespaces", labelSelector=selector)).get(
                    "items"
                ) or []:
                    name = str((nsobj.get("metadata") or {}).get("name"))
                    await self.api.delete(f"/api/v1/namespaces/{name}")
                    stopped += 1
        except KubeError as exc:
            log.warning("could not stop what kernel %s left: %s", kernel_id, exc)
        return stopped

    async def warm_up(self) -> None:
        for ns in [None] if self.scope is None else self.scope:
            key = self._key(ns or "")
            if key not in self._loops:
                ready = self._ready[key] = asyncio.get_running_loop().create_future()
                ready.add_done_callback(lambda f: f.cancelled() or f.exception())
                self._loops[key] = asyncio.ensure_future(self._run(key, ready))

    async def close(self) -> None:
        if self._pending:  # best-effort deletes (secrets): let them finish, briefly
            await asyncio.wait(list(self._pending), timeout=5)
        tasks = [*self._loops.values(), *self._pending]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._loops.clear()
        self._ready.clear()
        await self.api.close()
