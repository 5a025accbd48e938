"""The kernel events: their bounded words, their JSON, and a bus no subscriber can break."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from kernelfleet.errors import (
    BadRequest,
    Forbidden,
    HostsUnavailable,
    LaunchFailed,
    LaunchTimeout,
    LimitReached,
    NotFound,
    ResourcesUnavailable,
)
from kernelfleet.kernels.events import (
    EventBus,
    KernelEvent,
    backend_of,
    cause_of,
    outcome_of,
)


@pytest.mark.parametrize(
    ("exc", "cause", "outcome"),
    [
        (LaunchTimeout("t"), "timeout", "failed"),
        (TimeoutError(), "timeout", "failed"),
        (LimitReached("l"), "limit", "refused"),
        (HostsUnavailable("h"), "hosts_unavailable", "failed"),
        (ResourcesUnavailable("r"), "resources_unavailable", "failed"),
        (LaunchFailed("f"), "launch_failed", "failed"),
        (Forbidden("f"), "forbidden", "refused"),
        (NotFound("n"), "not_found", "refused"),
        (BadRequest("b"), "bad_request", "refused"),
        (RuntimeError("boom"), "error", "failed"),
    ],
)
def test_every_error_has_a_short_fixed_cause_and_outcome(
    exc: BaseException, cause: str, outcome: str
) -> None:
    assert (cause_of(exc), outcome_of(exc)) == (cause, outcome)


def test_success_is_ok() -> None:
    assert outcome_of(None) == "ok"


@pytest.mark.parametrize(
    ("spec", "backend"),
    [
        ({}, "local"),
        ({"metadata": {"kernel_provisioner": {"provisioner_name": "kernelfleet-ssh"}}}, "ssh"),
        ({"metadata": {"kernel_provisioner": {"provisioner_name": "kernelfleet-k8s"}}}, "k8s"),
        ({"metadata": {"kernel_provisioner": {"provisioner_name": "x<script>"}}}, "other"),
        ({"metadata": "junk"}, "local"),
        ({"metadata": {"kernel_provisioner": ["junk"]}}, "local"),
    ],
)
def test_a_kernelspecs_backend_is_one_of_a_few_words(spec: dict[str, object], backend: str) -> None:
    assert backend_of(spec) == backend


def test_an_events_json_leaves_out_empty_fields() -> None:
    at = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
    event = KernelEvent("start", actor="alice", kernel_id="k", seconds=1.234567, at=at)
    assert event.as_json() == {
        "time": "2026-12-03T12:00:00.000+00:00",
        "action": "start",
        "outcome": "ok",
        "actor": "alice",
        "kernel_id": "k",
        "seconds": 1.2346,
        "source": "api",
    }


def test_a_failing_subscriber_is_logged_and_the_others_still_hear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus, heard = EventBus(), []

    def broken(event: KernelEvent) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(broken)
    unsubscribe = bus.subscribe(heard.append)
    with caplog.at_level(logging.ERROR, "kernelfleet.events"):
        bus.publish(KernelEvent("cull"))
    assert [e.action for e in heard] == ["cull"]
    assert "an event subscriber failed on cull" in caplog.text
    unsubscribe()
    bus.publish(KernelEvent("cull"))
    assert len(heard) == 1
