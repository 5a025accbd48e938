"""A gateway replica SIGKILLed under load (issue 15, item 5): the failover benchmark.

``ha_failover`` brings up the HA test harness (:class:`tests.ha.harness.ReplicaSet`: one
PostgreSQL store, 3 ``kernelfleet serve`` replicas, HAProxy with ``/readyz`` checks), starts K
ipykernels through the proxy (round-robin: each replica owns about a third), and runs C
verifying clients of :mod:`benchmarks.loadgen` in reconnect mode through the proxy. After a
warm period it SIGKILLs the replica that carries the most websockets (HAProxy's ``show stat``:
``scur`` of each server, a websocket being one session for its whole life) and keeps the load
running; then it checks the kernels (the same ids listed, the same processes, every row of the
killed replica taken over once), shuts every kernel down through the proxy and looks for kernel
processes left behind.

Sizes (environment; ``--quick`` uses the second figure):

=============================  ==============================================  ============
``KF_BENCH_HA_KERNELS``        kernels, started through the proxy              50 (10)
``KF_BENCH_HA_CLIENTS``        clients (client *i* on kernel *i* mod K)        200 (40)
``KF_BENCH_HA_SECONDS``        the measured window                             30 (15)
``KF_BENCH_HA_KILL_AT``        seconds into the window of the SIGKILL          window / 3
``KF_BENCH_HA_REPLICAS``       replicas                                        3
``KF_BENCH_HA_WORKERS``        load generator processes                        one per CPU
``KF_BENCH_HA_OUTSTANDING``    seconds a reconnected client still waits for    3
                               its request outstanding at the drop
``KF_BENCH_HA_KILL``           ``1``..N: kill this replica instead of the      (busiest)
                               busiest
=============================  ==============================================  ============

What "continued" means: the load generator records, per drop, the time from the drop to the
first message received after it (``reconnect.gap_seconds``). A client reconnecting with its
session to a survivor gets the survivor's loss notice first, then the kernel's output since
the death, so the gap is "drop → attached to the kernel on another replica, output flowing".
A client whose outstanding request was reported lost then waits ``KF_BENCH_HA_OUTSTANDING``
for it before its next request (the load generator does not stop waiting at a loss notice).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import Metric, ScenarioResult
from benchmarks.loadgen import ClientSettings, LoadConfig, LoadRunner
from benchmarks.loadgen.runner import cpu_times, machine_busy, proc_cpu
from benchmarks.scenarios import Context, scenario

CONTINUE_WITHIN = 5.0  # seconds: the bound for a dropped client to carry on
START_BATCH = 10  # kernels started at once through the proxy
SAMPLE_EVERY = 1.0  # seconds between CPU / proxy samples


def _missing() -> str | None:
    try:
        from tests.ha.harness import missing_parts
    except ImportError as exc:
        return f"tests/ha/harness.py not importable: {exc}"
    return missing_parts()


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


@dataclass
class Sizes:
    kernels: int
    clients: int
    seconds: float
    kill_at: float
    replicas: int
    workers: int | None
    outstanding: float
    kill: int | None

    @classmethod
    def of(cls, ctx: Context) -> Sizes:
        seconds = _env_number("KF_BENCH_HA_SECONDS", ctx.n(30, 15))
        kill = int(_env_number("KF_BENCH_HA_KILL", 0))
        sizes = cls(
            kernels=int(_env_number("KF_BENCH_HA_KERNELS", ctx.n(50, 10))),
            clients=int(_env_number("KF_BENCH_HA_CLIENTS", ctx.n(200, 40))),
            seconds=seconds,
            kill_at=_env_number("KF_BENCH_HA_KILL_AT", round(seconds / 3, 1)),
            replicas=int(_env_number("KF_BENCH_HA_REPLICAS", 3)),
            workers=int(_env_number("KF_BENCH_HA_WORKERS", 0)) or None,
            outstanding=_env_number("KF_BENCH_HA_OUTSTANDING", 3.0),
            kill=kill or None,
        )
        if not 0 < sizes.kill_at <= sizes.seconds - 2 * CONTINUE_WITHIN:
            raise ValueError(
                f"KF_BENCH_HA_KILL_AT={sizes.kill_at:g} must leave at least "
                f"{2 * CONTINUE_WITHIN:g} s of the {sizes.seconds:g} s window after the kill"
            )
        if sizes.kill is not None and not 1 <= sizes.kill <= sizes.replicas:
            raise ValueError(f"KF_BENCH_HA_KILL={sizes.kill}: replicas are 1..{sizes.replicas}")
        return sizes


# -- HAProxy's counters ---------------------------------------------------------------------


def proxy_stats(rs: Any) -> dict[str, dict[str, int]]:
    """``show stat``: {"FRONTEND" / "gw1" / …: {"scur", "stot", "bin", "bout"}} of our proxy."""
    text = rs.haproxy.command("show stat")
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise RuntimeError(f"unexpected answer to show stat: {text[:200]!r}")
    header = lines[0][2:].split(",")
    out: dict[str, dict[str, int]] = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") in {"kernelfleet", "gateways"}:  # FRONTEND, gw1…, BACKEND
            out[row["svname"]] = {k: int(row.get(k) or 0) for k in ("scur", "stot", "bin", "bout")}
    return out


# -- CPU of the processes involved ----------------------------------------------------------


def _ppids() -> Iterator[tuple[int, int]]:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        yield int(entry), int(stat[stat.rindex(")") + 2 :].split()[1])


def postmaster_pid(store_url: str) -> int | None:
    """The PostgreSQL server's pid, from ``postmaster.pid`` in the harness's data dir."""
    match = re.search(r"host=([^&]+)", store_url)
    if not match:
        return None
    try:
        return int(Path(match.group(1), "data", "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def socket_bytes_out(port: int) -> dict[str, int] | None:
    """Bytes sent (and acknowledged) on each established TCP connection of local *port*, from
    ``ss -ti``: what HAProxy wrote to its clients. (HAProxy's own ``bout`` counter of a
    websocket is only updated when the tunnel ends.) None when ``ss`` is missing."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "ss",
            "-tinH",
            "state",
            "established",
            f"( sport = :{port} )",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    raw, _ = await proc.communicate()
    out: dict[str, int] = {}
    key = ""
    for line in raw.decode(errors="replace").splitlines():
        if not line[:1].isspace():  # "Recv-Q Send-Q local peer"
            words = line.split()
            key = " ".join(words[-2:])
            out[key] = 0
        elif key:
            match = _ACKED.search(line)
            if match:
                out[key] = int(match.group(1))
    return out


_ACKED = re.compile(r"\bbytes_acked:(\d+)")


def run_queue_wait(pid: int) -> float | None:
    """Seconds the main thread of *pid* was runnable but waiting for a CPU (schedstat)."""
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Sample:
    t: float  # time.monotonic()
    cpu: dict[str, float]  # group -> CPU seconds (dead processes: their last value)
    per_pid: dict[str, dict[int, float]]
    waits: dict[str, dict[int, float]]  # group -> pid -> run-queue wait of its main thread
    machine: dict[str, tuple[int, int]]
    bout: int  # bytes the proxy sent to clients since the first sample
    mark: str = ""


@dataclass
class Watch:
    """CPU samples of named groups of processes, plus the bytes the proxy sent to clients."""

    proxy_port: int
    groups: dict[str, list[int]]
    postmaster: int | None
    samples: list[Sample] = field(default_factory=list)
    _last: dict[int, float] = field(default_factory=dict)
    _last_wait: dict[int, float] = field(default_factory=dict)
    _conns: dict[str, int] = field(default_factory=dict)
    _bout: int = 0

    async def sample(self, mark: str = "") -> Sample:
        conns = await socket_bytes_out(self.proxy_port)
        if conns is not None:
            if self.samples:  # a connection closed since the last sample loses its tail
                self._bout += sum(v - self._conns.get(k, 0) for k, v in conns.items())
            self._conns = conns
        groups = dict(self.groups)
        if self.postmaster is not None:
            groups["postgres"] = [self.postmaster] + [
                pid for pid, ppid in _ppids() if ppid == self.postmaster
            ]
        per_pid: dict[str, dict[int, float]] = {}
        waits: dict[str, dict[int, float]] = {}
        for name, pids in groups.items():
            values, wait = {}, {}
            for pid in pids:
                cpu = proc_cpu(pid)
                if cpu is not None:
                    self._last[pid] = cpu
                w = run_queue_wait(pid)
                if w is not None:
                    self._last_wait[pid] = w
                values[pid] = self._last.get(pid, 0.0)
                wait[pid] = self._last_wait.get(pid, 0.0)
            per_pid[name] = values
            waits[name] = wait
        s = Sample(
            time.monotonic(),
            {k: sum(v.values()) for k, v in per_pid.items()},
            per_pid,
            waits,
            cpu_times(),
            self._bout,
            mark,
        )
        self.samples.append(s)
        return s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            await self.sample()

    @staticmethod
    def phase(a: Sample, b: Sample) -> dict[str, Any]:
        """CPU busy (CPU seconds per second) of each group and pid, the machine, MB/s out."""
        dt = max(b.t - a.t, 1e-9)
        pids: dict[str, dict[str, float]] = {}
        for name, values in b.per_pid.items():
            before = a.per_pid.get(name, {})
            pids[name] = {
                str(pid): round((v - before.get(pid, v)) / dt, 3) for pid, v in values.items()
            }
        groups = {name: round(sum(v.values()), 3) for name, v in pids.items()}
        waits: dict[str, dict[str, float]] = {}
        for name, values in b.waits.items():
            before = a.waits.get(name, {})
            if name not in {"postgres", "kernels"}:
                waits[name] = {
                    str(pid): round((v - before.get(pid, v)) / dt, 3) for pid, v in values.items()
                }
        return {
            "seconds": round(dt, 2),
            "busy": groups,
            # seconds per second each main thread was ready to run but had no CPU
            "run_queue_wait_per_pid": waits,
            "busy_per_pid": {k: v for k, v in pids.items() if k != "postgres"},
            "machine": machine_busy(a.machine, b.machine),
            "proxy_out_mb_per_s": round((b.bout - a.bout) / dt / 1e6, 3),
        }

    def series(self, t0: float) -> list[dict[str, Any]]:
        """Per sample interval: seconds since *t0*, MB/s out of the proxy, machine busy."""
        out = []
        for a, b in zip(self.samples, self.samples[1:], strict=False):
            dt = max(b.t - a.t, 1e-9)
            out.append(
                {
                    "t": round(b.t - t0, 2),
                    "mb_per_s": round((b.bout - a.bout) / dt / 1e6, 3),
                    "busy_cpus": machine_busy(a.machine, b.machine)["busy_cpus"],
                    **({"mark": b.mark} if b.mark else {}),
                }
            )
        return out


class _Runner(LoadRunner):
    """A LoadRunner whose summary also keeps every drop's gap (the summary has percentiles
    only), to count the drops that continued within CONTINUE_WITHIN."""

    def summary(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().summary(results)
        out["gap_samples"] = sorted(x for r in results for x in r["gaps_seconds"])
        out["reconnect_samples"] = sorted(x for r in results for x in r["reconnect_seconds"])
        return out


# -- the replica set ------------------------------------------------------------------------


async def _request(rs: Any, method: str, path: str, body: Any = None) -> tuple[int, Any, str]:
    return await rs.request(method, path, body)  # type: ignore[no-any-return]


async def _start_kernels(rs: Any, count: int, failures: list[str]) -> list[str]:
    """POST /api/kernels through the proxy, START_BATCH at a time; one retry per kernel."""
    ids: list[str] = []

    async def one() -> None:
        for attempt in range(2):
            status, model, served = await _request(
                rs, "POST", "/api/kernels", {"name": "python3", "env": {}}
            )
            if status == 201 and isinstance(model, dict):
                ids.append(model["id"])
                return
            failures.append(f"attempt {attempt + 1} via {served or '?'}: {status} {model!r}"[:300])
        raise RuntimeError(f"a kernel did not start: {failures[-1]}")

    for start in range(0, count, START_BATCH):
        await asyncio.gather(*(one() for _ in range(min(START_BATCH, count - start))))
    return ids


async def _every_replica_lists(rs: Any, ids: list[str], within: float = 60.0) -> float:
    """Wait until every replica (directly, not through the proxy) lists every kernel."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    t0 = time.monotonic()
    want = set(ids)
    client = AsyncHTTPClient()
    while True:
        missing = 0
        for i in rs.replicas:
            req = HTTPRequest(
                f"{rs.url(i)}/api/kernels",
                headers={"Authorization": f"token {rs.token}"},
                request_timeout=30,
            )
            resp = await client.fetch(req, raise_error=False)
            listed = {k["id"] for k in _json(resp.body)} if resp.code == 200 else set()
            missing += len(want - listed)
        if not missing:
            return time.monotonic() - t0
        if time.monotonic() - t0 > within:
            raise RuntimeError(
                f"{missing} kernel listings missing on the replicas after {within} s"
            )
        await asyncio.sleep(0.5)


def _json(body: bytes | None) -> Any:
    import json

    return json.loads(body) if body else []


async def _listed(rs: Any) -> list[str]:
    status, listed, _ = await _request(rs, "GET", "/api/kernels")
    if status != 200 or not isinstance(listed, list):
        raise RuntimeError(f"GET /api/kernels through the proxy: {status} {listed!r}"[:300])
    return sorted(k["id"] for k in listed)


def _owners(store_url: str) -> dict[str, str]:
    """kernel id → owning replica (``gateway``) and state, from the store."""
    import psycopg

    with psycopg.connect(store_url, autocommit=True) as conn:
        rows = conn.execute("SELECT id, gateway, state FROM kf_kernels").fetchall()
    return {str(r[0]): f"{r[1]}:{r[2]}" for r in rows}


def _processes(ids: list[str]) -> dict[str, list[int]]:
    from tests.gatewayproc import kernel_pids

    return {kid: sorted(kernel_pids(kid)) for kid in ids}


_LOG_TIME = re.compile(r"(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?)")


def _log_time(line: str) -> float | None:
    """The wall time at the start of a log line, in seconds since the epoch (local time)."""
    match = _LOG_TIME.search(line[:40])
    if not match:
        return None
    text = match.group(1).replace(",", ".").replace("T", " ")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


_UPGRADE = re.compile(r"\] 101 GET /api/kernels/[^/ ]+/channels ([\d.]+)ms")


def _read_logs(rs: Any, killed: int, killed_wall: float) -> dict[str, Any]:
    """What the replica logs say about the failover (seconds after the kill): when each
    survivor noted the death (every time: a death noted twice shows here), its take-overs,
    the sessions it replayed for, how long its websocket upgrades took; warnings, errors."""
    out: dict[str, Any] = {"replicas": {}}
    for i, gw in rs.replicas.items():
        try:
            text = gw.log_path.read_text(errors="replace")
        except OSError as exc:
            out["replicas"][str(i)] = {"error": str(exc)}
            continue
        lines = text.splitlines()

        def after(line: str) -> float | None:
            t = _log_time(line)
            return None if t is None else round(t - killed_wall, 3)

        deaths = [after(x) for x in lines if f"replica ha-{killed} stopped (" in x]
        takeovers = [
            {"after_kill_s": after(x), "kernels": int(m.group(1))}
            for x in lines
            if (m := re.search(rf"took over (\d+) kernel\(s\) of replica ha-{killed}\b", x))
        ]
        replays = [
            (after(x), int(m.group(1)), int(m.group(2)))
            for x in lines
            if f"after replica ha-{killed} stopped" in x
            and (m := re.search(r"replaying (\d+) message\(s\), (\d+) request", x))
        ]
        upgrades = [
            float(m.group(1))
            for x in lines
            if (m := _UPGRADE.search(x)) and (a := after(x)) is not None and a >= 0
        ]
        bad = [
            line
            for line in lines
            if re.search(r"\b(ERROR|CRITICAL|Traceback|Exception)\b", line)
            or re.match(r"^\[?E ", line)
        ]
        warn = [line for line in lines if re.search(r"\bWARNING\b|^\[?W ", line)]
        out["replicas"][str(i)] = {
            "log": str(gw.log_path),
            "lines": len(lines),
            "death_noted_after_kill_s": deaths,
            "takeovers": takeovers,
            "failover_replays": len(replays),
            "failover_replays_first_last_s": [replays[0][0], replays[-1][0]] if replays else [],
            "failover_replayed_messages_max": max((r[1] for r in replays), default=0),
            "failover_requests_named_max": max((r[2] for r in replays), default=0),
            "websocket_upgrades_after_kill": len(upgrades),
            "websocket_upgrade_ms_after_kill": _ms_summary(upgrades),
            "errors": len(bad),
            "error_lines": bad[:15],
            "warnings": len(warn),
            "warning_lines": warn[:15],
        }
    return out


def _ms_summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    data = sorted(values)
    return {
        "p50": round(data[len(data) // 2], 1),
        "p90": round(data[int(len(data) * 0.9)], 1),
        "max": round(data[-1], 1),
    }


def _took_over(logs: dict[str, Any]) -> tuple[int, float | None]:
    """(kernels taken over from the killed replica, seconds after the kill of the last)."""
    total, last = 0, None
    for rep in logs["replicas"].values():
        for ev in rep.get("takeovers", []):
            total += ev["kernels"]
            if ev["after_kill_s"] is not None:
                last = max(last or 0.0, ev["after_kill_s"])
    return total, last


def _proxy_flaps(rs: Any, killed: int) -> dict[str, int]:
    """Health-check verdicts in HAProxy's log: live replicas marked DOWN (a check answered
    later than ``timeout check``), and moments no replica at all was UP."""
    try:
        text = rs.haproxy.log_path.read_text(errors="replace")
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("[") or " is DOWN" not in line:  # each verdict is logged twice
            continue
        m = re.search(r"Server \S+/(gw\d+) is DOWN", line)
        if m and m.group(1) != rs.name(killed):
            out[f"{m.group(1)} marked DOWN"] = out.get(f"{m.group(1)} marked DOWN", 0) + 1
        if " 0 active and 0 backup servers left" in line:
            out["no replica UP"] = out.get("no replica UP", 0) + 1
    return out


async def _shutdown_all(rs: Any, ids: list[str]) -> dict[str, Any]:
    """DELETE every kernel through the proxy, then the kernel processes still alive."""
    from tests.ha.harness import marked_pids

    t0 = time.monotonic()
    failed: list[str] = []

    async def one(kid: str) -> None:
        status, body, served = await _request(rs, "DELETE", f"/api/kernels/{kid}")
        if status != 204:
            failed.append(f"{kid} via {served or '?'}: {status} {body!r}"[:200])

    for start in range(0, len(ids), START_BATCH):
        await asyncio.gather(*(one(k) for k in ids[start : start + START_BATCH]))
    seconds = time.monotonic() - t0
    deadline = time.monotonic() + 15
    left = marked_pids(rs.id)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        left = marked_pids(rs.id)
    return {
        "seconds": round(seconds, 2),
        "failed_deletes": failed,
        "orphans": left,
        "listed_after": await _listed(rs),
    }


# -- the scenario ---------------------------------------------------------------------------


def _pct(part: float, whole: float) -> float | None:
    return None if whole <= 0 else round(100.0 * part / whole, 2)


@scenario(
    "ha_failover",
    "SIGKILL a replica (of 3 behind HAProxy) under load: clients carry on elsewhere",
    group="ha",
    requires=_missing,
)
async def ha_failover(ctx: Context) -> ScenarioResult:
    from tests.ha.harness import ReplicaSet, postgres_server

    sizes = Sizes.of(ctx)
    stack = contextlib.ExitStack()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    pg_url = await asyncio.to_thread(lambda: stack.enter_context(postgres_server()))
    rs: Any = None
    try:
        rs = await asyncio.to_thread(ReplicaSet, ctx.env.root / "ha", pg_url, sizes.replicas)
        timings["setup_s"] = round(time.perf_counter() - t0, 2)
        return await _run(rs, sizes, timings)
    finally:
        if rs is not None:
            await asyncio.to_thread(rs.close)
        await asyncio.to_thread(stack.close)


async def _run(rs: Any, sizes: Sizes, timings: dict[str, float]) -> ScenarioResult:
    t = time.perf_counter()
    start_failures: list[str] = []
    ids = await _start_kernels(rs, sizes.kernels, start_failures)
    timings["kernel_start_s"] = round(time.perf_counter() - t, 2)
    timings["replicas_list_all_s"] = round(await _every_replica_lists(rs, ids), 2)
    listed_before = await _listed(rs)
    procs_before = _processes(ids)
    owners_before = await asyncio.to_thread(_owners, rs.store_url)

    settings = ClientSettings(
        url=rs.proxy_url + "/",
        token=rs.token,
        reconnect=True,
        reconnect_deadline=30.0,
        outstanding_timeout=sizes.outstanding,
    )
    cfg = LoadConfig(
        settings, ids, clients=sizes.clients, seconds=sizes.seconds, workers=sizes.workers
    )
    runner = _Runner(cfg)
    t = time.perf_counter()
    await runner.start()
    timings["clients_connect_s"] = round(time.perf_counter() - t, 2)
    groups = {f"replica-{i}": [gw.proc.pid] for i, gw in rs.replicas.items()}
    groups["kernels"] = sorted(p for ps in procs_before.values() for p in ps)
    groups["haproxy"] = [rs.haproxy.proc.pid]
    groups["client workers"] = [w.proc.pid for w in runner.workers if w.proc is not None]
    watch = Watch(rs.haproxy.port, groups, postmaster_pid(rs.store_url))
    sampler: asyncio.Task[None] | None = None
    kill: dict[str, Any] = {}
    try:
        await runner.go()
        go_at = time.monotonic()
        first = await watch.sample("go")
        sampler = asyncio.create_task(watch.run())
        await asyncio.sleep(max(0.0, go_at + sizes.kill_at - time.monotonic()))
        stats = proxy_stats(rs)
        websockets = {i: stats.get(rs.name(i), {}).get("scur", 0) for i in rs.replicas}
        victim = sizes.kill or max(websockets, key=lambda i: (websockets[i], -i))
        owned = sum(1 for v in owners_before.values() if v.startswith(f"ha-{victim}:"))
        before_kill = await watch.sample("kill")
        kill_wall = time.time()
        await asyncio.to_thread(rs.kill, victim)
        killed_at = time.monotonic()
        kill = {
            "replica": victim,
            "chosen": "KF_BENCH_HA_KILL" if sizes.kill else "most websockets (HAProxy scur)",
            "at_window_s": round(killed_at - go_at, 2),
            "websockets_per_replica": {str(k): v for k, v in websockets.items()},
            "kernels_owned": owned,
        }
        with contextlib.suppress(AssertionError):
            kill["proxy_down_after_s"] = round(await rs.wait_for_state(victim, "DOWN", 15), 2)
        summary = await runner.wait()
        timings["window_and_results_s"] = round(time.monotonic() - go_at, 2)
    finally:
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        await runner.stop()
    last = next((s for s in reversed(watch.samples) if s.t <= go_at + sizes.seconds + 0.5), None)
    end = last if last is not None and last.t > killed_at + 1 else await watch.sample("end")
    settle = next((s for s in watch.samples if s.t >= killed_at + CONTINUE_WITHIN), end)

    listed_after = await _listed(rs)
    procs_after = _processes(ids)
    owners_after = await asyncio.to_thread(_owners, rs.store_url)
    logs = _read_logs(rs, victim, kill_wall)
    logs["haproxy"] = _proxy_flaps(rs, victim)
    taken, takeover_s = _took_over(logs)
    t = time.perf_counter()
    shutdown = await _shutdown_all(rs, ids)
    timings["shutdown_s"] = round(time.perf_counter() - t, 2)

    return _result(
        sizes,
        ids,
        summary,
        kill,
        timings,
        start_failures,
        {
            "listed_before": listed_before,
            "listed_after": listed_after,
            "procs_before": procs_before,
            "procs_after": procs_after,
            "owners_before": owners_before,
            "owners_after": owners_after,
            "taken": taken,
            "takeover_s": takeover_s,
            "shutdown": shutdown,
        },
        {
            "before_kill": Watch.phase(first, before_kill),
            "after_kill_first_5s": Watch.phase(before_kill, settle),
            "after_kill": Watch.phase(settle, end) if end.t > settle.t + 1 else None,
            "series": watch.series(go_at),
            "proxy_bytes_out_window": end.bout - first.bout,
        },
        logs,
    )


def _result(
    sizes: Sizes,
    ids: list[str],
    summary: dict[str, Any],
    kill: dict[str, Any],
    timings: dict[str, float],
    start_failures: list[str],
    k: dict[str, Any],
    cpu: dict[str, Any],
    logs: dict[str, Any],
) -> ScenarioResult:
    counts = summary["counts"]
    gaps_info = summary["reconnect"]["gap_seconds"]
    # a drop episode: a drop until the first message after it, or until the client ended
    n_gaps = int(gaps_info.get("n", 0))
    episodes = n_gaps + counts["silent_reconnects"] + counts["reconnect_failures"]
    within = _count_within(summary)
    pct = _pct(within, episodes)
    victim = kill["replica"]
    dropped_expected = int(kill["websockets_per_replica"].get(str(victim), 0))

    lost_ids = sorted(set(k["listed_before"]) - set(k["listed_after"]))
    new_ids = sorted(set(k["listed_after"]) - set(k["listed_before"]))
    changed = [
        kid
        for kid in ids
        if k["procs_after"].get(kid) != k["procs_before"].get(kid)
        or len(k["procs_after"].get(kid, [])) != 1
    ]
    still_on_victim = [kid for kid, v in k["owners_after"].items() if v.startswith(f"ha-{victim}:")]
    orphans = k["shutdown"]["orphans"]
    before, after = cpu["before_kill"], cpu["after_kill"] or cpu["after_kill_first_5s"]
    replicas_before = {n: v for n, v in before["busy"].items() if n.startswith("replica-")}
    replicas_after = {
        n: v
        for n, v in after["busy"].items()
        if n.startswith("replica-") and n != f"replica-{victim}"
    }
    bytes_per_rt = cpu["proxy_bytes_out_window"] / max(summary["round_trips"], 1)
    rt_before = _rt(before["proxy_out_mb_per_s"], bytes_per_rt)
    rt_after = _rt(after["proxy_out_mb_per_s"], bytes_per_rt)
    saturated = _saturated(before, "before the kill") + _saturated(after, "after the kill")
    errors = (
        counts["errors"]
        + counts["connect_failures"]
        + counts["reconnect_failures"]
        + counts["stopped_early"]
    )
    label = f"{summary['clients']} clients"
    flaps = logs.get("haproxy", {})
    failed_checks = [
        name
        for name, bad in (
            ("clients not continuing within 5 s", episodes - within),
            ("lost unreported", counts["lost_messages"]),
            ("duplicated", counts["duplicated"]),
            ("cross-talk", counts["cross_talk"]),
            ("kernels lost", len(lost_ids)),
            ("kernel processes changed", len(changed)),
            ("orphans", len(orphans)),
            ("kernels still owned by the killed replica", len(still_on_victim)),
            ("errors", errors),
            ("no drops", 1 if episodes == 0 else 0),
        )
        if bad
    ]
    rows = [
        Metric(
            f"failover, {label}: dropped clients continuing within 5 s",
            "%",
            None,
            pct,
            note=f"target 100 %; {within} of {episodes} drops (HAProxy had {dropped_expected}"
            f" websockets on replica {victim})",
        ),
        Metric(
            "failover: dropped clients not continuing within 5 s",
            "n",
            None,
            float(episodes - within) if episodes else None,  # no drops: nothing was measured
            0,
            "abs_max",
        ),
        Metric(
            "failover: gap drop → first message, max",
            "s",
            None,
            summary["reconnect"]["max_gap_seconds"],
            CONTINUE_WITHIN,
            "abs_max",
        ),
        Metric("failover: gap drop → first message, p50", "s", None, gaps_info.get("p50")),
        Metric("failover: gap drop → first message, p99", "s", None, gaps_info.get("p99")),
        Metric(
            "failover: messages lost unreported",
            "msgs",
            None,
            float(counts["lost_messages"]),
            0,
            "abs_max",
            f"{counts['lost_requests']} requests; {counts['silent_reconnects']} client(s) "
            "reconnected but got no message (not even the loss notice) before the window ended",
        ),
        Metric("failover: duplicated", "msgs", None, float(counts["duplicated"]), 0, "abs_max"),
        Metric("failover: cross-talk", "msgs", None, float(counts["cross_talk"]), 0, "abs_max"),
        Metric(
            "failover: reported lost (requests)",
            "n",
            None,
            float(counts["reported_lost_requests"]),
            note=f"{counts['reported_lost_messages']} messages; {counts['loss_reports']} loss "
            "notices received",
        ),
        Metric(
            "failover: errors, failed (re)connects, clients stopped",
            "n",
            None,
            float(errors),
            0,
            "abs_max",
        ),
        Metric(
            "failover: kernels lost (listed before, not after)",
            "n",
            None,
            float(len(lost_ids) + len(new_ids)),
            0,
            "abs_max",
        ),
        Metric(
            "failover: kernels started twice or process changed",
            "n",
            None,
            float(len(changed)),
            0,
            "abs_max",
        ),
        Metric(
            "failover: kernels still owned by the killed replica",
            "n",
            None,
            float(len(still_on_victim)),
            0,
            "abs_max",
            f"{k['taken']} taken over per the logs, of {kill['kernels_owned']} it owned",
        ),
        Metric(
            "failover: orphaned kernel processes after shutdown",
            "n",
            None,
            float(len(orphans)),
            0,
            "abs_max",
        ),
        Metric(
            "failover: kill → last take-over logged",
            "s",
            None,
            k["takeover_s"],
            note="from the survivors' logs",
        ),
        Metric(
            "failover: survivors' websocket upgrade after the kill, max",
            "ms",
            None,
            max(
                (
                    r["websocket_upgrade_ms_after_kill"].get("max", 0.0)
                    for r in logs["replicas"].values()
                    if r.get("websocket_upgrade_ms_after_kill")
                ),
                default=None,
            ),
            note="request → 101 in the survivors' access logs (p50/p90 in details)",
        ),
        Metric(
            "failover: live replicas marked DOWN by a late health check",
            "n",
            None,
            float(sum(v for k, v in flaps.items() if k.endswith("DOWN"))),
            note=f"HAProxy, whole run; no replica UP {flaps.get('no replica UP', 0)} time(s)",
        ),
        Metric(
            "failover: proxy → clients MB/s (bare: before the kill)",
            "MB/s",
            before["proxy_out_mb_per_s"],
            after["proxy_out_mb_per_s"],
            note="bytes HAProxy wrote to clients (ss); after = from 5 s after the kill",
        ),
        Metric(
            "failover: round trips/s, estimated (bare: before the kill)",
            "rt/s",
            rt_before,
            rt_after,
            note=f"MB/s ÷ {bytes_per_rt:.0f} bytes per round trip of the window",
        ),
        Metric("failover: round trips/s, whole window", "rt/s", None, summary["round_trips_per_s"]),
        Metric(
            "failover: busiest replica CPU (bare: before the kill)",
            "CPUs",
            max(replicas_before.values(), default=None),
            max(replicas_after.values(), default=None),
            note="one replica's CPU seconds per second",
        ),
        Metric(
            "failover: replica waiting for a CPU, most (bare: before the kill)",
            "s/s",
            _replica_wait(before, None),
            _replica_wait(after, victim),
            note="run-queue wait of a replica's event loop thread per second (schedstat)",
        ),
        Metric(
            "failover: client workers CPU, busiest (bare: before)",
            "CPUs",
            _busiest(before, "client workers"),
            _busiest(after, "client workers"),
            note="one load generator process; all of them in details",
        ),
        Metric(
            "failover: machine busy (bare: before the kill)",
            "CPUs",
            before["machine"]["busy_cpus"],
            after["machine"]["busy_cpus"],
            note=f"of {before['machine']['cpus']}; everything on the machine, others too",
        ),
    ]
    details: dict[str, Any] = {
        "sizes": sizes.__dict__,
        "timings": timings,
        "kill": kill,
        "drop_episodes": episodes,
        "continued_within_5s": within,
        "clients_without_loss_notice": max(0, episodes - counts["loss_reports"]),
        "kernels": {
            "started": len(ids),
            "listed_before": len(k["listed_before"]),
            "listed_after": len(k["listed_after"]),
            "lost": lost_ids,
            "unexpected": new_ids,
            "processes_changed": {
                kid: [k["procs_before"].get(kid), k["procs_after"].get(kid)] for kid in changed
            },
            "owners_before": _tally(k["owners_before"]),
            "owners_after": _tally(k["owners_after"]),
            "taken_over_per_logs": k["taken"],
            "still_on_killed_replica": still_on_victim,
        },
        "shutdown": k["shutdown"] | {"orphans": orphans},
        "cpu": cpu,
        "saturated": saturated,
        "others_busy_cpus": {
            "before_kill": _others(before),
            "after_kill": _others(after),
        },
        "load": {key: v for key, v in summary.items() if key != "config"},
        "config": summary["config"],
        "logs": logs,
        # a "failed_" entry keeps the run's temp dir (replica and HAProxy logs) for a look
        "failed_checks": failed_checks,
        "failed_starts_retried": start_failures,
    }
    return ScenarioResult("ha_failover", rows, details)


def _count_within(summary: dict[str, Any]) -> int:
    """Drops whose gap to the first message was at most CONTINUE_WITHIN (from the samples)."""
    return sum(1 for g in summary["gap_samples"] if g <= CONTINUE_WITHIN)


def _tally(owners: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in owners.values():
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def _others(phase: dict[str, Any]) -> float:
    """CPUs' worth the machine spent on processes outside this scenario (other users)."""
    ours = sum(float(v) for v in phase["busy"].values())
    return round(float(phase["machine"]["busy_cpus"]) - ours, 2)


def _replica_wait(phase: dict[str, Any], dead: int | None) -> float | None:
    """The longest run-queue wait per second of a (live) replica's main thread in *phase*."""
    waits = phase["run_queue_wait_per_pid"]
    values = [
        w
        for name, per in waits.items()
        if name.startswith("replica-") and name != f"replica-{dead}"
        for w in per.values()
    ]
    return max(values, default=None)


def _busiest(phase: dict[str, Any], group: str) -> float | None:
    """The busiest process of *group* in *phase* (CPU seconds per second)."""
    return max(phase["busy_per_pid"].get(group, {}).values(), default=None)


def _rt(mb_per_s: float, bytes_per_rt: float) -> float | None:
    return None if bytes_per_rt <= 0 else round(mb_per_s * 1e6 / bytes_per_rt, 1)


def _saturated(phase: dict[str, Any], when: str) -> list[str]:
    """Processes busier than 0.9 CPU (one event loop each: saturated), and the machine."""
    out = []
    for name, per in phase["busy_per_pid"].items():
        out += [f"{name} pid {p} ({b:.2f}) {when}" for p, b in per.items() if b >= 0.9]
    machine = phase["machine"]
    if machine["busy_cpus"] >= 0.9 * machine["cpus"]:
        out.append(f"machine ({machine['busy_cpus']} of {machine['cpus']} CPUs) {when}")
    return out
