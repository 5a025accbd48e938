"""Shared pieces of the benchmark suite: statistics, results, the private Jupyter environment.

Every run gets a private temporary directory holding a ``python3`` kernelspec for this
interpreter, the connection files (``JUPYTER_RUNTIME_DIR``) and the gateway's data directory.
Both sides (bare jupyter_client and the gateway) use the same kernelspec, and every kernel we
start has that directory on its command line, which is how :meth:`BenchEnv.sweep` finds (by pid)
anything left behind after a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The environment the gateway hands a local kernel (KernelRegistry.inherited_envs default);
# bare kernels get the same so both sides start an identical process.
KERNEL_ENV_NAMES = ("PATH", "LANG", "LC_ALL", "TZ")


# -- statistics -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    data = sorted(values)
    if not data:
        raise ValueError("no samples")
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }


# -- results --------------------------------------------------------------------------------


@dataclass
class Metric:
    """One row of the table.

    ``target`` is a ratio kernelfleet/bare: ``kind="max"`` means ratio ≤ target passes (times),
    ``kind="min"`` means ratio ≥ target passes (throughput); ``kind="info"`` has no target.
    """

    name: str
    unit: str
    bare: float | None
    gateway: float | None
    target: float | None = None
    kind: str = "info"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.bare is None or self.gateway is None or self.bare == 0:
            return None
        return self.gateway / self.bare

    @property
    def passed(self) -> bool | None:
        if self.kind == "abs_max":  # an absolute bound on the kernelfleet value
            if self.target is None or self.gateway is None:
                return None
            return self.gateway <= self.target
        ratio = self.ratio
        if self.target is None or ratio is None or self.kind == "info":
            return None
        return ratio <= self.target if self.kind == "max" else ratio >= self.target

    def target_text(self) -> str:
        if self.target is None or self.kind == "info":
            return "—"
        if self.kind == "abs_max":
            return f"≤ {fmt_value(self.target, self.unit)}"
        return f"{'≤' if self.kind == 'max' else '≥'} {self.target:.2f}x"

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.name,
            "unit": self.unit,
            "bare": self.bare,
            "kernelfleet": self.gateway,
            "ratio": self.ratio,
            "target": self.target,
            "target_kind": self.kind,
            "pass": self.passed,
            "note": self.note,
        }


@dataclass
class ScenarioResult:
    """What a scenario function returns: its rows plus free-form details for the JSON."""

    scenario: str
    metrics: list[Metric]
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seconds": round(self.seconds, 2),
            "error": self.error,
            "metrics": [m.as_dict() for m in self.metrics],
            "details": self.details,
        }


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit in {"MB/s", "MB"}:
        return f"{value:.1f} {unit}"
    if unit == "x":
        return f"{value:.3f}x"
    if unit == "%":
        return f"{value:.2f} %"
    return f"{value:g} {unit}"


def render_table(results: list[ScenarioResult]) -> str:
    header = ["metric", "bare", "kernelfleet", "ratio", "target", "pass?"]
    rows: list[list[str]] = []
    for res in results:
        if res.error:
            rows.append([res.scenario, "—", "—", "—", "—", f"ERROR: {res.error[:60]}"])
        for m in res.metrics:
            ratio = m.ratio
            passed = m.passed
            rows.append(
                [
                    m.name,
                    fmt_value(m.bare, m.unit),
                    fmt_value(m.gateway, m.unit),
                    "—" if ratio is None else f"{ratio:.2f}x",
                    m.target_text(),
                    "—" if passed is None else ("PASS" if passed else "FAIL"),
                ]
            )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def write_json(payload: dict[str, Any], path: Path, latest: Path | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2, sort_keys=False, default=str)
    path.write_text(text + "\n")
    if latest is not None and latest.resolve() != path.resolve():
        latest.write_text(text + "\n")


# -- machine --------------------------------------------------------------------------------


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def proc_rss_mb(pid: int) -> float:
    """VmRSS of *pid* in MB (MiB), from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for row in fh:
            if row.startswith("VmRSS:"):
                return int(row.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def proc_cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime of *pid* (all threads) in seconds, from /proc/<pid>/stat.

    ``children=True``: cutime + cstime instead, the CPU of its children that have exited and
    been waited for (for the gateway: the kernels it shut down).
    """
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    i = 13 if children else 11
    return (int(fields[i]) + int(fields[i + 1])) / ticks


def own_children_cpu_seconds() -> float:
    """CPU seconds of this process's exited and waited-for children."""
    t = os.times()
    return t.children_user + t.children_system


# -- environment ----------------------------------------------------------------------------


class BenchEnv:
    """The private Jupyter directories of one run (see module docstring)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="kfbench-"))
        self.jupyter_path = self.root / "jupyter"
        self.runtime_dir = self.root / "runtime"
        self.data_dir = self.root / "gateway-data"
        self.log_dir = self.root / "logs"
        for d in (self.runtime_dir, self.data_dir, self.log_dir):
            d.mkdir(parents=True)
        kdir = self.jupyter_path / "kernels" / "python3"
        kdir.mkdir(parents=True)
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (benchmark)",
            "language": "python",
            "metadata": {},
        }
        (kdir / "kernel.json").write_text(json.dumps(spec))
        self._saved: dict[str, str | None] = {}

    def activate(self) -> None:
        """Point this process (and the gateway subprocess, which inherits it) at our dirs."""
        values = {
            "JUPYTER_PATH": str(self.jupyter_path),
            "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
        for key, value in values.items():
            self._saved[key] = os.environ.get(key)
            os.environ[key] = value

    def kernel_env(self) -> dict[str, str]:
        return {k: os.environ[k] for k in KERNEL_ENV_NAMES if k in os.environ}

    def leftovers(self) -> list[int]:
        """Pids of live processes whose command line mentions our private directory."""
        marker = str(self.root)
        found = []
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read()
            except OSError:
                continue
            if marker.encode() in cmd:
                found.append(int(entry))
        return found

    def sweep(self, grace: float = 3.0) -> list[int]:
        """Kill (by pid) any kernel of ours still alive; returns the pids that were found."""
        pids = self.leftovers()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.leftovers():
            time.sleep(0.1)
        for pid in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def close(self, keep: bool = False) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)
