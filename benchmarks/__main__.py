"""``python -m benchmarks``: run the scenarios, print the table, write the JSON.

Scenarios live in :mod:`benchmarks.scenarios` (one registry; every module of that package is
loaded, so remote scenarios are added as a new module there). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import hashlib
import os
import platform
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.common import BenchEnv, ScenarioResult, loadavg, render_table, write_json
from benchmarks.scenarios import Context, Scenario, load_all

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="kernelfleet against the bare limit (a local ipykernel via jupyter_client).",
    )
    p.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    p.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help="run only these scenarios (names or unique prefixes; see --list)",
    )
    p.add_argument("--json", metavar="PATH", type=Path, help="write the JSON here instead")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument(
        "--py-spy",
        action="store_true",
        help="record py-spy (raw collapsed stacks) of the gateway for each scenario, into "
        "benchmarks/results/pyspy-<scenario>-<gateway>.txt (perturbs the numbers a little)",
    )
    p.add_argument("--py-spy-rate", type=int, default=500, help="samples/s (default 500)")
    p.add_argument(
        "--strict", action="store_true", help="exit with status 1 when a target is missed"
    )
    p.add_argument(
        "--scenario-timeout",
        type=float,
        default=300.0,
        help="seconds before a scenario is abandoned as an error (default 300)",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary dir (logs)")
    return p.parse_args(argv)


def select(scenarios: dict[str, Scenario], only: str | None) -> list[Scenario]:
    if not only:
        return [s for s in scenarios.values() if s.default]
    chosen: list[Scenario] = []
    for want in (w.strip() for w in only.split(",") if w.strip()):
        if want in scenarios:
            match = [scenarios[want]]
        else:
            match = [s for n, s in scenarios.items() if n.startswith(want)]
        if len(match) != 1:
            names = ", ".join(scenarios)
            raise SystemExit(f"--only {want!r}: {'ambiguous' if match else 'unknown'} ({names})")
        if match[0] not in chosen:
            chosen.append(match[0])
    return chosen


def source_digest() -> str:
    """SHA-1 over kernelfleet/**/*.py, to tie results to the code measured (it changes often)."""
    root = Path(__file__).resolve().parent.parent / "kernelfleet"
    h = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("kernelfleet", "jupyter_client", "ipykernel", "tornado", "pyzmq"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "?"
    return out


async def run(args: argparse.Namespace) -> int:
    scenarios = load_all()
    if args.list:
        for s in scenarios.values():
            flag = "" if s.default else "  (only with --only)"
            print(f"{s.name:20} [{s.group}] {s.title}{flag}")
        return 0
    chosen = select(scenarios, args.only)
    started = datetime.now(UTC)
    load_before = loadavg()
    ncpu = os.cpu_count() or 1
    if load_before and load_before[0] > 0.5 * ncpu:
        print(
            f"note: load average {load_before} on {ncpu} CPUs — the machine is busy, "
            "expect noisy numbers",
            file=sys.stderr,
        )
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 <pid>: stacks
    task = asyncio.current_task()
    if task is not None:  # clean up (kernels, gateways) when stopped with SIGTERM/SIGINT
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    env = BenchEnv()
    env.activate()
    ctx = Context(
        env=env,
        quick=args.quick,
        py_spy_dir=RESULTS_DIR if args.py_spy else None,
        py_spy_rate=args.py_spy_rate,
    )
    results: list[ScenarioResult] = []
    skipped: dict[str, str] = {}
    leftovers: list[int] = []
    try:
        for s in chosen:
            reason = s.requires() if s.requires else None
            if reason:
                skipped[s.name] = reason
                print(f"-- {s.name}: skipped ({reason})", file=sys.stderr)
                continue
            print(f"-- {s.name}: {s.title} …", file=sys.stderr, flush=True)
            ctx.current = s.name
            for gw in ctx.gateways.values():
                ctx.profile(gw)
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(args.scenario_timeout):
                    res = await s.func(ctx)
            except Exception as exc:
                traceback.print_exc()
                if isinstance(exc, TimeoutError):
                    exc = TimeoutError(f"scenario exceeded {args.scenario_timeout:g} s")
                res = ScenarioResult(s.name, [], error=f"{type(exc).__name__}: {exc}")
                await ctx.release_kernels()
                for gw in ctx.gateways.values():
                    if gw.proc is not None and gw.proc.poll() is not None:
                        print(f"gateway {gw.name} died:\n{gw.log_tail()}", file=sys.stderr)
            finally:
                ctx.stop_profilers()
            res.seconds = time.perf_counter() - t0
            results.append(res)
            print(render_table([res]), file=sys.stderr, flush=True)
    finally:
        await ctx.close()
        leftovers = env.sweep()
        if leftovers:
            print(
                f"warning: killed {len(leftovers)} leftover process(es): {leftovers}",
                file=sys.stderr,
            )
        # keep the kernel and gateway logs when something failed (errors or retried starts)
        keep = args.keep_tmp or any(
            r.error or any(v for k, v in r.details.items() if k.startswith("failed_"))
            for r in results
        )
        env.close(keep=keep)
        if keep:
            print(f"kept {env.root}", file=sys.stderr)

    finished = datetime.now(UTC)
    payload: dict[str, Any] = {
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "seconds": round((finished - started).total_seconds(), 1),
        "argv": sys.argv[1:],
        "quick": args.quick,
        "machine": {
            "cpus": ncpu,
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "platform": platform.platform(),
        },
        "versions": versions(),
        "kernelfleet_source_sha1": source_digest(),
        "gateway_cmd": os.environ.get("KF_BENCH_GATEWAY_CMD", ""),
        "skipped": skipped,
        "leftover_processes_killed": leftovers,
        "results": [r.as_dict() for r in results],
    }
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    path = args.json or RESULTS_DIR / f"{stamp}{'-quick' if args.quick else ''}.json"
    write_json(payload, path, RESULTS_DIR / "latest.json")
    print()
    print(render_table(results))
    print(
        f"\n{len(results)} scenario(s) in {payload['seconds']} s; load average "
        f"{load_before} → {payload['machine']['loadavg_after']} on {ncpu} CPUs; JSON: {path}"
    )
    failed = [m for r in results for m in r.metrics if m.passed is False]
    errors = [r for r in results if r.error]
    if errors:
        return 2
    return 1 if (failed and args.strict) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except asyncio.CancelledError:
        print("interrupted; kernels and gateways were shut down", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
