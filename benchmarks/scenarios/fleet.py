"""Remote kernels on SSH hosts, warm pools and reattach, each against the bare local limit.

The SSH scenarios bring up the project's own netns testbed (tests/testbed.py: 3 sshd hosts in
network namespaces; root only) for the run and take it down at the end. Targets:
- remote cold start p50 ≤ 1.15x a bare local ipykernel start (design.md, issue 3);
- 10 concurrent remote starts across 3 hosts ≤ 1.1x 10 concurrent bare local starts;
- gateway RSS and CPU with 100 idle remote kernels (no per-kernel polling cost);
- a start served from a warm pool: POST → first kernel_info_reply ≤ 50 ms (issue 5);
- time for a restarted gateway to reattach 100 kernels (issue 5; no bare equivalent).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Iterator

from benchmarks.common import Metric, ScenarioResult, proc_cpu_seconds, proc_rss_mb, summary
from benchmarks.gateway import GatewayKernel
from benchmarks.scenarios import Context, details_of, scenario
from benchmarks.scenarios.local import _attempts, _start_all

REMOTE_START_TARGET = 1.15
REMOTE_BURST_TARGET = 1.10
POOL_START_TARGET_S = 0.050

_TESTBED: dict[str, object] = {}  # the run's testbed, brought up by the first SSH scenario


def _no_testbed() -> str | None:
    try:
        from tests.testbed import missing_requirements
    except ImportError:
        return "tests/testbed.py not importable"
    return missing_requirements()


def _bed() -> object:
    """The run's testbed (3 hosts), brought up on first use."""
    if "bed" not in _TESTBED:
        from tests.testbed import Testbed

        bed = Testbed(3)
        bed.up(wait=30)
        _TESTBED["bed"] = bed
        atexit.register(teardown)
    return _TESTBED["bed"]


def teardown() -> None:
    bed = _TESTBED.pop("bed", None)
    if bed is not None:
        bed.down()  # type: ignore[attr-defined]


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def _ssh_gateway(ctx: Context, name: str = "gateway-ssh"):  # type: ignore[no-untyped-def]
    bed = _bed()
    spec_dir = ctx.env.jupyter_path / "kernels" / "remote"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (remote)",
        "language": "python",
        "metadata": {"kernel_provisioner": {"provisioner_name": "kernelfleet-ssh"}},
    }
    spec_dir.joinpath("kernel.json").write_text(json.dumps(spec))
    values = {
        "KF_SSH_USER": "root",
        "KF_SSH_KEY": str(bed.key),  # type: ignore[attr-defined]
        "KF_SSH_KNOWN_HOSTS": str(bed.known_hosts),  # type: ignore[attr-defined]
        "KF_REMOTE_HOSTS": ",".join(h.ip for h in bed.hosts),  # type: ignore[attr-defined]
    }
    with _env(values):
        gw = await ctx.gateway(name)
    # The gateway opens its host connections at start; one start makes sure they are up.
    k = ctx.gateway_kernel(gw, kernel_name="remote")
    await _start_all([k])
    await k.shutdown()
    return gw


@scenario(
    "ssh_cold_start",
    "remote cold start on an SSH host vs a bare local start",
    group="ssh",
    requires=_no_testbed,
)
async def ssh_cold_start(ctx: Context) -> ScenarioResult:
    n = ctx.n(10, 4)
    gw = await _ssh_gateway(ctx)
    bare: list[float] = []
    remote: list[float] = []
    failures: list[str] = []

    async def one_bare() -> None:
        async def go() -> float:
            k = ctx.bare_kernel()
            (t,) = await _start_all([k])
            await k.shutdown()
            return t["first_reply"]

        bare.append(await _attempts(go, failures))

    async def one_remote() -> None:
        async def go() -> float:
            k = ctx.gateway_kernel(gw, kernel_name="remote")
            (t,) = await _start_all([k])
            await k.shutdown()
            return t["first_reply"]

        remote.append(await _attempts(go, failures))

    try:
        for i in range(n):
            first, second = (one_bare, one_remote) if i % 2 == 0 else (one_remote, one_bare)
            await first()
            await second()
    finally:
        await ctx.release_kernels()
    b, r = summary(bare), summary(remote)
    paired = [y / x for x, y in zip(bare, remote, strict=True)]
    return ScenarioResult(
        "ssh_cold_start",
        [
            Metric("remote cold start p50", "s", b["p50"], r["p50"], REMOTE_START_TARGET, "max"),
            Metric("remote cold start p95", "s", b["p95"], r["p95"], REMOTE_START_TARGET, "max"),
            Metric(
                "remote cold start, median of paired ratios",
                "x",
                None,
                statistics.median(paired),
                note="remote_i / bare_i of back-to-back starts",
            ),
        ],
        {
            "bare": b,
            "remote": r,
            "samples": details_of({"bare": bare, "remote": remote}),
            "failed_starts_retried": failures,
        },
    )


@scenario(
    "ssh_concurrent",
    "10 concurrent remote starts across 3 hosts vs 10 concurrent bare local starts",
    group="ssh",
    requires=_no_testbed,
)
async def ssh_concurrent(ctx: Context) -> ScenarioResult:
    width = 10
    n = ctx.n(3, 1)
    gw = await _ssh_gateway(ctx)
    bare_t: list[float] = []
    remote_t: list[float] = []
    failures: list[str] = []

    async def burst(remote: bool) -> float:
        async def go() -> float:
            ks = [
                ctx.gateway_kernel(gw, kernel_name="remote") if remote else ctx.bare_kernel()
                for _ in range(width)
            ]
            t0 = time.perf_counter()
            await _start_all(ks)
            elapsed = time.perf_counter() - t0
            await asyncio.gather(*(k.shutdown() for k in ks))
            return elapsed

        return await _attempts(go, failures)

    try:
        for i in range(n):
            order = (False, True) if i % 2 == 0 else (True, False)
            for remote in order:
                (remote_t if remote else bare_t).append(await burst(remote))
    finally:
        await ctx.release_kernels()
    return ScenarioResult(
        "ssh_concurrent",
        [
            Metric(
                f"{width} concurrent remote starts (3 hosts) p50",
                "s",
                statistics.median(bare_t),
                statistics.median(remote_t),
                REMOTE_BURST_TARGET,
                "max",
            )
        ],
        {
            "samples": details_of({"bare": bare_t, "remote": remote_t}),
            "failed_bursts_retried": failures,
        },
    )


@scenario(
    "ssh_idle_100",
    "gateway RSS and CPU with 100 idle remote kernels",
    group="ssh",
    requires=_no_testbed,
)
async def ssh_idle_100(ctx: Context) -> ScenarioResult:
    count = ctx.n(100, 30)
    idle_seconds = ctx.n(10, 5)
    gw = await _ssh_gateway(ctx, "gateway-ssh-idle")
    await asyncio.sleep(1.0)
    rss0 = proc_rss_mb(gw.pid)
    kernels: list[GatewayKernel] = []
    failures: list[str] = []

    async def start_one() -> None:
        async def attempt() -> None:
            k = ctx.gateway_kernel(gw, connect=False, kernel_name="remote")
            await _start_all([k])
            kernels.append(k)

        await _attempts(attempt, failures)

    try:
        for start in range(0, count, 10):
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(10, count - start)):
                    tg.create_task(start_one())
        await asyncio.sleep(3.0)
        rss = proc_rss_mb(gw.pid)
        cpu0 = proc_cpu_seconds(gw.pid)
        w0 = time.perf_counter()
        await asyncio.sleep(idle_seconds)
        cpu = (proc_cpu_seconds(gw.pid) - cpu0) / (time.perf_counter() - w0) * 100.0
    finally:
        await asyncio.gather(*(k.shutdown() for k in kernels), return_exceptions=True)
        await ctx.stop_gateway("gateway-ssh-idle")
        await ctx.release_kernels()
    return ScenarioResult(
        "ssh_idle_100",
        [
            Metric(f"gateway RSS, {count} idle remote kernels", "MB", None, rss),
            Metric(f"gateway CPU, {idle_seconds} s idle, {count} remote kernels", "%", None, cpu),
        ],
        {
            "rss_mb_no_kernels": round(rss0, 1),
            "rss_mb_per_kernel": round((rss - rss0) / count, 3),
            "failed_starts_retried": failures,
        },
    )


@scenario("pool_start", "start served from a warm pool: POST → first kernel_info_reply")
async def pool_start(ctx: Context) -> ScenarioResult:
    n = ctx.n(10, 4)
    gw = await ctx.gateway("gateway-pool", extra_args=['--KernelPool.pool_sizes={"python3": 2}'])
    client = gw.client()

    async def pool_ready() -> None:
        async with asyncio.timeout(120):
            while True:
                _, listed = await client.request("GET", "/api/kernels")
                idle = [k for k in listed or [] if k.get("execution_state") == "idle"]
                if len(idle) >= 2 + len(kernels):
                    return
                await asyncio.sleep(0.1)

    bare: list[float] = []
    pooled: list[float] = []
    kernels: list[GatewayKernel] = []
    try:
        for _ in range(n):
            await pool_ready()
            k = ctx.gateway_kernel(gw)
            (t,) = await _start_all([k])
            pooled.append(t["first_reply"])
            kernels.append(k)
            b = ctx.bare_kernel()
            (tb,) = await _start_all([b])
            bare.append(tb["first_reply"])
            await b.shutdown()
    finally:
        await asyncio.gather(*(k.shutdown() for k in kernels), return_exceptions=True)
        await ctx.stop_gateway("gateway-pool")
        await ctx.release_kernels()
    b, p = summary(bare), summary(pooled)
    return ScenarioResult(
        "pool_start",
        [
            Metric(
                "warm-pool start p50",
                "s",
                b["p50"],
                p["p50"],
                POOL_START_TARGET_S,
                "abs_max",
                note="target is absolute: 50 ms",
            ),
            Metric("warm-pool start p95", "s", b["p95"], p["p95"]),
        ],
        {"bare": b, "pooled": p, "samples": details_of({"bare": bare, "pooled": pooled})},
    )


@scenario("reattach_100", "a restarted gateway reattaches 100 running kernels")
async def reattach_100(ctx: Context) -> ScenarioResult:
    count = ctx.n(100, 20)
    # Baseline: the same gateway's restart with nothing to reattach (caches warm, as below).
    await ctx.gateway("gateway-reattach")
    await ctx.stop_gateway("gateway-reattach")
    t0 = time.perf_counter()
    gw = await ctx.gateway("gateway-reattach")
    empty_start_s = time.perf_counter() - t0
    client = gw.client()
    ids: list[str] = []
    failures: list[str] = []

    async def start_one() -> None:
        async def attempt() -> None:
            model = await client.start_kernel("python3")
            ids.append(model["id"])

        await _attempts(attempt, failures)

    reattach_s = reattach_only_s = float("nan")
    try:
        for start in range(0, count, 10):
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(10, count - start)):
                    tg.create_task(start_one())
        old = ctx.gateways.pop("gateway-reattach")
        assert old.proc is not None
        old.proc.kill()  # SIGKILL: the kernels stay, the store keeps their records
        old.proc.wait()
        t0 = time.perf_counter()
        new = await ctx.gateway("gateway-reattach")  # same name, same data dir: same store
        reattach_s = time.perf_counter() - t0
        found = re.search(r"(\d+) reattached.* in ([0-9.]+) s", new.log_path.read_text())
        reattach_only_s = float(found.group(2)) if found else float("nan")
        client = new.client()
        _, listed = await client.request("GET", "/api/kernels")
        back = {k["id"] for k in listed or []}
        missing = len(set(ids) - back)
    finally:
        await ctx.stop_gateway("gateway-reattach")
        await ctx.release_kernels()
    return ScenarioResult(
        "reattach_100",
        [
            Metric(
                f"gateway start, empty store → with {count} kernels to reattach",
                "s",
                empty_start_s,
                reattach_s,
                note=f"{missing} not reattached" if missing else "bare column: empty store",
            ),
            Metric(
                f"reattach of {count} kernels (the gateway's own timing)",
                "s",
                None,
                reattach_only_s,
            ),
        ],
        {"kernels": count, "missing": missing, "failed_starts_retried": failures},
    )
