"""What the dashboard shows (pure): kernel rows, their diffs, counts, pools and failed starts."""

from __future__ import annotations

import datetime as dt
import os

from kernelfleet.dashboard import views
from kernelfleet.dashboard.live import Listener, frame
from kernelfleet.kernels.events import KernelEvent
from kernelfleet.kernels.record import KernelRecord, Lifecycle

SPEC = {
    "display_name": "Python on SSH",
    "metadata": {"kernel_provisioner": {"provisioner_name": "kernelfleet-ssh"}},
}


def record(kid: str = "k1", **kw: object) -> KernelRecord:
    values: dict[str, object] = {
        "id": kid,
        "name": "fleet",
        "owner": "alice",
        "env": {"KERNEL_PROFILE": "small"},
        "launch_timeout": 60.0,
        "spec": SPEC,
        "created": dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        "last_activity": dt.datetime(2026, 12, 1, 0, 5, tzinfo=dt.UTC),
    }
    values.update(kw)
    return KernelRecord(**values)  # type: ignore[arg-type]


def test_a_row_says_who_what_where_and_when_but_not_ages() -> None:
    r = record(lifecycle=Lifecycle.RUNNING, execution_state="busy", connections=2)
    row = views.kernel_row(r, memory=150 * 1024 * 1024 + 12345)
    assert row["owner"] == "alice" and row["spec"] == "fleet" and row["profile"] == "small"
    assert row["display_name"] == "Python on SSH" and row["backend"] == "ssh"
    assert row["state"] == "busy" and row["connections"] == 2
    assert row["host"] == ""  # not placed yet: no provisioner
    assert row["memory"] == 150 * 1024 * 1024  # whole MiB: small changes push nothing
    created = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert row["created"] == int(created.timestamp() * 1000)  # the browser counts the age
    assert views.kernel_row(r, memory=None)["memory"] is None


def test_the_state_is_the_lifecycle_unless_the_kernel_runs() -> None:
    assert views.state_of(record(lifecycle=Lifecycle.DEAD, execution_state="idle")) == "dead"
    assert views.state_of(record(lifecycle=Lifecycle.STARTING)) == "starting"
    assert views.state_of(record(lifecycle=Lifecycle.RUNNING, execution_state="idle")) == "idle"
    pooled = views.kernel_row(record(owner="", pooled=True), None)
    assert pooled["owner"] == views.POOL


def test_diffs_carry_only_new_changed_and_gone_rows() -> None:
    a = {"k1": {"id": "k1", "state": "idle"}, "k2": {"id": "k2", "state": "idle"}}
    b = {
        "k1": {"id": "k1", "state": "busy"},
        "k2": {"id": "k2", "state": "idle"},
        "k3": {"id": "k3", "state": "starting"},
    }
    changed, gone = views.diff_rows(a, b)
    assert [r["id"] for r in changed] == ["k1", "k3"] and gone == []
    assert views.diff_rows(b, {}) == ([], ["k1", "k2", "k3"])
    assert views.diff_rows(b, b) == ([], [])


def test_counts_by_state_spec_and_host() -> None:
    rows = [
        {"state": "idle", "spec": "a", "host": "h1"},
        {"state": "busy", "spec": "a", "host": "h1"},
        {"state": "idle", "spec": "b", "host": ""},
    ]
    assert views.counts(rows) == {
        "by_state": {"busy": 1, "idle": 2},
        "by_spec": {"a": 2, "b": 1},
        "by_host": {"(not placed)": 1, "h1": 2},
    }


def test_pools_count_ready_and_starting_members() -> None:
    members = [
        record("p1", lifecycle=Lifecycle.RUNNING),
        record("p2", lifecycle=Lifecycle.STARTING),
        record("p3", lifecycle=Lifecycle.RUNNING),
    ]
    assert views.pool_row("fleet", 3, members) == {
        "spec": "fleet",
        "size": 3,
        "ready": 2,
        "starting": 1,
    }


def test_only_failed_or_refused_starts_are_failures() -> None:
    failed = KernelEvent(
        "start",
        "failed",
        actor="bob",
        kernelspec="fleet",
        cause="timeout",
        message="no answer from h1 within 60 s",
    )
    row = views.failure_row(failed)
    assert row is not None and row["message"] == "no answer from h1 within 60 s"
    assert views.failure_row(KernelEvent("start")) is None
    assert views.failure_row(KernelEvent("shutdown", "failed")) is None


def test_memory_is_read_only_for_a_process_on_this_machine() -> None:
    assert views.kernel_rss(record()) is None  # no provisioner: nothing to tell
    assert os.path.exists("/proc/self/status")


def test_a_listener_that_falls_behind_drops_its_queue_for_a_snapshot() -> None:
    listener = Listener()
    for i in range(600):
        listener.put(frame("kernel", {"i": i}))
    assert listener.behind and listener.queue.empty()
    listener.put(frame("kernel", {"i": 601}))  # ignored until the feed resends a snapshot
    assert listener.queue.empty()
    assert frame("gone", "k1") == 'event: gone\ndata: "k1"\n\n'
