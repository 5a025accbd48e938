"""Local-provisioner scenarios: the gateway against a bare ipykernel reached with jupyter_client.

Targets (issue 2): cold start <= 1.1x bare, execute round trip <= 1.3x direct ZMQ,
stdout streaming >= 0.6x direct ZMQ. Bare and gateway measurements alternate (A/B, then B/A) so that
drift on a shared machine hits both sides alike.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from benchmarks.bare import BareKernel
from benchmarks.common import (
    Metric,
    ScenarioResult,
    own_children_cpu_seconds,
    proc_cpu_seconds,
    proc_rss_mb,
    summary,
)
from benchmarks.gateway import GatewayKernel
from benchmarks.scenarios import Context, details_of, scenario

START_TARGET = 1.10
RTT_TARGET = 1.30
STREAM_TARGET = 0.60


START_LIMIT = 90.0  # seconds before a start (or a burst of starts) counts as failed
T = TypeVar("T")


async def _start_all(kernels: Sequence[BareKernel | GatewayKernel]) -> list[dict[str, float]]:
    """Start *kernels* concurrently; if one fails, cancel the others, shut all down, raise."""
    try:
        async with asyncio.timeout(START_LIMIT), asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(k.start()) for k in kernels]
    except BaseException:
        await asyncio.gather(
            *(asyncio.wait_for(k.shutdown(), 30) for k in kernels), return_exceptions=True
        )
        raise
    return [t.result() for t in tasks]


async def _attempts(fn: Callable[[], Awaitable[T]], failures: list[str], tries: int = 3) -> T:
    """Run *fn*, again after a failure (e.g. jupyter_client's port race); failures are kept."""
    for attempt in range(tries):
        try:
            return await fn()
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc!r}"[:300])
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def _phase_p50(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys() if rows else []
    return {k: round(statistics.median(r[k] for r in rows), 4) for k in keys}


@scenario("cold_start", "cold start: start request → first kernel_info_reply")
async def cold_start(ctx: Context) -> ScenarioResult:
    n = ctx.n(10, 4)
    gw = await ctx.gateway()
    bare_rows: list[dict[str, float]] = []
    gw_rows: list[dict[str, float]] = []

    failures: list[str] = []

    async def bare_once() -> dict[str, float]:
        k = ctx.bare_kernel()
        c0, k0 = time.process_time(), own_children_cpu_seconds()
        (t,) = await _start_all([k])
        t["client_cpu"] = time.process_time() - c0
        await k.shutdown()
        t["kernel_cpu"] = own_children_cpu_seconds() - k0
        return t

    async def gw_once() -> dict[str, float]:
        k = ctx.gateway_kernel(gw)
        c0, g0 = time.process_time(), proc_cpu_seconds(gw.pid)
        k0 = proc_cpu_seconds(gw.pid, children=True)
        (t,) = await _start_all([k])
        t["client_cpu"] = time.process_time() - c0
        t["gateway_cpu"] = proc_cpu_seconds(gw.pid) - g0
        await k.shutdown()
        t["kernel_cpu"] = proc_cpu_seconds(gw.pid, children=True) - k0
        return t

    async def one_bare(record: bool) -> None:
        t = await _attempts(bare_once, failures)
        if record:
            bare_rows.append(t)

    async def one_gw(record: bool) -> None:
        t = await _attempts(gw_once, failures)
        if record:
            gw_rows.append(t)

    # iteration 0 is a warm-up (page cache, imports, the gateway's first request).
    try:
        for i in range(n + 1):
            first, second = (one_bare, one_gw) if i % 2 == 0 else (one_gw, one_bare)
            await first(i > 0)
            await second(i > 0)
    finally:
        await ctx.release_kernels()

    b = summary([r["first_reply"] for r in bare_rows])
    g = summary([r["first_reply"] for r in gw_rows])
    # bare_rows[i] and gw_rows[i] ran back to back: their ratio is immune to slow drift.
    paired = [
        g_["first_reply"] / b_["first_reply"] for b_, g_ in zip(bare_rows, gw_rows, strict=True)
    ]
    return ScenarioResult(
        "cold_start",
        [
            Metric("cold start p50", "s", b["p50"], g["p50"], START_TARGET, "max"),
            Metric("cold start p95", "s", b["p95"], g["p95"], START_TARGET, "max"),
            Metric(
                "cold start, median of paired ratios",
                "x",
                None,
                statistics.median(paired),
                note="gateway_i / bare_i of back-to-back starts: robust to load drift",
            ),
        ],
        {
            "iterations": n,
            "bare": b,
            "gateway": g,
            "paired_ratio_p50": round(statistics.median(paired), 3),
            "failed_starts_retried": failures,
            "bare_phases_p50": _phase_p50(bare_rows),
            "gateway_phases_p50": _phase_p50(gw_rows),
            "phase_legend": {
                "launch": "bare: start_kernel() returned (process spawned)",
                "first_reply": "first kernel_info_reply received by the client",
                "ready": "bare: reply + iopub confirmed (wait_for_ready's condition)",
                "post": "gateway: POST /api/kernels answered 201 (kernel ready inside)",
                "ws_open": "gateway: websocket upgraded",
                "client_cpu": "CPU seconds of the benchmark process during the start",
                "gateway_cpu": "CPU seconds of the gateway process during the start",
                "kernel_cpu": "CPU seconds the kernel process used in its whole life",
            },
            "samples": details_of(
                {
                    "bare_first_reply": [r["first_reply"] for r in bare_rows],
                    "gateway_first_reply": [r["first_reply"] for r in gw_rows],
                }
            ),
        },
    )


@scenario("execute_rtt", "execute `1+1`: request → execute_reply and idle")
async def execute_rtt(ctx: Context) -> ScenarioResult:
    n = ctx.n(300, 60)
    warm = ctx.n(30, 10)
    gw = await ctx.gateway()
    bk = ctx.bare_kernel()
    gk = ctx.gateway_kernel(gw)
    await asyncio.gather(bk.start(), gk.start())
    bare_t: list[float] = []
    gw_t: list[float] = []
    cpu = {"bare_client": 0.0, "gw_client": 0.0, "gw_gateway": 0.0}

    async def timed(side: str) -> None:
        c0 = time.process_time()
        if side == "bare":
            bare_t.append((await bk.execute("1+1"))[0])
            cpu["bare_client"] += time.process_time() - c0
        else:
            g0 = proc_cpu_seconds(gw.pid)
            gw_t.append((await gk.execute("1+1"))[0])
            cpu["gw_client"] += time.process_time() - c0
            cpu["gw_gateway"] += proc_cpu_seconds(gw.pid) - g0

    try:
        for _ in range(warm):
            await bk.execute("1+1")
            await gk.execute("1+1")
        for i in range(n):
            for side in ("bare", "gateway") if i % 2 == 0 else ("gateway", "bare"):
                await timed(side)
    finally:
        await ctx.release_kernels()
    b = summary([x * 1000 for x in bare_t])
    g = summary([x * 1000 for x in gw_t])
    # bare_t[i] and gw_t[i] ran back to back: immune to slow drift (not to fast noise)
    paired = statistics.median(g_ / b_ for b_, g_ in zip(bare_t, gw_t, strict=True))
    return ScenarioResult(
        "execute_rtt",
        [
            Metric("execute 1+1 p50", "ms", b["p50"], g["p50"], RTT_TARGET, "max"),
            Metric("execute 1+1 p95", "ms", b["p95"], g["p95"], RTT_TARGET, "max"),
            Metric(
                "execute 1+1, median of paired ratios",
                "x",
                None,
                paired,
                note="gateway_i / bare_i of back-to-back round trips",
            ),
            Metric(
                "execute 1+1 CPU per round trip",
                "ms",
                cpu["bare_client"] * 1000 / n,
                (cpu["gw_client"] + cpu["gw_gateway"]) * 1000 / n,
                note="bare: the jupyter_client process; kernelfleet: gateway + websocket client",
            ),
        ],
        {
            "iterations": n,
            "warmup": warm,
            "bare_ms": b,
            "gateway_ms": g,
            "added_ms_p50": g["p50"] - b["p50"],
            "paired_ratio_p50": round(paired, 3),
            "cpu_ms_per_execute": {k: round(v * 1000 / n, 3) for k, v in cpu.items()},
        },
    )


def _print_code(mib: int, lines_per_write: int) -> str:
    """Code printing *mib* MiB of 1 KiB lines, *lines_per_write* lines per write() call."""
    return (
        "import sys\n"
        f"s = ('x' * 1023 + '\\n') * {lines_per_write}\n"
        f"for _ in range({mib * 1024 // lines_per_write}):\n"
        "    sys.stdout.write(s)\n"
    )


async def _stream(ctx: Context, mib: int, lines_per_write: int) -> dict[str, Any]:
    reps = ctx.n(3, 2)
    expected = mib * 1024 * 1024
    code = _print_code(mib, lines_per_write)
    gw = await ctx.gateway()
    bk = ctx.bare_kernel()
    gk = ctx.gateway_kernel(gw)
    await asyncio.gather(bk.start(), gk.start())
    rows: dict[str, list[dict[str, Any]]] = {"bare": [], "gateway": []}
    try:
        warm = _print_code(1, lines_per_write)
        await bk.execute(warm)
        await gk.execute(warm)
        for i in range(reps):
            order = [("bare", bk), ("gateway", gk)]
            if i % 2:
                order.reverse()
            for side, k in order:
                c0, g0 = time.process_time(), proc_cpu_seconds(gw.pid)
                secs, nbytes, nmsgs = await k.execute(code)
                c1, g1 = time.process_time(), proc_cpu_seconds(gw.pid)
                if nbytes != expected:
                    raise RuntimeError(f"{side}: received {nbytes} bytes of {expected}")
                row: dict[str, Any] = {
                    "seconds": round(secs, 4),
                    "mb_s": round(nbytes / secs / 1e6, 2),
                    "messages": nmsgs,
                    "client_cpu": round(c1 - c0, 4),
                }
                if side == "gateway":
                    row["gateway_cpu"] = round(g1 - g0, 4)
                rows[side].append(row)
    finally:
        await ctx.release_kernels()
    return {
        "bare": statistics.median(r["mb_s"] for r in rows["bare"]),
        "gateway": statistics.median(r["mb_s"] for r in rows["gateway"]),
        "bytes_per_run": expected,
        "lines_per_write": lines_per_write,
        "repetitions": reps,
        "runs": rows,
    }


async def _one_big_message(ctx: Context, mib: int) -> dict[str, Any]:
    """Print *mib* MiB from one cell: ipykernel flushes stdout every 0.2 s, so this arrives as
    one or two huge stream messages. Repeated; the gateway side scores 0 if any run loses its
    websocket (the check is whether the output reaches a fast client at all)."""
    runs = ctx.n(3, 1)
    code = _print_code(mib, 1)
    expected = mib * 1024 * 1024
    gw = await ctx.gateway()
    bk = ctx.bare_kernel()
    gk = ctx.gateway_kernel(gw)
    await asyncio.gather(bk.start(), gk.start())
    rates: dict[str, list[float]] = {"bare": [], "gateway": []}
    errors: list[str] = []
    messages: dict[str, list[int]] = {"bare": [], "gateway": []}
    try:
        for _ in range(runs):
            for side in ("bare", "gateway"):
                k = bk if side == "bare" else gk
                try:
                    secs, nbytes, nmsgs = await k.execute(code)
                except ConnectionError as exc:
                    errors.append(str(exc))
                    rates[side].append(0.0)
                    await gk.shutdown()
                    gk = ctx.gateway_kernel(gw)
                    await gk.start()
                    continue
                rates[side].append(nbytes / secs / 1e6 if nbytes == expected else 0.0)
                messages[side].append(nmsgs)
    finally:
        await ctx.release_kernels()
    return {
        "mib": mib,
        "runs": runs,
        "bare": min(rates["bare"]),
        "gateway": min(rates["gateway"]),
        "rates_mb_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "stream_messages": messages,
        "disconnects": errors,
    }


@scenario("stdout_stream", "stdout streaming: MB of stream text received per second")
async def stdout_stream(ctx: Context) -> ScenarioResult:
    # 48 MiB stays under the gateway's default max_pending_mb (64); see the 'one cell' row.
    mib = ctx.n(48, 16)
    big_mib = 96
    lines = await _stream(ctx, mib, 1)
    chunks = await _stream(ctx, mib, 1024)
    big = await _one_big_message(ctx, big_mib)
    return ScenarioResult(
        "stdout_stream",
        [
            Metric(
                f"stdout stream, {mib} MiB in 1 KiB writes",
                "MB/s",
                lines["bare"],
                lines["gateway"],
                STREAM_TARGET,
                "min",
            ),
            Metric(
                f"stdout stream, {mib} MiB in 1 MiB writes",
                "MB/s",
                chunks["bare"],
                chunks["gateway"],
                STREAM_TARGET,
                "min",
                note="bigger writes: less kernel-side overhead per byte",
            ),
            Metric(
                f"stdout {big_mib} MiB from one cell, worst of {big['runs']}",
                "MB/s",
                big["bare"],
                big["gateway"],
                STREAM_TARGET,
                "min",
                note=(
                    f"{len(big['disconnects'])}/{big['runs']} runs lost the websocket: "
                    f"{big['disconnects'][0]}"
                    if big["disconnects"]
                    else ""
                ),
            ),
        ],
        {
            "unit": "MB = 10^6 bytes of stream text, timed from execute_request to idle",
            "line_writes": lines,
            "chunk_writes": chunks,
            "one_cell": big,
        },
    )


@scenario("concurrent_starts", "10 concurrent starts until all ready")
async def concurrent_starts(ctx: Context) -> ScenarioResult:
    width = 10
    n = ctx.n(3, 1)
    gw = await ctx.gateway()
    bare_t: list[float] = []
    gw_t: list[float] = []

    cpu: dict[str, list[float]] = {"bare_client": [], "gw_client": [], "gw_gateway": []}

    failures: list[str] = []

    async def burst_bare_once() -> float:
        ks = [ctx.bare_kernel() for _ in range(width)]
        c0 = time.process_time()
        t0 = time.perf_counter()
        await _start_all(ks)
        elapsed = time.perf_counter() - t0
        cpu["bare_client"].append(time.process_time() - c0)
        await asyncio.gather(*(k.shutdown() for k in ks))
        return elapsed

    async def burst_gw_once() -> float:
        ks = [ctx.gateway_kernel(gw) for _ in range(width)]
        c0, g0 = time.process_time(), proc_cpu_seconds(gw.pid)
        t0 = time.perf_counter()
        await _start_all(ks)
        elapsed = time.perf_counter() - t0
        cpu["gw_client"].append(time.process_time() - c0)
        cpu["gw_gateway"].append(proc_cpu_seconds(gw.pid) - g0)
        await asyncio.gather(*(k.shutdown() for k in ks))
        return elapsed

    async def burst_bare() -> float:
        return await _attempts(burst_bare_once, failures)

    async def burst_gw() -> float:
        return await _attempts(burst_gw_once, failures)

    try:
        for i in range(n):
            if i % 2 == 0:
                bare_t.append(await burst_bare())
                gw_t.append(await burst_gw())
            else:
                gw_t.append(await burst_gw())
                bare_t.append(await burst_bare())
    finally:
        await ctx.release_kernels()
    b = statistics.median(bare_t)
    g = statistics.median(gw_t)
    return ScenarioResult(
        "concurrent_starts",
        [
            Metric(
                f"{width} concurrent starts p50",
                "s",
                b,
                g,
                START_TARGET,
                "max",
                note="start target applied (issue 2 sets none for this row)",
            )
        ],
        {
            "width": width,
            "bursts": n,
            "samples": details_of({"bare": bare_t, "gateway": gw_t}),
            "cpu_seconds_per_burst": details_of(cpu, 3),
            "failed_bursts_retried": failures,
        },
    )


@scenario("idle_rss", "gateway RSS and CPU with 50 idle kernels (gateway as a subprocess)")
async def idle_rss(ctx: Context) -> ScenarioResult:
    count = 50
    batch = 10
    idle_seconds = ctx.n(10, 5)
    gw = await ctx.gateway("gateway-rss")
    await asyncio.sleep(1.0)
    rss0 = proc_rss_mb(gw.pid)
    kernels: list[GatewayKernel] = []
    failures: list[str] = []

    async def start_one() -> None:
        async def attempt() -> None:
            k = ctx.gateway_kernel(gw, connect=False)
            await _start_all([k])
            kernels.append(k)

        await _attempts(attempt, failures)

    t0 = time.perf_counter()
    try:
        for start in range(0, count, batch):
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(batch, count - start)):
                    tg.create_task(start_one())
        started = time.perf_counter() - t0
        await asyncio.sleep(3.0)  # let start-up traffic settle
        rss50 = proc_rss_mb(gw.pid)
        cpu0 = proc_cpu_seconds(gw.pid)
        w0 = time.perf_counter()
        await asyncio.sleep(idle_seconds)
        cpu = (proc_cpu_seconds(gw.pid) - cpu0) / (time.perf_counter() - w0) * 100.0
        rss_after = proc_rss_mb(gw.pid)
        _, listed = await gw.client().request("GET", "/api/kernels")
        n_listed = len(listed) if isinstance(listed, list) else None
    finally:
        t1 = time.perf_counter()
        # A gateway's SIGTERM shuts all its kernels down (shutdown_kernels_on_exit).
        await ctx.stop_gateway("gateway-rss")
        stop_seconds = time.perf_counter() - t1
        for k in kernels:
            k.kernel_id = None  # already gone with the gateway
        await ctx.release_kernels()
    return ScenarioResult(
        "idle_rss",
        [
            Metric(f"gateway RSS, {count} idle kernels", "MB", None, rss50),
            Metric("gateway RSS, no kernels", "MB", None, rss0),
            Metric(f"gateway CPU, {idle_seconds} s idle, {count} kernels", "%", None, cpu),
        ],
        {
            "kernels": count,
            "listed": n_listed,
            "start_seconds": round(started, 2),
            "rss_mb_no_kernels": round(rss0, 1),
            "rss_mb_50_kernels": round(rss50, 1),
            "rss_mb_after_idle": round(rss_after, 1),
            "rss_mb_per_kernel": round((rss50 - rss0) / count, 3),
            "cpu_percent_idle": round(cpu, 3),
            "idle_seconds": idle_seconds,
            "sigterm_shutdown_seconds": round(stop_seconds, 2),
            "failed_starts_retried": failures,
            "unit": "MB = MiB (VmRSS / 1024)",
        },
    )
