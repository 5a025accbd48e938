"""The metrics: bounded labels, event counting, scrape-time figures, and who may read them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from kernelfleet import __version__
from kernelfleet.gateway.bridge import Traffic
from kernelfleet.gateway.metrics import START_BUCKETS, Metrics, label_word
from kernelfleet.kernels.catalog import KernelSpecCatalog
from kernelfleet.kernels.events import KernelEvent
from kernelfleet.kernels.pool import KernelPool
from kernelfleet.kernels.record import KernelRecord, Lifecycle
from kernelfleet.kernels.registry import KernelRegistry
from kernelfleet.placement.fleet import Fleet
from kernelfleet.transport.agent_client import SSHTarget
from tests.conftest import TOKEN, temp_gateway

HOSTILE = 'x"}\n{evil="1"} 1\n<script>' + "k" * 300
SSH = {"metadata": {"kernel_provisioner": {"provisioner_name": "kernelfleet-ssh"}}}
K8S = {"metadata": {"kernel_provisioner": {"provisioner_name": "kernelfleet-k8s"}}}


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[KernelRegistry]:
    reg = KernelRegistry(KernelSpecCatalog(), str(tmp_path))
    reg.pool = KernelPool(reg)
    yield reg
    reg.context.destroy(linger=0)


def make_metrics(registry: KernelRegistry, **options: Any) -> Metrics:
    fleet = Fleet()
    return Metrics(registry, Traffic(), fleet=lambda: fleet, **options)


#: Families with a profile label: a test that does not name one means none ('').
_PROFILED = {"kernelfleet_kernels", "kernelfleet_kernel_starts_total"}


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    if name in _PROFILED:
        labels.setdefault("profile", "")
    return metrics.registry.get_sample_value(name, labels)


def series(metrics: Metrics, name: str) -> list[dict[str, str]]:
    """The label sets of every sample of the metric family *name*."""
    text = metrics.exposition().decode()
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return [s.labels for s in family.samples]
    return []


def record(kid: str, name: str, state: Lifecycle, spec: dict[str, Any], **kw: Any) -> KernelRecord:
    rec = KernelRecord(id=kid, name=name, owner=kw.pop("owner", "alice"), env={}, launch_timeout=1)
    rec.lifecycle, rec.spec = state, spec
    for key, val in kw.items():
        setattr(rec, key, val)
    return rec


@pytest.mark.parametrize(
    ("given", "allowed", "label"),
    [
        ("", None, ""),
        ("limit", None, "limit"),
        ("hosts_unavailable", None, "hosts_unavailable"),
        ("Error", None, "other"),
        ("a b", None, "other"),
        ("x" * 41, None, "other"),
        ("ssh", {"ssh", "local"}, "ssh"),
        ("<script>", {"ssh", "local"}, "other"),
    ],
)
def test_a_label_takes_only_fixed_words(given: str, allowed: set[str] | None, label: str) -> None:
    assert label_word(given, allowed) == label


def test_a_refused_start_never_makes_the_clients_kernelspec_a_label(
    registry: KernelRegistry,
) -> None:
    metrics = make_metrics(registry)
    for cause in ("not_found", "bad_request"):
        registry.events.publish(KernelEvent("start", "refused", kernelspec=HOSTILE, cause=cause))
    text = metrics.exposition().decode()
    assert "evil" not in text and "<script>" not in text and "kkkk" not in text
    labels = dict(kernelspec="", backend="", outcome="refused", pooled="false")
    assert value(metrics, "kernelfleet_kernel_starts_total", cause="not_found", **labels) == 1
    assert value(metrics, "kernelfleet_kernel_starts_total", cause="bad_request", **labels) == 1
    # a refusal is not a start: no duration
    assert value(metrics, "kernelfleet_kernel_start_duration_seconds_count", backend="") is None


def test_starts_are_counted_by_spec_backend_outcome_cause_and_pool(
    registry: KernelRegistry,
) -> None:
    metrics = make_metrics(registry)
    publish = registry.events.publish
    publish(KernelEvent("start", kernelspec="python3", backend="local", seconds=0.7))
    publish(KernelEvent("start", kernelspec="python3", backend="local", seconds=0.01, pooled=True))
    publish(KernelEvent("start", kernelspec="python3", backend="local", seconds=1.5))
    # known kernelspec, refused for a limit: its name is a catalog name, so it is a label
    publish(KernelEvent("start", "refused", kernelspec="python3", backend="local", cause="limit"))
    publish(
        KernelEvent(
            "start", "failed", kernelspec="remote", backend="ssh", cause="timeout", seconds=9
        )
    )
    starts = "kernelfleet_kernel_starts_total"
    base = {"kernelspec": "python3", "backend": "local"}
    assert value(metrics, starts, outcome="ok", cause="", pooled="false", **base) == 2
    assert value(metrics, starts, outcome="ok", cause="", pooled="true", **base) == 1
    assert value(metrics, starts, outcome="refused", cause="limit", pooled="false", **base) == 1
    assert (
        value(
            metrics,
            starts,
            kernelspec="remote",
            backend="ssh",
            outcome="failed",
            cause="timeout",
            pooled="false",
        )
        == 1
    )
    hist = "kernelfleet_kernel_start_duration_seconds"
    fresh = {"backend": "local", "pooled": "false"}
    assert value(metrics, f"{hist}_count", **fresh) == 2
    assert value(metrics, f"{hist}_sum", **fresh) == pytest.approx(2.2)
    assert value(metrics, f"{hist}_bucket", le="1.0", **fresh) == 1
    assert value(metrics, f"{hist}_bucket", le="0.05", backend="local", pooled="true") == 1
    assert value(metrics, f"{hist}_count", backend="ssh", pooled="false") is None  # failed
    buckets = {s["le"] for s in series(metrics, hist) if "le" in s}
    assert buckets == {*(str(b) for b in START_BUCKETS), "+Inf"}


def test_other_actions_are_counted_with_unknown_words_as_other(registry: KernelRegistry) -> None:
    metrics = make_metrics(registry)
    publish = registry.events.publish
    publish(KernelEvent("cull", kernel_id="k1", owner="alice", backend="local"))
    publish(KernelEvent("cull", kernel_id="k2", owner="bob", backend="local"))
    publish(KernelEvent("death", "failed", cause="exited"))
    publish(KernelEvent("reattach", "failed", cause="gone"))
    publish(KernelEvent("reattach"))
    publish(KernelEvent("shutdown", "refused", cause="not_found"))
    publish(KernelEvent("teleport", "weird", cause="Disk Full!", backend="mainframe"))
    actions = "kernelfleet_kernel_actions_total"
    assert value(metrics, actions, action="cull", outcome="ok", cause="") == 2
    assert value(metrics, actions, action="death", outcome="failed", cause="exited") == 1
    assert value(metrics, actions, action="reattach", outcome="failed", cause="gone") == 1
    assert value(metrics, actions, action="reattach", outcome="ok", cause="") == 1
    assert value(metrics, actions, action="shutdown", outcome="refused", cause="not_found") == 1
    assert value(metrics, actions, action="other", outcome="other", cause="other") == 1
    text = metrics.exposition().decode()
    for word in ("k1", "alice", "bob", "teleport", "mainframe", "Disk"):
        assert word not in text, word


def test_kernels_are_counted_at_scrape_time_with_hosts_only_for_ssh(
    registry: KernelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a record's host comes from its provisioner; here, from a field of the test's own
    monkeypatch.setattr(KernelRecord, "host", property(lambda r: r.env.get("HOST")))
    metrics = make_metrics(registry)
    for rec in (
        record("a", "python3", Lifecycle.RUNNING, {}),
        record("b", "python3", Lifecycle.RUNNING, {}),
        record("c", "python3", Lifecycle.STARTING, {}),
        record("d", "remote", Lifecycle.RUNNING, SSH, env={"HOST": "node1"}),
        record("e", "remote", Lifecycle.DEAD, SSH, env={"HOST": "node2"}),
        record("f", "pods", Lifecycle.RUNNING, K8S, env={"HOST": "kernel-f-pod"}),
    ):
        registry.records[rec.id] = rec
    kernels = "kernelfleet_kernels"
    local = {"kernelspec": "python3", "backend": "local", "host": ""}
    assert value(metrics, kernels, state="running", **local) == 2
    assert value(metrics, kernels, state="starting", **local) == 1
    assert value(metrics, kernels, state="dead", **local) == 0  # every state is shown
    ssh = {"kernelspec": "remote", "backend": "ssh"}
    assert value(metrics, kernels, state="running", host="node1", **ssh) == 1
    assert value(metrics, kernels, state="dead", host="node2", **ssh) == 1
    assert value(metrics, kernels, state="running", kernelspec="pods", backend="k8s", host="") == 1
    assert "kernel-f-pod" not in metrics.exposition().decode()
    assert not series(metrics, "kernelfleet_user_kernels")  # off by default

    # gone kernels leave their series at 0, so "running" answers 0 rather than nothing
    registry.records.clear()
    assert value(metrics, kernels, state="running", **local) == 0
    assert value(metrics, kernels, state="running", host="node1", **ssh) == 0


def test_kernels_per_user_only_when_enabled(registry: KernelRegistry) -> None:
    metrics = make_metrics(registry, metrics_user_labels=True)
    registry.records["a"] = record("a", "python3", Lifecycle.RUNNING, {}, owner="alice")
    registry.records["b"] = record("b", "python3", Lifecycle.STARTING, {}, owner="alice")
    registry.records["c"] = record("c", "python3", Lifecycle.DEAD, {}, owner="bob")
    registry.records["p"] = record("p", "python3", Lifecycle.RUNNING, {}, owner="", pooled=True)
    assert value(metrics, "kernelfleet_user_kernels", user="alice") == 2
    assert value(metrics, "kernelfleet_user_kernels", user="bob") == 0  # dead ones not live
    assert value(metrics, "kernelfleet_user_kernels", user="") is None  # the pool is nobody


def test_pools_websockets_hosts_and_build_info(registry: KernelRegistry) -> None:
    fleet = Fleet()
    traffic = Traffic(opened=5, open=2, to_clients=40, to_clients_bytes=4000, from_clients=3)
    metrics = Metrics(registry, traffic, fleet=lambda: fleet)
    assert registry.pool is not None
    warm = record("w1", "python3", Lifecycle.RUNNING, {}, owner="", pooled=True)
    cold = record("w2", "python3", Lifecycle.STARTING, {}, owner="", pooled=True)
    registry.pool.members["python3"] = [warm, cold]
    metrics.pool_targets = {"python3": 3}
    fleet.link(SSHTarget("node1")).state = "up"
    fleet.link(SSHTarget("node2")).state = "down"
    fleet.link(SSHTarget("node2", user="other")).state = "up"  # one login down: down
    fleet.link(SSHTarget("node3"))  # never tried
    fleet.assign("k1", "node1")
    fleet.assign("k2", "node1")

    assert value(metrics, "kernelfleet_pool_kernels", kernelspec="python3") == 1
    assert value(metrics, "kernelfleet_pool_target_kernels", kernelspec="python3") == 3
    assert value(metrics, "kernelfleet_websocket_connections") == 2
    assert value(metrics, "kernelfleet_websocket_connections_opened_total") == 5
    assert value(metrics, "kernelfleet_websocket_messages_total", direction="to_client") == 40
    assert value(metrics, "kernelfleet_websocket_messages_total", direction="from_client") == 3
    assert value(metrics, "kernelfleet_websocket_bytes_total", direction="to_client") == 4000
    assert value(metrics, "kernelfleet_websocket_dropped_frames_total") == 0
    state = "kernelfleet_ssh_host_state"
    assert value(metrics, state, host="node1", state="up") == 1
    assert value(metrics, state, host="node1", state="down") == 0
    assert value(metrics, state, host="node2", state="down") == 1
    assert value(metrics, state, host="node2", state="up") == 0
    assert value(metrics, state, host="node3", state="unknown") == 1
    assert value(metrics, "kernelfleet_ssh_host_kernels", host="node1") == 2
    assert value(metrics, "kernelfleet_ssh_host_kernels", host="node3") == 0
    assert value(metrics, "kernelfleet_build_info", version=__version__) == 1


def test_every_metric_has_help_and_the_prefix(registry: KernelRegistry) -> None:
    metrics = make_metrics(registry)
    registry.events.publish(KernelEvent("start", kernelspec="python3", backend="local", seconds=1))
    registry.events.publish(KernelEvent("cull"))
    registry.records["a"] = record("a", "python3", Lifecycle.RUNNING, {})
    families = list(text_string_to_metric_families(metrics.exposition().decode()))
    ours = [f for f in families if not f.name.startswith("process_")]
    assert len(ours) >= 14
    for family in ours:
        assert family.name.startswith("kernelfleet_"), family.name
        assert len(family.documentation) > 20, family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)


# -- who may read them, through the real gateway (no kernels) ---------------------------------

USERS: dict[str, Any] = {
    "user_tokens": {"tok-alice": "alice", "tok-root": "root"},
    "admin_users": ["root"],
}


@pytest.fixture
async def fetch(kernelspec_dir: Path) -> AsyncIterator[Any]:
    async with temp_gateway(Authenticator=USERS, Metrics={"metrics_token": "scrape-me"}) as gw:

        async def get(auth: str | None, path: str = "metrics") -> HTTPResponse:
            headers = {"Authorization": auth} if auth is not None else {}
            return await AsyncHTTPClient().fetch(gw.url + path, headers=headers, raise_error=False)

        yield get


@pytest.mark.parametrize(
    "auth",
    ["Bearer scrape-me", "bearer scrape-me", f"token {TOKEN}", f"Bearer {TOKEN}", "token tok-root"],
)
async def test_the_metrics_token_and_admins_may_scrape(fetch: Any, auth: str) -> None:
    resp = await fetch(auth)
    assert resp.code == 200, resp.body
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    assert b"kernelfleet_build_info{" in resp.body


@pytest.mark.parametrize(
    ("auth", "code", "says"),
    [
        (None, 401, "Bearer"),
        ("Bearer wrong", 401, "not valid"),
        ("token scrape-me", 401, "not valid"),  # the metrics token is a Bearer token only
        ("token tok-alice", 403, "not an admin"),
    ],
)
async def test_others_are_refused_with_what_to_send(
    fetch: Any, auth: str | None, code: int, says: str
) -> None:
    resp = await fetch(auth)
    assert resp.code == code, resp.body
    body = json.loads(resp.body)
    assert set(body) == {"reason", "message"} and says in body["message"]
    assert b"kernelfleet_" not in resp.body


async def test_the_metrics_token_opens_nothing_else(fetch: Any) -> None:
    assert (await fetch("Bearer scrape-me", "api/kernels")).code == 401


async def test_metrics_auth_none_needs_no_credentials(kernelspec_dir: Path) -> None:
    async with temp_gateway(Metrics={"metrics_auth": "none"}) as gw:
        resp = await AsyncHTTPClient().fetch(gw.url + "metrics", raise_error=False)
        assert resp.code == 200 and b"kernelfleet_kernels" in resp.body
        assert (await AsyncHTTPClient().fetch(gw.url + "api", raise_error=False)).code == 401
