"""The Kubernetes backend's single watch, against a scripted API (the real cluster's tests are in
tests/k8s): first listing failures, relists after 410, pods that vanished while no watch ran."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kernelfleet.provisioners import k8s_backend
from kernelfleet.provisioners.k8s_backend import DELETED_EXIT, K8sBackend
from kernelfleet.transport.host import UNKNOWN_EXIT
from kernelfleet.transport.k8s_api import Connection, KubeError

pytestmark = pytest.mark.timeout(20)


def pod(name: str, phase: str = "Running", version: str = "5", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": version},
        "spec": {"nodeName": "n1"},
        "status": {"phase": phase, **status},
    }


class ScriptedApi:
    """Answers listings from *listings* (a KubeError is raised) and watches from *watches*
    (lists of events; a KubeError ends the watch with it); then waits forever."""

    def __init__(self, listings: list[Any], watches: list[Any]):
        self.listings = listings
        self.watches = watches
        self.listed = 0
        self.watched: list[str] = []

    async def get(self, path: str, **query: Any) -> dict[str, Any]:
        self.listed += 1
        answer = self.listings.pop(0) if self.listings else {"items": [], "metadata": {}}
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    async def watch(
        self, path: str, version: str, **query: Any
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.watched.append(version)
        if not self.watches:
            await asyncio.Event().wait()
        for event in self.watches.pop(0):
            if isinstance(event, Exception):
                raise event
            yield event

    async def close(self) -> None:
        return None


def backend(api: ScriptedApi) -> K8sBackend:
    made = K8sBackend(Connection(), ("ns",))
    made.api = api  # type: ignore[assignment]
    return made


def listing(*pods: dict[str, Any], version: str = "10") -> dict[str, Any]:
    return {"items": list(pods), "metadata": {"resourceVersion": version}}


async def test_a_failed_first_listing_is_reported_then_retried_until_it_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(k8s_backend, "RETRY_SECONDS", (0.01,))
    api = ScriptedApi([KubeError(0, "Unreachable", "down"), listing(pod("p1"))], [])
    b = backend(api)
    try:
        with pytest.raises(KubeError, match="down"):
            await b.ensure_watching("ns", wait=5)
        w = b.watch("k1", "ns", "p1")
        await b.ensure_watching("ns", wait=5)  # the same loop listed again, and succeeded
        assert api.listed == 2 and w.view.phase == "Running" and w.alive
    finally:
        await b.close()


async def test_events_feed_the_kernels_watch_and_a_deletion_ends_it() -> None:
    finished = pod("p1", "Failed", containerStatuses=[_terminated(3)])
    api = ScriptedApi(
        [listing()],
        [[("ADDED", pod("p1", "Pending")), ("MODIFIED", finished), ("DELETED", finished)]],
    )
    b = backend(api)
    try:
        w = b.watch("k1", "ns", "p1")
        await b.ensure_watching("ns")
        async with asyncio.timeout(5):
            await w.exited.wait()
        assert w.exit_code == 3 and api.watched[0] == "10"  # from the listing's version
    finally:
        await b.close()


async def test_a_pod_gone_while_the_watch_was_down_is_found_by_the_relist_after_410() -> None:
    api = ScriptedApi(
        [listing(pod("p1")), listing(version="20")],
        [[("BOOKMARK", {"metadata": {"resourceVersion": "15"}}), KubeError(410, "Expired", "")]],
    )
    b = backend(api)
    try:
        w = b.watch("k1", "ns", "p1")
        await b.ensure_watching("ns")
        async with asyncio.timeout(5):
            await w.exited.wait()
        assert w.exit_code == DELETED_EXIT and api.listed == 2
    finally:
        await b.close()


async def test_a_pod_not_yet_created_is_not_taken_for_gone_by_a_relist() -> None:
    api = ScriptedApi([listing()], [])
    b = backend(api)
    try:
        w = b.watch("k1", "ns", "p-new")  # a launch about to create it
        await b.ensure_watching("ns")
        assert w.alive and not w.seen
    finally:
        await b.close()


def test_an_exit_with_no_known_code_is_not_taken_for_alive() -> None:
    w = k8s_backend.PodWatch("k1", "ns", "p1")
    w.mark_exited(None)
    assert w.exit_code == UNKNOWN_EXIT and not w.alive


def _terminated(code: int) -> dict[str, Any]:
    return {"name": "kernel", "state": {"terminated": {"exitCode": code, "reason": "Error"}}}
