"""Many clients at once (issue 15): 200 websocket clients on 50 shared kernels, verified.

``clients_200`` drives the same load (:mod:`benchmarks.loadgen`: multi-process, every message
verified) against a kernelfleet gateway and then against jupyter_server 2 serving the same
ipykernel kernels (the private ``python3`` kernelspec), back to back: the ``bare`` column of its
rows is jupyter_server. ``soak_10`` repeats the run 10 times against one gateway process and
compares its RSS after run 10 with its RSS after run 1.

Sizes and durations come from the environment (``make bench-long`` sets the full figures):

=============================  ===============================================  =============
``KF_BENCH_CLIENTS_SECONDS``   measured window of each clients_200 side         20 (quick 10)
``KF_BENCH_SOAK_SECONDS``      measured window of each soak run                 8 (quick 5)
``KF_BENCH_SOAK_RUNS``         soak runs                                        10
``KF_BENCH_CLIENTS``           clients                                          200
``KF_BENCH_CLIENTS_KERNELS``   kernels                                          50
``KF_BENCH_CLIENTS_WORKERS``   load generator processes                         one per CPU
``KF_BENCH_CLIENTS_PIN``       ``1``: workers on the last CPU, the server on    off
                               the others (its kernels are not pinned)
``KF_BENCH_JS_LIMIT_RATE``     ``1``: keep jupyter_server's iopub rate limit    off
=============================  ===============================================  =============
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import Metric, ScenarioResult, proc_rss_mb
from benchmarks.gateway import GatewayKernel, GatewayProcess
from benchmarks.loadgen import ClientSettings, LoadConfig, children, run_load
from benchmarks.scenarios import Context, scenario
from benchmarks.scenarios.local import _attempts, _start_all

THROUGHPUT_TARGET = 2.0  # kernelfleet round trips/s ÷ jupyter_server's
SOAK_RSS_TARGET = 1.05  # RSS after the last run ÷ RSS after the first
START_BATCH = 10  # kernels started at once

_URL = re.compile(rb"(http://127\.0\.0\.1:\d+/)")


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


class JupyterServerProcess(GatewayProcess):
    """``python -m jupyter_server`` on a free port with a token, serving our kernelspecs (the
    private ``JUPYTER_PATH`` is inherited) and no user configuration. Its iopub rate limit is
    off unless ``KF_BENCH_JS_LIMIT_RATE=1``: a gateway should not drop output, and with it on
    the verifier counts what it drops as lost."""

    async def start(self, wait: float = 60.0) -> None:
        config_dir = self.env.root / f"{self.name}-config"
        root_dir = self.env.root / f"{self.name}-root"
        config_dir.mkdir(exist_ok=True)
        root_dir.mkdir(exist_ok=True)
        limit = os.environ.get("KF_BENCH_JS_LIMIT_RATE", "") == "1"
        cmd = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={root_dir}",
            f"--ZMQChannelsWebsocketConnection.limit_rate={limit}",
            *(["--allow-root"] if os.geteuid() == 0 else []),
            *self.extra_args,
        ]
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config_dir))
        log = open(self.log_path, "wb")  # noqa: ASYNC230, SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        finally:
            log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter_server exited at start:\n{self.log_tail()}")
            match = _URL.search(self.log_path.read_bytes())
            if match:
                self.url = match.group(1).decode()
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"jupyter_server did not start within {wait} s:\n{self.log_tail()}")


async def _jupyter_server(ctx: Context, name: str) -> GatewayProcess:
    """A jupyter_server subprocess registered with *ctx* (stopped with the gateways)."""
    await ctx.stop_gateway(name)
    server = JupyterServerProcess(ctx.env, name)
    await server.start()
    ctx.gateways[name] = server
    ctx.profile(server)
    return server


async def _start_kernels(
    ctx: Context, server: GatewayProcess, count: int, failures: list[str]
) -> list[GatewayKernel]:
    kernels: list[GatewayKernel] = []

    async def one() -> None:
        async def attempt() -> None:
            k = ctx.gateway_kernel(server, connect=False)
            await _start_all([k])
            kernels.append(k)

        await _attempts(attempt, failures)

    for start in range(0, count, START_BATCH):
        async with asyncio.TaskGroup() as tg:
            for _ in range(min(START_BATCH, count - start)):
                tg.create_task(one())
    return kernels


def _pinning() -> tuple[list[int] | None, list[int] | None]:
    """(worker CPUs, server CPUs) from KF_BENCH_CLIENTS_PIN, or (None, None)."""
    if os.environ.get("KF_BENCH_CLIENTS_PIN", "") != "1":
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[-1:], cpus[:-1]


def _load_config(
    server: GatewayProcess, kernels: list[GatewayKernel], seconds: float
) -> LoadConfig:
    workers_cpus, server_cpus = _pinning()
    workers = _env_number("KF_BENCH_CLIENTS_WORKERS", 0)
    return LoadConfig(
        ClientSettings(server.url, server.token),
        [k.kernel_id for k in kernels if k.kernel_id],
        clients=int(_env_number("KF_BENCH_CLIENTS", 200)),
        seconds=seconds,
        workers=int(workers) or None,
        cpus=workers_cpus,
        watch={"server": [server.pid], "kernels": children(server.pid)},
        pin={server.pid: server_cpus} if server_cpus else {},
    )


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    """A run's summary without its configuration echo (kept once per scenario)."""
    return {k: v for k, v in summary.items() if k != "config"}


async def _side(ctx: Context, server: GatewayProcess, seconds: float) -> dict[str, Any]:
    """Start the kernels on *server*, run the load, shut the kernels down; the summary."""
    failures: list[str] = []
    n_kernels = int(_env_number("KF_BENCH_CLIENTS_KERNELS", 50))
    t0 = time.perf_counter()
    try:
        kernels = await _start_kernels(ctx, server, n_kernels, failures)
        started = time.perf_counter() - t0
        summary = await run_load(_load_config(server, kernels, seconds))
    finally:
        await ctx.release_kernels()
    summary["kernel_start_seconds"] = round(started, 2)
    summary["failed_starts_retried"] = failures
    summary["server_rss_mb"] = round(proc_rss_mb(server.pid), 1)
    return summary


def _connect_problems(summary: dict[str, Any]) -> list[str]:
    return [p for p in summary["problems"] if "connect failed" in p or "stopped:" in p]


def _integrity_rows(js: dict[str, Any] | None, kf: dict[str, Any], label: str) -> list[Metric]:
    def count(s: dict[str, Any] | None, *keys: str) -> float | None:
        return None if s is None else float(sum(s["counts"][k] for k in keys))

    note = "target 0 for kernelfleet; the bare column is jupyter_server's count"
    return [
        Metric(
            f"{label}: lost messages",
            "msgs",
            count(js, "lost_messages"),
            count(kf, "lost_messages"),
            0,
            "abs_max",
            note,
        ),
        Metric(
            f"{label}: duplicated",
            "msgs",
            count(js, "duplicated"),
            count(kf, "duplicated"),
            0,
            "abs_max",
        ),
        Metric(
            f"{label}: cross-talk",
            "msgs",
            count(js, "cross_talk"),
            count(kf, "cross_talk"),
            0,
            "abs_max",
        ),
        Metric(
            f"{label}: errors, failed connects, timeouts",
            "n",
            count(js, "errors", "connect_failures", "timeouts"),
            count(kf, "errors", "connect_failures", "timeouts"),
            0,
            "abs_max",
        ),
    ]


@scenario(
    "clients_200",
    "200 clients on 50 shared kernels, verified: kernelfleet vs jupyter_server 2",
)
async def clients_200(ctx: Context) -> ScenarioResult:
    seconds = _env_number("KF_BENCH_CLIENTS_SECONDS", ctx.n(20, 10))
    gw = await ctx.gateway("gateway-clients", fresh=True)
    try:
        kf = await _side(ctx, gw, seconds)
    finally:
        await ctx.stop_gateway("gateway-clients")
    js_server = await _jupyter_server(ctx, "jupyter-server-clients")
    try:
        js = await _side(ctx, js_server, seconds)
    finally:
        await ctx.stop_gateway("jupyter-server-clients")
    n = kf["clients"]
    label = f"{n} clients"
    kf_cpu, js_cpu = kf["cpu"], js["cpu"]
    rows = [
        *_integrity_rows(js, kf, label),
        Metric(
            f"{label}: round trips/s",
            "rt/s",
            js["round_trips_per_s"],
            kf["round_trips_per_s"],
            THROUGHPUT_TARGET,
            "min",
            "bare = jupyter_server 2 with the same kernels and client",
        ),
        Metric(
            f"{label}: messages received/s", "msg/s", js["messages_per_s"], kf["messages_per_s"]
        ),
        Metric(
            f"{label}: round trip p50",
            "ms",
            js["latency_ms"].get("p50"),
            kf["latency_ms"].get("p50"),
        ),
        Metric(
            f"{label}: round trip p99",
            "ms",
            js["latency_ms"].get("p99"),
            kf["latency_ms"].get("p99"),
        ),
        Metric(
            f"{label}: server CPU per round trip",
            "ms",
            js_cpu["watched_ms_per_round_trip"]["server"],
            kf_cpu["watched_ms_per_round_trip"]["server"],
            note="the gateway (jupyter_server) process alone; kernels excluded",
        ),
        Metric(
            f"{label}: kernels CPU per round trip",
            "ms",
            js_cpu["watched_ms_per_round_trip"]["kernels"],
            kf_cpu["watched_ms_per_round_trip"]["kernels"],
        ),
        Metric(
            f"{label}: client CPU per round trip",
            "ms",
            js_cpu["client_ms_per_round_trip"],
            kf_cpu["client_ms_per_round_trip"],
            note="all load generator workers; busy per worker in details",
        ),
        Metric(
            f"{label}: machine busy (CPUs)",
            "CPUs",
            js["machine"]["busy_cpus"],
            kf["machine"]["busy_cpus"],
            note=f"of {kf['machine']['cpus']}; everything on the machine, others too",
        ),
    ]
    return ScenarioResult(
        "clients_200",
        rows,
        {
            "seconds_per_side": seconds,
            "order": ["kernelfleet", "jupyter_server"],
            "client_saturated": {
                "kernelfleet": kf["client_saturated"],
                "jupyter_server": js["client_saturated"],
            },
            "config": kf["config"],
            "kernelfleet": _brief(kf),
            "jupyter_server": _brief(js),
            "jupyter_server_limit_rate": os.environ.get("KF_BENCH_JS_LIMIT_RATE", "") == "1",
            # a "failed_" entry keeps the run's temp dir (server logs) for a look
            "failed_connects": _connect_problems(kf) + _connect_problems(js),
        },
    )


SOAK_BUFFER_SECONDS = 3.0


@scenario("soak_10", "the 200-client run 10 times in one gateway: RSS after run 10 vs run 1")
async def soak_10(ctx: Context) -> ScenarioResult:
    seconds = _env_number("KF_BENCH_SOAK_SECONDS", ctx.n(8, 5))
    runs = int(_env_number("KF_BENCH_SOAK_RUNS", 10))
    n_kernels = int(_env_number("KF_BENCH_CLIENTS_KERNELS", 50))
    # Output for sessions whose clients went away is kept iopub_buffer_seconds (600 by
    # default) by design, for them to come back to: here 3 s, and each sample is taken after
    # it expired, so that RSS shows what the gateway keeps that nothing needs.
    gw = await ctx.gateway(
        "gateway-soak",
        extra_args=[f"--KernelRegistry.iopub_buffer_seconds={SOAK_BUFFER_SECONDS}"],
        fresh=True,
    )
    failures: list[str] = []
    summaries: list[dict[str, Any]] = []
    rss: list[float] = []
    try:
        kernels = await _start_kernels(ctx, gw, n_kernels, failures)
        await asyncio.sleep(1.0)
        rss_start = proc_rss_mb(gw.pid)
        for _ in range(runs):
            summaries.append(await run_load(_load_config(gw, kernels, seconds)))
            # the clients are gone: their sessions' output expires, and the liveness
            # monitor's next round (every 2 s) forgets it
            await asyncio.sleep(SOAK_BUFFER_SECONDS + 4.0)
            rss.append(proc_rss_mb(gw.pid))
    finally:
        await ctx.release_kernels()
        await ctx.stop_gateway("gateway-soak")
    total = {
        k: sum(s["counts"][k] for s in summaries)
        for k in ("lost_messages", "duplicated", "cross_talk", "errors", "connect_failures")
    }
    total["timeouts"] = sum(s["counts"]["timeouts"] for s in summaries)
    last = summaries[-1]
    merged = {"counts": total}
    return ScenarioResult(
        "soak_10",
        [
            Metric(
                f"gateway RSS after run {runs} (bare: after run 1)",
                "MB",
                rss[0],
                rss[-1],
                SOAK_RSS_TARGET,
                "max",
                f"{rss_start:.1f} MB before run 1",
            ),
            *_integrity_rows(None, merged, f"soak, {runs} runs"),
            Metric(
                f"soak run {runs}: round trips/s (bare: run 1)",
                "rt/s",
                summaries[0]["round_trips_per_s"],
                last["round_trips_per_s"],
            ),
            Metric(
                f"soak run {runs}: gateway CPU per round trip (bare: run 1)",
                "ms",
                summaries[0]["cpu"]["watched_ms_per_round_trip"]["server"],
                last["cpu"]["watched_ms_per_round_trip"]["server"],
            ),
        ],
        {
            "runs": runs,
            "seconds_per_run": seconds,
            "rss_mb_before": round(rss_start, 1),
            "rss_mb_after_each_run": [round(x, 1) for x in rss],
            "round_trips_per_s": [s["round_trips_per_s"] for s in summaries],
            "latency_p99_ms": [s["latency_ms"].get("p99") for s in summaries],
            "gateway_ms_per_round_trip": [
                s["cpu"]["watched_ms_per_round_trip"]["server"] for s in summaries
            ],
            "client_saturated": [s["client_saturated"] for s in summaries],
            "totals": total,
            "failed_starts_retried": failures,
            "failed_connects": [p for s in summaries for p in _connect_problems(s)],
            "config": last["config"],
            "runs_detail": [_brief(s) for s in summaries],
        },
    )
