"""``python -m benchmarks.loadgen``: drive N clients against a running gateway, print a summary.

Examples::

    # 200 clients on 50 new kernels of a kernelfleet (or jupyter_server) at :8888, 30 s
    python -m benchmarks.loadgen --url http://127.0.0.1:8888 --token SECRET \\
        --kernels 50 --clients 200 --seconds 30 --watch gateway=$(pgrep -f 'kernelfleet serve')

    # existing kernels, workers pinned to CPU 1, the gateway pinned to CPU 0 for the run
    python -m benchmarks.loadgen --url ... --kernel-id ID1 --kernel-id ID2 --cpus 1 --pin 1234=0

The exit status is 0 when nothing was lost, duplicated or crossed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks.loadgen.client import V1, ClientSettings
from benchmarks.loadgen.runner import LoadConfig, children, run_load
from kernelfleet.client import GatewayClient


def _cpus(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.loadgen", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8888/")
    p.add_argument("--token", default=os.environ.get("KF_TOKEN", ""), help="(default $KF_TOKEN)")
    p.add_argument("--kernels", type=int, default=0, help="start this many kernels (and stop them)")
    p.add_argument("--kernel-name", default="python3", help="kernelspec for --kernels")
    p.add_argument("--kernel-id", action="append", default=[], help="drive this kernel (repeat)")
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--seconds", type=float, default=30.0, help="measured window")
    p.add_argument("--workers", type=int, help="worker processes (default: one per CPU)")
    p.add_argument("--cpus", type=_cpus, help="pin the workers to these CPUs, e.g. 1 or 2-3")
    p.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="PID=CPUS",
        help="pin every thread of PID to CPUS for the run (repeat)",
    )
    p.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="NAME=PID[,PID]",
        help="report the CPU of these processes (repeat); NAME+=PID adds PID's children",
    )
    p.add_argument("--lines", type=int, default=2, help="output lines per request")
    p.add_argument("--protocol", choices=["legacy", "v1"], default="legacy")
    p.add_argument("--reconnect", action="store_true", help="reconnect dropped websockets")
    p.add_argument("--reconnect-deadline", type=float, default=30.0)
    p.add_argument("--outstanding-timeout", type=float, default=10.0)
    p.add_argument("--request-timeout", type=float, default=60.0)
    p.add_argument("--warmup", type=int, default=1, help="round trips per client before timing")
    p.add_argument("--json", type=Path, help="write the summary here")
    return p.parse_args(argv)


def _watch(specs: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for spec in specs:
        name, _, pids = spec.partition("=")
        with_children = name.endswith("+")
        name = name.rstrip("+")
        for pid in (int(x) for x in pids.split(",") if x):
            out.setdefault(name, []).append(pid)
            if with_children:
                out.setdefault(f"{name} children", []).extend(children(pid))
    return out


def render(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    lat = summary["latency_ms"]
    cpu = summary["cpu"]
    rows = [
        f"clients {summary['clients']} on {summary['kernels']} kernels, "
        f"{summary['workers']} workers, {summary['window_seconds']} s",
        f"round trips {summary['round_trips']} ({summary['round_trips_per_s']}/s), "
        f"messages {summary['messages_per_s']}/s",
        f"latency ms p50 {lat.get('p50')} p99 {lat.get('p99')} max {lat.get('max')}",
        f"lost {c['lost_messages']} (requests {c['lost_requests']}), duplicated "
        f"{c['duplicated']}, cross-talk {c['cross_talk']}, reported lost "
        f"{c['reported_lost_messages']}, errors {c['errors']}, timeouts {c['timeouts']}",
        f"client CPU {cpu['client_seconds']} s (busy per worker {cpu['client_busy_per_worker']})"
        f"; watched {cpu['watched_seconds']}; saturated: {summary.get('limited_by') or 'none'}",
    ]
    if c["drops"]:
        rec = summary["reconnect"]
        rows.append(
            f"drops {c['drops']}, reconnects {c['reconnects']}, failures "
            f"{c['reconnect_failures']}, drop→first message max {rec['max_gap_seconds']} s"
        )
    rows += [f"  problem: {p}" for p in summary["problems"][:10]]
    return "\n".join(rows)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    client = GatewayClient(args.url, token=args.token, timeout=120.0)
    started: list[str] = []
    try:
        for _ in range(args.kernels):
            started.append((await client.start_kernel(args.kernel_name))["id"])
        settings = ClientSettings(
            url=args.url,
            token=args.token,
            lines=args.lines,
            protocol=V1 if args.protocol == "v1" else "",
            reconnect=args.reconnect,
            reconnect_deadline=args.reconnect_deadline,
            outstanding_timeout=args.outstanding_timeout,
            request_timeout=args.request_timeout,
        )
        cfg = LoadConfig(
            settings,
            [*args.kernel_id, *started],
            clients=args.clients,
            seconds=args.seconds,
            workers=args.workers,
            cpus=args.cpus,
            warmup=args.warmup,
            watch=_watch(args.watch),
            pin={int(p): _cpus(c) for p, _, c in (s.partition("=") for s in args.pin)},
        )
        return await run_load(cfg)
    finally:
        for kid in started:
            with contextlib.suppress(Exception):
                await client.shutdown_kernel(kid)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.kernels and not args.kernel_id:
        raise SystemExit("give --kernels N or --kernel-id ID")
    summary = asyncio.run(_run(args))
    print(render(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
