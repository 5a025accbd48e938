"""Hundreds of kernels on one gateway: what each kernel costs, and whether the next start slows.

``scale_500`` starts kernels in waves on one gateway subprocess, half local and half on the SSH
testbed's 3 hosts (the SSH half is skipped without a testbed), all of them the small test
kernel of ``benchmarks/tinykernel.py`` (500 ipykernels do not fit in memory). At every step of
``KF_BENCH_SCALE_STEPS`` (default 100,250,500; ``--quick``: 50,100) it measures:

* gateway RSS (VmRSS) and its idle CPU over ``KF_BENCH_SCALE_IDLE_S`` seconds (10; quick 5),
  the liveness monitor and the culler running as configured in production (monitor every 2 s,
  culler on with a one-hour idle timeout, a round every 5 s scanning every kernel);
* ``GET /api/kernels`` latency, 50 requests one after another (p50, p99);
* the cold start of the next kernel (POST → websocket → first kernel_info_reply), local and
  SSH, 5 of each (``KF_BENCH_SCALE_STARTS``), against the same start on the idle gateway
  before any kernel ran: the ratio is the figure (target ≤ 1.2x).

Targets at the largest step: RSS ≤ 300 MB, idle CPU ≤ 2 % of a core, list p99 ≤ 100 ms,
next start ≤ 1.2x idle. ``scale_ipykernel`` adds one data point with ipykernel at
``KF_BENCH_SCALE_IPYKERNELS`` kernels (default 50; quick 20; `make bench-long` 200), local only.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

from benchmarks.common import (
    Metric,
    ScenarioResult,
    percentile,
    proc_cpu_seconds,
    proc_rss_mb,
    summary,
)
from benchmarks.gateway import GatewayKernel, GatewayProcess
from benchmarks.scenarios import Context, scenario
from benchmarks.scenarios.fleet import _bed, _env, _no_testbed
from benchmarks.scenarios.local import _attempts, _start_all
from benchmarks.tinykernel import kernelspec

RSS_TARGET_MB = 300.0
IDLE_CPU_TARGET = 2.0
LIST_P99_TARGET_S = 0.100
NEXT_START_TARGET = 1.2
WAVE = 25  # kernels started concurrently in one wave
CULLER = ["--Culler.cull_idle_timeout=3600", "--Culler.cull_interval=5"]


def _steps(ctx: Context) -> list[int]:
    raw = os.environ.get("KF_BENCH_SCALE_STEPS") or ("50,100" if ctx.quick else "100,250,500")
    return sorted({int(s) for s in raw.split(",") if s.strip()})


def _write_spec(ctx: Context, name: str, spec: dict[str, Any]) -> None:
    d = ctx.env.jupyter_path / "kernels" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "kernel.json").write_text(json.dumps(spec))


async def _scale_gateway(ctx: Context, name: str, remote: bool) -> GatewayProcess:
    _write_spec(ctx, "tiny", kernelspec(display_name="kf-test-kernel"))
    if not remote:
        return await ctx.gateway(name, extra_args=CULLER)
    bed: Any = _bed()
    ssh = kernelspec(display_name="kf-test-kernel (SSH)")
    ssh["metadata"] = {"kernel_provisioner": {"provisioner_name": "kernelfleet-ssh"}}
    _write_spec(ctx, "tiny-ssh", ssh)
    values = {
        "KF_SSH_USER": "root",
        "KF_SSH_KEY": str(bed.key),
        "KF_SSH_KNOWN_HOSTS": str(bed.known_hosts),
        "KF_REMOTE_HOSTS": ",".join(h.ip for h in bed.hosts),
    }
    with _env(values):
        return await ctx.gateway(name, extra_args=CULLER)


async def _list_latency(gw: GatewayProcess, n: int = 50) -> dict[str, float]:
    client = gw.client()
    times: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        _, body = await client.request("GET", "/api/kernels")
        times.append(time.perf_counter() - t0)
        assert isinstance(body, list)
    return {"p50": statistics.median(times), "p99": percentile(times, 99), "listed": len(body)}


async def _next_starts(
    ctx: Context, gw: GatewayProcess, names: list[str], n: int, failures: list[str]
) -> dict[str, list[float]]:
    """Cold start (POST → first kernel_info_reply) of one more kernel, *n* times per spec."""
    out: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(n):
        for name in names:

            async def go(name: str = name) -> dict[str, float]:
                k = ctx.gateway_kernel(gw, kernel_name=name)
                (t,) = await _start_all([k])
                await k.shutdown()
                return t

            t = await _attempts(go, failures)
            out[name].append(t["first_reply"])
            out.setdefault(f"{name}_post", []).append(t["post"])
    return out


async def _idle_cpu(pid: int, seconds: float) -> float:
    cpu0, t0 = proc_cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(seconds)
    return (proc_cpu_seconds(pid) - cpu0) / (time.perf_counter() - t0) * 100.0


async def _grow(
    ctx: Context,
    gw: GatewayProcess,
    names: list[str],
    target: int,
    kernels: list[GatewayKernel],
    failures: list[str],
) -> float:
    """Start kernels (no websockets: idle notebooks) until *target* run; returns seconds."""
    t0 = time.perf_counter()
    while len(kernels) < target:
        wave = min(WAVE, target - len(kernels))

        async def one(i: int) -> None:
            async def attempt() -> None:
                k = ctx.gateway_kernel(gw, connect=False, kernel_name=names[i % len(names)])
                await _start_all([k])
                kernels.append(k)

            await _attempts(attempt, failures)

        async with asyncio.TaskGroup() as tg:
            for i in range(wave):
                tg.create_task(one(len(kernels) + i))
    return time.perf_counter() - t0


async def _run_scale(
    ctx: Context, gw: GatewayProcess, names: list[str], steps: list[int], idle_s: float
) -> dict[str, Any]:
    failures: list[str] = []
    kernels: list[GatewayKernel] = []
    rows: list[dict[str, Any]] = []
    await asyncio.sleep(1.0)
    samples = int(os.environ.get("KF_BENCH_SCALE_STARTS") or 5)
    base = await _next_starts(ctx, gw, names, samples, failures)
    rows.append(
        {
            "kernels": 0,
            "rss_mb": round(proc_rss_mb(gw.pid), 1),
            "idle_cpu_percent": round(await _idle_cpu(gw.pid, idle_s), 3),
            **{f"list_{k}": v for k, v in (await _list_latency(gw, 20)).items()},
            **{f"start_{n}": statistics.median(v) for n, v in base.items()},
        }
    )
    try:
        for step in steps:
            grow_s = await _grow(ctx, gw, names, step, kernels, failures)
            await asyncio.sleep(3.0)  # start-up traffic settles
            row: dict[str, Any] = {"kernels": step, "grow_seconds": round(grow_s, 1)}
            row["rss_mb"] = round(proc_rss_mb(gw.pid), 1)
            row["idle_cpu_percent"] = round(await _idle_cpu(gw.pid, idle_s), 3)
            row.update({f"list_{k}": v for k, v in (await _list_latency(gw)).items()})
            nxt = await _next_starts(ctx, gw, names, samples, failures)
            for name, values in nxt.items():
                row[f"start_{name}"] = statistics.median(values)
                row[f"start_{name}_ratio"] = statistics.median(values) / statistics.median(
                    base[name]
                )
                row[f"start_{name}_samples"] = [round(v, 4) for v in values]
            row["rss_mb_per_kernel"] = round((row["rss_mb"] - rows[0]["rss_mb"]) / step, 3)
            rows.append(row)
            print(f"  scale: {json.dumps(row)}", file=sys.stderr, flush=True)
    finally:
        t0 = time.perf_counter()
        await asyncio.gather(
            *(asyncio.wait_for(k.shutdown(), 60) for k in kernels), return_exceptions=True
        )
        shutdown_s = time.perf_counter() - t0
        await ctx.release_kernels()
    return {"rows": rows, "failed_starts_retried": failures, "shutdown_seconds": shutdown_s}


def _metrics(rows: list[dict[str, Any]], names: list[str], label: str) -> list[Metric]:
    top = rows[-1]
    n = top["kernels"]
    out = [
        Metric(
            f"{label}: gateway RSS, {n} kernels",
            "MB",
            None,
            top["rss_mb"],
            RSS_TARGET_MB,
            "abs_max",
        ),
        Metric(
            f"{label}: idle gateway CPU, {n} kernels",
            "%",
            None,
            top["idle_cpu_percent"],
            IDLE_CPU_TARGET,
            "abs_max",
        ),
        Metric(
            f"{label}: GET /api/kernels p99, {n} kernels",
            "s",
            None,
            top["list_p99"],
            LIST_P99_TARGET_S,
            "abs_max",
        ),
    ]
    for name in names:
        out.append(
            Metric(
                f"{label}: start of kernel {n + 1} ({name})",
                "s",
                rows[0][f"start_{name}"],
                top[f"start_{name}"],
                NEXT_START_TARGET,
                "max",
                note="bare = the same start on the idle gateway",
            )
        )
    return out


@scenario("scale_500", "500 kernels on one gateway: per-kernel cost and the next start")
async def scale_500(ctx: Context) -> ScenarioResult:
    remote = _no_testbed() is None
    names = ["tiny", "tiny-ssh"] if remote else ["tiny"]
    gw = await _scale_gateway(ctx, "gateway-scale", remote)
    idle_s = float(os.environ.get("KF_BENCH_SCALE_IDLE_S") or ctx.n(10, 5))
    try:
        result = await _run_scale(ctx, gw, names, _steps(ctx), idle_s)
    finally:
        await ctx.stop_gateway("gateway-scale")
    rows = result["rows"]
    result["remote"] = remote
    result["kernel"] = "benchmarks/tinykernel.py (kf-test-kernel)"
    return ScenarioResult("scale_500", _metrics(rows, names, "test kernel"), result)


@scenario("scale_ipykernel", "ipykernel at the largest scale that fits: one data point")
async def scale_ipykernel(ctx: Context) -> ScenarioResult:
    count = int(os.environ.get("KF_BENCH_SCALE_IPYKERNELS") or ctx.n(50, 20))
    gw = await ctx.gateway("gateway-scale-ipy", extra_args=CULLER)
    idle_s = float(os.environ.get("KF_BENCH_SCALE_IDLE_S") or ctx.n(10, 5))
    try:
        result = await _run_scale(ctx, gw, ["python3"], [count], idle_s)
    finally:
        await ctx.stop_gateway("gateway-scale-ipy")
    result["kernel"] = "ipykernel"
    rows = result["rows"]
    return ScenarioResult("scale_ipykernel", _metrics(rows, ["python3"], "ipykernel"), result)


__all__ = ["scale_500", "scale_ipykernel", "summary"]
