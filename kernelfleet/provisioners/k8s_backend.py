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
from kernelfleet.provisioners.k8s_pod import COMPONENT, LABEL_KERNEL, OWNED
from kernelfleet.provisioners.k8s_status import PodView, pod_view
from kernelfleet.transport.host import UNKNOWN_EXIT
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
            self.exit_code = UNKNOWN_EXIT if code is None else code
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
        """Start the watch that covers *namespace* unless running; return once a listing of
        it succeeded (raises the API's :class:`KubeError` when the latest listing failed; the
        watch keeps retrying in the background)."""
        key = self._key(namespace)
        ready = self._ready.get(key)
        if ready is None or (ready.done() and ready.exception() is not None):
            ready = self._ready[key] = asyncio.get_running_loop().create_future()
            ready.add_done_callback(_retrieve)
        if key not in self._loops or self._loops[key].done():
            self._loops[key] = asyncio.ensure_future(self._run(key))
        async with asyncio.timeout(wait):
            await asyncio.shield(ready)

    def _path(self, key: str | None) -> str:
        return "/api/v1/pods" if key is None else ns_path(key, "pods")

    def _listed(self, key: str | None, error: KubeError | None) -> None:
        """Resolve the waiters of *key*'s first (or next) listing."""
        ready = self._ready.get(key)
        if ready is None or (ready.done() and error is None and ready.exception() is not None):
            ready = self._ready[key] = asyncio.get_running_loop().create_future()
            ready.add_done_callback(_retrieve)
        if not ready.done():
            if error is None:
                ready.set_result(None)
            else:
                ready.set_exception(error)

    async def _run(self, key: str | None) -> None:
        """List, then watch from the listing's version; renewed when the server closes the
        watch, relisted after 410 Expired, retried with back-off while the API fails."""
        failures = 0
        path = self._path(key)
        loop = asyncio.get_running_loop()
        while True:
            try:
                started = loop.time()
                listing = await self.api.get(path, labelSelector=SELECTOR)
                self._relisted(key, listing.get("items") or [], started)
                self._listed(key, None)
                version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
                failures = 0
                while True:  # renewed from the last version until it expires (410)
                    opened, events = loop.time(), 0
                    async for kind, obj in self.api.watch(path, version, labelSelector=SELECTOR):
                        meta = obj.get("metadata") or {}
                        version = str(meta.get("resourceVersion") or version)
                        events += 1
                        if kind != "BOOKMARK":
                            self._event(kind, obj)
                    if not events and loop.time() - opened < 1.0:
                        await asyncio.sleep(1.0)  # a watch that ends at once: never spin
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                self._listed(key, exc)
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
        """Delete every pod and per-kernel namespace labelled with *kernel_id*, and its first
        launch's response secret (by name: the gateway may not list secrets)."""
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
                if ns is not None:  # the secret of a first launch (orphans never restarted)
                    with contextlib.suppress(KubeError):
                        await self.api.delete(ns_path(ns, "secrets", f"kf-{kernel_id}-response"))
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
        for ns in [""] if self.scope is None else self.scope:
            key = self._key(ns)
            if key not in self._loops:
                self._loops[key] = asyncio.ensure_future(self._run(key))

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


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: its waiter may have gone
