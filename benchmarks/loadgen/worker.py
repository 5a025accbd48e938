"""One worker process of the load generator: an asyncio loop running its share of the clients.

:func:`drive` is the async API (usable in-process, e.g. from a test); ``python -m
benchmarks.loadgen.worker`` is what :class:`~benchmarks.loadgen.runner.LoadRunner` starts:

1. stdin, first line: the :class:`WorkerConfig` as JSON;
2. it pins itself (``cpus``), connects its clients (websocket + kernel_info), runs ``warmup``
   round trips per client, and writes ``{"event": "ready", ...}`` as one stdout line;
3. stdin: ``go <seconds>`` starts the measured window (a line ``stop`` or EOF aborts);
4. stdout: ``{"event": "result", ...}`` (:func:`drive`'s result), then it exits.

Nothing else is written to stdout; tornado's and Python's warnings go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.loadgen.client import ClientSettings, LoadClient
from benchmarks.loadgen.verify import Counts


@dataclass
class WorkerConfig:
    settings: ClientSettings
    clients: list[tuple[int, str]]  # (client index, kernel id)
    cpus: list[int] | None = None  # pin this process to these CPUs
    warmup: int = 1  # round trips per client before "ready" (verified, not timed)
    connect_concurrency: int = 25  # websockets being opened at once

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        data = json.loads(text)
        data["settings"] = ClientSettings(**data["settings"])
        data["clients"] = [(int(i), str(k)) for i, k in data["clients"]]
        return cls(**data)


@dataclass
class LoopLag:
    """How late the worker's event loop wakes up: a saturated client shows it first."""

    samples: list[float] = field(default_factory=list)
    period: float = 0.05

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.period)
            self.samples.append(loop.time() - t - self.period)

    def summary_ms(self) -> dict[str, float]:
        if not self.samples:
            return {}
        data = sorted(self.samples)
        return {
            "p50": round(data[len(data) // 2] * 1000, 2),
            "p99": round(data[min(len(data) - 1, int(len(data) * 0.99))] * 1000, 2),
            "max": round(data[-1] * 1000, 2),
        }


def cpu_seconds() -> float:
    """User + system CPU of this process (all threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def connect_all(clients: list[LoadClient], concurrency: int, warmup: int) -> dict[int, str]:
    """Connect and warm up every client, *concurrency* at a time; {index: error} of failures."""
    gate = asyncio.Semaphore(max(1, concurrency))
    failed: dict[int, str] = {}

    async def one(c: LoadClient) -> None:
        try:
            async with gate:
                await c.connect()
            for _ in range(warmup):
                await c.execute()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed[c.index] = f"{type(exc).__name__}: {exc}"[:300]

    await asyncio.gather(*(one(c) for c in clients))
    return failed


async def drive(
    cfg: WorkerConfig,
    go: Callable[[dict[str, Any]], Awaitable[float | None]],
) -> dict[str, Any]:
    """Connect *cfg*'s clients, call ``go(ready_info)`` (returns the seconds to run, or None to
    stop), run them for that long and return this worker's JSON-able result."""
    if cfg.cpus:
        os.sched_setaffinity(0, cfg.cpus)
    cpus = sorted(os.sched_getaffinity(0))
    clients = [LoadClient(i, kid, cfg.settings) for i, kid in cfg.clients]
    t0 = time.monotonic()
    failed = await connect_all(clients, cfg.connect_concurrency, cfg.warmup)
    live = [c for c in clients if c.index not in failed]
    ready: dict[str, Any] = {
        "pid": os.getpid(),
        "clients": len(clients),
        "connect_failures": len(failed),
    }
    ready["connect_seconds"] = round(time.monotonic() - t0, 3)
    seconds = await go(ready)
    lag = LoopLag()
    window = 0.0
    cpu = 0.0
    messages_before = sum(c.verifier.counts.messages for c in clients)
    messages_at_end = messages_before
    if seconds is not None:
        lag_task = asyncio.create_task(lag.run())
        start = time.monotonic()
        end = start + seconds
        c0 = cpu_seconds()

        def at_end() -> None:
            nonlocal messages_at_end, cpu
            messages_at_end = sum(c.verifier.counts.messages for c in clients)
            cpu = cpu_seconds() - c0

        handle = asyncio.get_running_loop().call_at(end, at_end)
        try:
            await asyncio.gather(*(c.run(start, end) for c in live))
        finally:
            handle.cancel()
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task
        if time.monotonic() < end:  # every client stopped early
            at_end()
        window = min(time.monotonic(), end) - start
    for c in clients:
        c.close()
    return _result(cfg, clients, failed, cpus, window, cpu, messages_at_end - messages_before, lag)


def _result(
    cfg: WorkerConfig,
    clients: list[LoadClient],
    failed: dict[int, str],
    cpus: list[int],
    window: float,
    cpu: float,
    messages: int,
    lag: LoopLag,
) -> dict[str, Any]:
    counts = Counts()
    for c in clients:
        counts.add(c.verifier.counts)
    latencies = [round(x * 1000, 3) for c in clients for x in c.latencies]
    problems = [p for c in clients for p in c.verifier.problems][:50]
    problems += [f"c{i}: connect failed: {e}" for i, e in list(failed.items())[:10]]
    problems += [f"c{c.index}: stopped: {c.stopped}" for c in clients if c.stopped][:10]
    return {
        "pid": os.getpid(),
        "cpus": cpus,
        "clients": len(clients),
        "connect_failures": len(failed),
        "counts": counts.as_dict(),
        "window_seconds": round(window, 4),
        "round_trips_in_window": sum(c.in_window for c in clients),
        "messages_in_window": messages,
        "latencies_ms": latencies,
        "cpu_window_seconds": round(cpu, 4),
        "cpu_total_seconds": round(cpu_seconds(), 4),
        "loop_lag_ms": lag.summary_ms(),
        "drops": sum(c.drops for c in clients),
        "reconnects": sum(c.reconnects for c in clients),
        "reconnect_failures": sum(c.reconnect_failures for c in clients),
        "reconnect_seconds": [round(x, 4) for c in clients for x in c.reconnect_seconds],
        "gaps_seconds": [round(x, 4) for c in clients for x in c.gaps],
        "silent_reconnects": sum(c.silent_reconnects for c in clients),
        "stopped_early": sum(1 for c in clients if c.stopped),
        "problems": problems,
        "warmup": cfg.warmup,
    }


def _line(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def _main() -> int:
    cfg = WorkerConfig.from_json(await asyncio.to_thread(sys.stdin.readline))

    async def go(ready: dict[str, Any]) -> float | None:
        _line({"event": "ready", **ready})
        words = (await asyncio.to_thread(sys.stdin.readline)).split()
        if len(words) == 2 and words[0] == "go":
            return float(words[1])
        return None

    result = await drive(cfg, go)
    _line({"event": "result", **result})
    return 0


def main() -> int:
    return asyncio.run(_main())


if __name__ == "__main__":
    sys.exit(main())
