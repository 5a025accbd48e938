"""Prometheus metrics at ``GET <base_url>metrics``, in the text exposition format.

What is measured, and where each figure comes from:
- *Now* (computed at each scrape, so never out of step with the API): kernels by lifecycle
  state, kernelspec, backend and host, from the registry's records; warm-pool kernels per
  kernelspec; open websockets and the bridge's message and byte counters
  (:class:`~kernelfleet.gateway.bridge.Traffic`); SSH host health and kernels per host, from the
  fleet (:mod:`kernelfleet.placement.fleet`).
- *Since the gateway started* (fed by the registry's :class:`~kernelfleet.kernels.events.EventBus`):
  starts by kernelspec, backend, outcome, cause and whether a warm pool served them; the start
  duration per backend; every other action (restart, interrupt, shutdown, cull, death,
  auto_restart, reattach, takeover) by action, outcome and cause.

Every label takes few values, whatever clients send. Kernelspec names come from the catalog
(a refused start names the kernelspec the client sent, which becomes a label only when the
catalog knew it: the event then has a ``backend``); hosts are labels only for the SSH backend,
whose hosts an admin lists (other backends' "hosts" are pods and containers, one per kernel);
words that are not one of the fixed ones become ``other``. No kernel ids; user names only with
``metrics_user_labels``. A series once shown stays, at 0, when its kernels are gone, so a
query for running kernels answers 0 rather than nothing.

Each gateway has a registry of its own (jupyter_server puts its metrics on prometheus_client's
global one, and tests run several gateways in one process). A scrape is computed on the event
loop: it reads the records as they are between two awaits, and takes about a millisecond with
a hundred kernels, a few with a thousand (measured on a busy 2-core machine).
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from traitlets import Bool, Enum, Unicode
from traitlets.config import LoggingConfigurable

from kernelfleet import __version__
from kernelfleet.config import option
from kernelfleet.errors import Forbidden, Unauthorized, describe
from kernelfleet.gateway.base import BaseHandler
from kernelfleet.kernels.events import ACTIONS, BACKENDS, OUTCOMES, KernelEvent, backend_of
from kernelfleet.kernels.record import KernelRecord, Lifecycle
from kernelfleet.placement.fleet import Fleet, get_fleet

if TYPE_CHECKING:
    from kernelfleet.gateway.bridge import Traffic
    from kernelfleet.kernels.registry import KernelRegistry

#: Seconds; a warm-pool hand-over takes tens of milliseconds, a YARN or pod start minutes.
START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_BACKEND_LABELS = frozenset(BACKENDS.values()) | {"other"}
_STATES = tuple(state.value for state in Lifecycle)
_HOST_STATES = ("down", "up", "unknown")  # by precedence, for a host with several logins
_WORD = re.compile(r"[a-z][a-z_]{0,39}")


def label_word(value: str, allowed: Iterable[str] | None = None) -> str:
    """*value* if it is one of *allowed* (or, with none given, a short lower-case word),
    ``""`` if empty, else ``"other"``: what an event field may add to a label's values."""
    if not value:
        return ""
    if allowed is not None:
        return value if value in allowed else "other"
    return value if _WORD.fullmatch(value) else "other"


def _running_fleet() -> Fleet | None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    return get_fleet()


class Metrics(LoggingConfigurable):
    """The gateway's Prometheus registry: see the module docstring."""

    metrics_auth = option(
        Enum(
            ["admin", "none"],
            default_value="admin",
            help="""Who may read GET /metrics. 'admin' (default): an admin's credentials, or
            the metrics_token. 'none': anyone who can reach the port (the metrics carry no
            kernel ids, and no user names unless metrics_user_labels is on).""",
        ),
        "KF_METRICS_AUTH",
    )
    metrics_token = option(
        Unicode(
            "",
            help="""A token that may read GET /metrics and nothing else, for scrapers: sent as
            'Authorization: Bearer <token>' (Prometheus: authorization.credentials). Empty
            (default): none; scrapers then need an admin's token.""",
        ),
        "KF_METRICS_TOKEN",
    )
    metrics_user_labels = option(
        Bool(
            False,
            help="""Also publish kernels per user (kernelfleet_user_kernels{user=…}): one
            series per user who ever had a kernel. Default: false (no user names in the
            metrics).""",
        ),
        "KF_METRICS_USER_LABELS",
    )

    def __init__(
        self,
        registry: KernelRegistry,
        traffic: Traffic,
        *,
        fleet: Callable[[], Fleet | None] = _running_fleet,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kernel_registry = registry
        self.traffic = traffic
        self.fleet = fleet
        self.registry = CollectorRegistry()
        self.starts = Counter(
            "kernelfleet_kernel_starts",
            "Kernel start requests, by kernelspec, backend, outcome (ok, refused: the client's "
            "fault or not allowed, failed), cause of a refusal or failure, and whether a warm "
            "pool served the start, and kernel profile ('' without one). A request naming an "
            "unknown kernelspec has kernelspec=''.",
            ["kernelspec", "backend", "outcome", "cause", "pooled", "profile"],
            registry=self.registry,
        )
        self.start_seconds = Histogram(
            "kernelfleet_kernel_start_duration_seconds",
            "Seconds from a start request to a ready kernel, for successful starts, by backend "
            "and whether a warm pool served the start.",
            ["backend", "pooled"],
            buckets=START_BUCKETS,
            registry=self.registry,
        )
        self.actions = Counter(
            "kernelfleet_kernel_actions",
            "What happened to kernels other than starts (restart, interrupt, shutdown, cull, "
            "death, auto_restart, reattach, takeover), by action, outcome and cause.",
            ["action", "outcome", "cause"],
            registry=self.registry,
        )
        self.registry.register(_Snapshot(self))
        ProcessCollector(registry=self.registry)
        self.pool_targets: dict[str, int] = {}
        registry.events.subscribe(self.count)

    def count(self, event: KernelEvent) -> None:
        """Count *event* (an :class:`EventBus` subscriber)."""
        outcome = label_word(event.outcome, OUTCOMES)
        cause = label_word(event.cause)
        backend = label_word(event.backend, _BACKEND_LABELS)
        if event.action != "start":
            self.actions.labels(label_word(event.action, ACTIONS), outcome, cause).inc()
            return
        kernelspec = event.kernelspec if backend else ""  # else the client's words
        pooled = "true" if event.pooled else "false"
        profile = label_word(event.profile, self.kernel_registry.profiles.table().profiles)
        self.starts.labels(kernelspec, backend, outcome, cause, pooled, profile).inc()
        if outcome == "ok" and event.seconds is not None:
            self.start_seconds.labels(backend, pooled).observe(event.seconds)

    async def refresh(self) -> None:
        """Read what a scrape needs that takes an await: each warm pool's configured size."""
        pool = self.kernel_registry.pool
        if pool is None:
            return
        targets = {}
        for name, entry in (await self.kernel_registry.catalog.all()).items():
            size = await pool.size_of(entry)
            if size > 0:
                targets[name] = size
        self.pool_targets = targets

    def exposition(self) -> bytes:
        """The metrics in the text exposition format."""
        return generate_latest(self.registry)

    def allows_scraper(self, authorization: str) -> bool:
        """Whether an ``Authorization`` header carries the metrics token."""
        scheme, _, value = authorization.strip().partition(" ")
        token = self.metrics_token
        return (
            bool(token)
            and scheme.lower() == "bearer"
            and hmac.compare_digest(value.strip().encode(), token.encode())
        )


class _Snapshot:
    """The figures read at scrape time (a prometheus_client collector)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # Label sets shown once, shown again at 0 (bounded: every label value is).
        self._kernel_keys: set[tuple[str, ...]] = set()
        self._users: set[str] = set()

    def collect(self) -> Iterable[Metric]:
        yield from self._kernels()
        yield from self._pools()
        yield from self._websockets()
        yield from self._hosts()
        info = GaugeMetricFamily(
            "kernelfleet_build_info",
            "The kernelfleet version serving (always 1).",
            labels=["version"],
        )
        info.add_metric([__version__], 1)
        yield info

    def _kernels(self) -> Iterable[Metric]:
        counts: dict[tuple[str, ...], int] = {}
        users: dict[str, int] = {}
        profiles = self.metrics.kernel_registry.profiles.table().profiles
        for record in list(self.metrics.kernel_registry.records.values()):
            backend = backend_of(record.spec)
            host = (record.host or "") if backend == "ssh" else ""
            profile = record.profile if record.profile in profiles else ""  # admin-defined only
            key = (record.name, backend, host, profile)
            self._kernel_keys.add(key)
            state_key = (record.lifecycle.value, *key)
            counts[state_key] = counts.get(state_key, 0) + 1
            if not record.pooled:
                live = record.lifecycle is not Lifecycle.DEAD
                users[record.owner] = users.get(record.owner, 0) + int(live)
        kernels = GaugeMetricFamily(
            "kernelfleet_kernels",
            "Kernels this gateway holds, warm-pool kernels included, by lifecycle state "
            "(starting, running, restarting, stopping, dead), kernelspec, backend, host "
            "(SSH kernels only; '' for other backends) and kernel profile ('' without one).",
            labels=["state", "kernelspec", "backend", "host", "profile"],
        )
        for shown in sorted(self._kernel_keys):
            for state in _STATES:
                kernels.add_metric([state, *shown], counts.get((state, *shown), 0))
        yield kernels
        if self.metrics.metrics_user_labels:
            self._users.update(users)
            per_user = GaugeMetricFamily(
                "kernelfleet_user_kernels",
                "Live kernels per owner (metrics_user_labels is on); warm-pool kernels are "
                "not counted.",
                labels=["user"],
            )
            for user in sorted(self._users):
                per_user.add_metric([user], users.get(user, 0))
            yield per_user

    def _pools(self) -> Iterable[Metric]:
        pool = self.metrics.kernel_registry.pool
        members: Mapping[str, list[KernelRecord]] = pool.members if pool is not None else {}
        targets = self.metrics.pool_targets
        warm = GaugeMetricFamily(
            "kernelfleet_pool_kernels",
            "Warm kernels ready to be handed over, per kernelspec.",
            labels=["kernelspec"],
        )
        target = GaugeMetricFamily(
            "kernelfleet_pool_target_kernels",
            "Warm kernels each pool is configured to keep, per kernelspec.",
            labels=["kernelspec"],
        )
        for name in sorted(set(members) | set(targets)):
            ready = sum(1 for r in members.get(name, ()) if r.lifecycle is Lifecycle.RUNNING)
            warm.add_metric([name], ready)
            target.add_metric([name], targets.get(name, 0))
        yield warm
        yield target

    def _websockets(self) -> Iterable[Metric]:
        t = self.metrics.traffic
        now = GaugeMetricFamily(
            "kernelfleet_websocket_connections", "Kernel websocket connections open now."
        )
        now.add_metric([], t.open)
        yield now
        opened = CounterMetricFamily(
            "kernelfleet_websocket_connections_opened", "Kernel websocket connections accepted."
        )
        opened.add_metric([], t.opened)
        yield opened
        messages = CounterMetricFamily(
            "kernelfleet_websocket_messages",
            "Kernel messages relayed by the websocket bridge, by direction (to_client: kernel "
            "output and replies; from_client: requests forwarded to kernels).",
            labels=["direction"],
        )
        messages.add_metric(["to_client"], t.to_clients)
        messages.add_metric(["from_client"], t.from_clients)
        yield messages
        sent = CounterMetricFamily(
            "kernelfleet_websocket_bytes",
            "Bytes of websocket frames relayed by the bridge, by direction.",
            labels=["direction"],
        )
        sent.add_metric(["to_client"], t.to_clients_bytes)
        sent.add_metric(["from_client"], t.from_clients_bytes)
        yield sent
        dropped = CounterMetricFamily(
            "kernelfleet_websocket_dropped_frames",
            "Client websocket frames dropped as invalid (never forwarded to a kernel).",
        )
        dropped.add_metric([], t.dropped)
        yield dropped

    def _hosts(self) -> Iterable[Metric]:
        fleet = self.metrics.fleet()
        states: dict[str, str] = {}
        counts: dict[str, int] = {}
        if fleet is not None:
            counts = fleet.counts()
            for status in fleet.host_status():
                host = str(status["host"])
                state = str(status["state"]) if status["state"] in _HOST_STATES else "unknown"
                # several logins to one host: a down one wins, then an up one
                if _HOST_STATES.index(state) < _HOST_STATES.index(states.get(host, "unknown")):
                    states[host] = state
                states.setdefault(host, state)
        health = GaugeMetricFamily(
            "kernelfleet_ssh_host_state",
            "SSH hosts this gateway uses, one series per state (up, down, unknown: not tried "
            "yet), 1 for the host's current one.",
            labels=["host", "state"],
        )
        kernels = GaugeMetricFamily(
            "kernelfleet_ssh_host_kernels",
            "Kernels placed on each SSH host by this gateway process.",
            labels=["host"],
        )
        for host in sorted(states):
            for state in _HOST_STATES:
                health.add_metric([host, state], 1 if states[host] == state else 0)
            kernels.add_metric([host], counts.get(host, 0))
        yield health
        yield kernels


class MetricsHandler(BaseHandler):
    """``GET <base_url>metrics``: see :class:`Metrics` for who may read it."""

    metrics: Metrics

    def initialize(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def prepare(self) -> None:
        if self.request.method == "OPTIONS" or self.metrics.metrics_auth == "none":
            return
        authorization = self.request.headers.get("Authorization", "")
        if self.metrics.allows_scraper(authorization):
            return
        try:
            await super().prepare()
        except Unauthorized:
            if authorization or self.get_query_argument("token", None) is not None:
                raise
            raise Unauthorized(
                "The metrics need credentials: send 'Authorization: Bearer <token>' with the "
                "metrics token (metrics_token) or an admin's token."
            ) from None
        if not self.identity.admin:
            raise Forbidden(
                "These credentials may not read the metrics (they are not an admin's); use the "
                "metrics token (metrics_token) or an admin's token, or set metrics_auth='none'.",
                reason="Metrics For Admins Only",
            )

    async def get(self) -> None:
        try:
            await self.metrics.refresh()
        except Exception as exc:  # the pool sizes stay as they were; the rest is fresh
            self.metrics.log.warning("metrics: could not read the pool sizes: %s", describe(exc))
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Cache-Control", "no-store")
        self.finish(self.metrics.exposition())


def routes(base: str, metrics: Metrics) -> list[tuple[str, type[Any], dict[str, Any]]]:
    return [(rf"{base}metrics", MetricsHandler, {"metrics": metrics})]
