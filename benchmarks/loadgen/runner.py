"""The multi-process load generator: P worker processes, one summary.

Clients are spread round-robin over the kernels (client *i* on kernel ``i % K``) and over the
workers (client *i* in worker ``i % P``), so the clients of one kernel sit in different
processes. Each worker is ``python -m benchmarks.loadgen.worker`` (see there for the protocol):
all of them connect and warm up, then the runner starts the measured window in all at once,
samples the CPU of the processes it was asked to watch (the gateway, its kernels) at the start
and the end of that window, and merges the workers' results into one JSON-able summary::

    summary = await run_load(LoadConfig(url, token, kernel_ids, clients=200, seconds=30,
                                        watch={"gateway": [gw_pid]}))

or, to act while the load runs (kill a gateway replica in a failover test)::

    runner = LoadRunner(cfg)
    await runner.start()          # workers connected and warmed up
    await runner.go()             # the window starts
    ...                           # break something
    summary = await runner.wait()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.loadgen.client import ClientSettings
from benchmarks.loadgen.verify import COUNT_FIELDS, Counts
from benchmarks.loadgen.worker import WorkerConfig

ROOT = Path(__file__).resolve().parent.parent.parent
SATURATED = 0.9  # a worker busier than this (CPU seconds per second) may limit the figures


@dataclass
class LoadConfig:
    settings: ClientSettings
    kernel_ids: list[str]
    clients: int = 200
    seconds: float = 30.0
    workers: int | None = None  # default: one per CPU in ``cpus`` (or this process's CPUs)
    cpus: list[int] | None = None  # pin the workers to these CPUs
    warmup: int = 1
    watch: dict[str, list[int]] = field(default_factory=dict)  # name -> pids: CPU reported
    pin: dict[int, list[int]] = field(default_factory=dict)  # pid -> CPUs, for the run only
    start_timeout: float = 300.0  # for every worker to connect and warm up


def _percentile(data: list[float], q: float) -> float:
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def latency_summary(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {"n": 0}
    data = sorted(values_ms)
    return {
        "n": len(data),
        "p50": round(_percentile(data, 50), 3),
        "p90": round(_percentile(data, 90), 3),
        "p99": round(_percentile(data, 99), 3),
        "max": round(data[-1], 3),
        "mean": round(sum(data) / len(data), 3),
    }


def proc_cpu(pid: int) -> float | None:
    """utime + stime of *pid*, all threads, in seconds; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_times() -> dict[str, tuple[int, int]]:
    """/proc/stat: {"cpu": (busy, total) jiffies, "cpu0": ..., ...} (iowait counts as idle)."""
    out: dict[str, tuple[int, int]] = {}
    with open("/proc/stat", encoding="ascii") as fh:
        for row in fh:
            if not row.startswith("cpu"):
                break
            name, *values = row.split()
            ticks = [int(v) for v in values[:8]]
            out[name] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return out


def machine_busy(t0: dict[str, tuple[int, int]], t1: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """How busy the machine was between two :func:`cpu_times`: CPUs' worth, and per CPU."""

    def frac(name: str) -> float:
        busy = t1[name][0] - t0[name][0]
        total = t1[name][1] - t0[name][1]
        return round(busy / total, 3) if total > 0 else 0.0

    per_cpu = {k: frac(k) for k in t1 if k != "cpu" and k in t0}
    return {
        "cpus": len(per_cpu),
        "busy_cpus": round(frac("cpu") * len(per_cpu), 2),
        "busy_per_cpu": per_cpu,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def children(pid: int) -> list[int]:
    """The direct children of *pid* (e.g. a gateway's local kernels)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(x) for x in fh.read().split()]
    return sorted(set(out))


def pin(pid: int, cpus: list[int]) -> dict[int, list[int]]:
    """Pin every thread of *pid* to *cpus*; returns each thread's previous CPUs (to restore)."""
    before: dict[int, list[int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            before[int(tid)] = sorted(os.sched_getaffinity(int(tid)))
            os.sched_setaffinity(int(tid), cpus)
    return before


def unpin(saved: dict[int, list[int]]) -> None:
    for tid, cpus in saved.items():
        with contextlib.suppress(ProcessLookupError, OSError):
            os.sched_setaffinity(tid, cpus)


class WorkerProcess:
    """One ``python -m benchmarks.loadgen.worker`` child and the lines it writes."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr: deque[str] = deque(maxlen=40)
        self._stderr_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.loadgen.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(ROOT),
            env=env,
            limit=1 << 28,  # the result line holds every latency sample
        )
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        self.send(self.cfg.to_json())

    async def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace").rstrip())

    def send(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def event(self, name: str) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        raw = await self.proc.stdout.readline()
        if not raw:
            await self.proc.wait()
            if self._stderr_task is not None:
                await self._stderr_task
            tail = "\n".join(self.stderr)
            raise RuntimeError(f"load worker exited ({self.proc.returncode}):\n{tail}")
        payload: dict[str, Any] = json.loads(raw)
        if payload.get("event") != name:
            raise RuntimeError(f"load worker: expected {name!r}, got {payload.get('event')!r}")
        return payload

    async def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(Exception):
                await self._stderr_task


class LoadRunner:
    """The workers of one run (see the module docstring)."""

    def __init__(self, cfg: LoadConfig) -> None:
        if not cfg.kernel_ids:
            raise ValueError("no kernels to drive")
        self.cfg = cfg
        cpus = cfg.cpus or sorted(os.sched_getaffinity(0))
        self.n_workers = max(1, min(cfg.workers or len(cpus), cfg.clients))
        self.workers: list[WorkerProcess] = []
        self.ready: list[dict[str, Any]] = []
        self._pinned: dict[int, list[int]] = {}
        self._cpu0: dict[str, float] = {}
        self._cpu1: dict[str, float] = {}
        self._machine0: dict[str, tuple[int, int]] = {}
        self.machine: dict[str, Any] = {}
        self._go_at = 0.0
        self._saved_affinity: list[dict[int, list[int]]] = []

    def _assignments(self) -> list[list[tuple[int, str]]]:
        kernels = self.cfg.kernel_ids
        shares: list[list[tuple[int, str]]] = [[] for _ in range(self.n_workers)]
        for i in range(self.cfg.clients):
            shares[i % self.n_workers].append((i, kernels[i % len(kernels)]))
        return shares

    async def start(self) -> None:
        """Start the workers; returns once all of them are connected and warmed up."""
        for share in self._assignments():
            wcfg = WorkerConfig(self.cfg.settings, share, self.cfg.cpus, self.cfg.warmup)
            w = WorkerProcess(wcfg)
            self.workers.append(w)
            await w.start()
        try:
            async with asyncio.timeout(self.cfg.start_timeout):
                self.ready = list(await asyncio.gather(*(w.event("ready") for w in self.workers)))
        except BaseException:
            await self.stop()
            raise
        for pid, cpus in self.cfg.pin.items():
            self._saved_affinity.append(pin(pid, cpus))
            self._pinned[pid] = cpus

    def _sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, pids in self.cfg.watch.items():
            out[name] = sum(x for x in (proc_cpu(p) for p in pids) if x is not None)
        return out

    async def go(self) -> None:
        """Start the measured window in every worker."""
        self._cpu0 = self._sample()
        self._machine0 = cpu_times()
        self._go_at = time.monotonic()
        for w in self.workers:
            w.send(f"go {self.cfg.seconds!r}")

    async def wait(self) -> dict[str, Any]:
        """Wait for the window to end and the workers to report; the run's summary."""
        try:
            await asyncio.sleep(max(0.0, self._go_at + self.cfg.seconds - time.monotonic()))
            self._cpu1 = self._sample()
            self.machine = machine_busy(self._machine0, cpu_times())
            limit = self.cfg.settings.request_timeout + self.cfg.settings.reconnect_deadline + 60
            async with asyncio.timeout(limit):
                results = list(await asyncio.gather(*(w.event("result") for w in self.workers)))
            for w in self.workers:
                assert w.proc is not None
                await w.proc.wait()
        finally:
            await self.stop()
        return self.summary(results)

    async def stop(self) -> None:
        """Kill the workers still running (by their pids) and undo the pinning."""
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None and w.proc.stdin is not None:
                with contextlib.suppress(Exception):
                    w.proc.stdin.close()
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)
        for saved in self._saved_affinity:
            unpin(saved)
        self._saved_affinity.clear()

    def summary(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        out = summarize(self.cfg, results, self.n_workers, self._cpu0, self._cpu1, self._pinned)
        out["machine"] = self.machine
        out["limited_by"] = limited_by(out)
        return out


def summarize(
    cfg: LoadConfig,
    results: list[dict[str, Any]],
    n_workers: int,
    cpu0: dict[str, float],
    cpu1: dict[str, float],
    pinned: dict[int, list[int]],
) -> dict[str, Any]:
    counts = Counts()
    for r in results:
        counts.add(Counts.from_dict(r["counts"]))
    window = max((r["window_seconds"] for r in results), default=0.0) or 1e-9
    round_trips = sum(r["round_trips_in_window"] for r in results)
    messages = sum(r["messages_in_window"] for r in results)
    latencies = [x for r in results for x in r["latencies_ms"]]
    client_cpu = sum(r["cpu_window_seconds"] for r in results)
    busy = [round(r["cpu_window_seconds"] / window, 3) for r in results]
    watched = {k: round(cpu1.get(k, 0.0) - cpu0.get(k, 0.0), 3) for k in cfg.watch}
    per_rt = max(round_trips, 1)
    lag = [r["loop_lag_ms"] for r in results if r["loop_lag_ms"]]
    lag_p99 = max((x["p99"] for x in lag), default=0.0)
    connect_failures = sum(r["connect_failures"] for r in results)
    ok = not (
        counts.lost_messages
        or counts.duplicated
        or counts.cross_talk
        or counts.errors
        or connect_failures
    )
    gaps = sorted(x for r in results for x in r["gaps_seconds"])
    reconnect_s = sorted(x for r in results for x in r["reconnect_seconds"])
    out: dict[str, Any] = {
        "ok": ok,
        "clients": cfg.clients,
        "kernels": len(cfg.kernel_ids),
        "workers": n_workers,
        "window_seconds": round(window, 3),
        "counts": {k: getattr(counts, k) for k in COUNT_FIELDS}
        | {
            "connect_failures": connect_failures,
            "stopped_early": sum(r["stopped_early"] for r in results),
            "drops": sum(r["drops"] for r in results),
            "reconnects": sum(r["reconnects"] for r in results),
            "reconnect_failures": sum(r["reconnect_failures"] for r in results),
            "silent_reconnects": sum(r["silent_reconnects"] for r in results),
        },
        "round_trips": round_trips,
        "round_trips_per_s": round(round_trips / window, 2),
        "messages_per_s": round(messages / window, 1),
        "latency_ms": latency_summary(latencies),
        "cpu": {
            "client_seconds": round(client_cpu, 3),
            "client_busy_per_worker": busy,
            "client_ms_per_round_trip": round(client_cpu * 1000 / per_rt, 4),
            "watched_seconds": watched,
            "watched_busy": {k: round(v / window, 3) for k, v in watched.items()},
            "watched_ms_per_round_trip": {
                k: round(v * 1000 / per_rt, 4) for k, v in watched.items()
            },
            "client_loop_lag_ms": lag,
        },
        "client_saturated": any(b >= SATURATED for b in busy),
        "client_loop_lag_p99_ms": lag_p99,
        "pinned": {
            "workers": cfg.cpus,
            "worker_cpus": [r["cpus"] for r in results],
            "pids": {str(k): v for k, v in pinned.items()},
        },
        "reconnect": {
            "gap_seconds": latency_summary(gaps) if gaps else {"n": 0},
            "max_gap_seconds": gaps[-1] if gaps else None,
            "reconnect_seconds": latency_summary(reconnect_s) if reconnect_s else {"n": 0},
        },
        "problems": [p for r in results for p in r["problems"]][:40],
        "config": _config_json(cfg),
    }
    return out


def limited_by(summary: dict[str, Any]) -> list[str]:
    """What was saturated during the window: "client" (a worker), a watched process busier
    than one CPU can be ("server", only meaningful for a single-threaded one), "machine"
    (every CPU busy: the kernels, the server and the client compete, others too)."""
    out: list[str] = []
    if summary["client_saturated"]:
        out.append("client")
    for name, busy in summary["cpu"]["watched_busy"].items():
        if busy >= SATURATED and len(summary["config"]["watch"].get(name, [])) == 1:
            out.append(name)
    machine = summary.get("machine") or {}
    if machine.get("cpus") and machine["busy_cpus"] >= SATURATED * machine["cpus"]:
        out.append("machine")
    return out


def _config_json(cfg: LoadConfig) -> dict[str, Any]:
    data = asdict(cfg)
    data["settings"].pop("token", None)
    data["kernel_ids"] = len(cfg.kernel_ids)
    data["pin"] = {str(k): v for k, v in cfg.pin.items()}
    return data


async def run_load(cfg: LoadConfig) -> dict[str, Any]:
    """Start the workers, run the window, return the summary (workers always stopped)."""
    runner = LoadRunner(cfg)
    await runner.start()
    try:
        await runner.go()
        return await runner.wait()
    finally:
        await runner.stop()
