"""``python -m benchmarks.compare``: the working tree against a base revision, N runs each.

Answers "is each figure of the working tree within 5 % of the base's median, measured in the
same sitting?". The base revision is checked out as a ``git worktree`` under
``/tmp/kernelfleet-bench-base-<shortsha>`` (made once, reused); the working tree is copied to
``/tmp/kernelfleet-bench-head-<digest>`` (tracked and untracked-but-not-ignored files) so that
edits made while the comparison runs do not leak into later head runs (``--live-head`` runs
the checkout itself). Both run with this interpreter (the same .venv): each run is
``python -m benchmarks --json …`` with ``cwd`` and ``PYTHONPATH`` set to its tree. The
editable install's import hook sits after the normal path finder, so the tree's
``kernelfleet`` wins; every run checks that (for itself and for a child started the way the
gateway is) and refuses to measure otherwise.

Runs alternate base, head, base, head, … (``--order abba``: base, head, head, base, …) so drift
in machine load hits both. For every metric of the benchmark JSON the table compares the
kernelfleet figure (absolute: s, ms, MB/s, …), its ratio to the bare limit, the CPU figures
the JSON reports, and — as a control — the bare limit itself, which kernelfleet's code does not
affect (a difference there is machine drift). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
TMP = Path(tempfile.gettempdir())
RUN_OVERHEAD_S = 3.0  # interpreter, imports, the bootstrap's check, the JSON (measured)

#: Reported under "extra info": not counted in the verdict summary or the exit status.
INFO_SCENARIOS = {"concurrent_starts", "pool_start", "reattach_100", "idle_rss", "ssh_idle_100"}
#: Left out of the default selection (RSS / idle CPU, ~75 s per run); ``--all`` adds them.
SKIP_BY_DEFAULT = {"idle_rss", "ssh_idle_100"}
#: Scenarios whose "bare" column is a gateway figure, not the bare limit: labels for that
#: figure and for the ratio.
GATEWAY_BARE_COLUMN = {
    "reattach_100": ("gateway start, empty store", "gateway start, reattaching ÷ empty store")
}

GROUPS = {
    "primary": "figures (kernelfleet absolute, and its ratio to the bare limit)",
    "info": "extra info (not counted in the verdict)",
    "cpu": "CPU (client = the benchmark process; not counted in the verdict)",
    "control": "control: the bare limit in the same runs (kernelfleet code does not affect "
    "it; a difference is machine drift)",
}

# Runs inside each child (``python -c BOOTSTRAP <benchmark args>``, cwd = the tree): checks
# that kernelfleet and benchmarks — and kernelfleet in a child process started the way the
# gateway is started — come from the tree, then runs ``benchmarks`` as ``python -m`` would.
BOOTSTRAP = r"""
import json, os, runpy, subprocess, sys
tree = os.path.realpath(os.environ["KF_COMPARE_TREE"])
import benchmarks, kernelfleet
child = subprocess.run(
    [sys.executable, "-c", "import kernelfleet, sys; sys.stdout.write(kernelfleet.__file__)"],
    capture_output=True, text=True, check=True,
).stdout
seen = {"kernelfleet": kernelfleet.__file__, "benchmarks": benchmarks.__file__,
        "gateway_child_kernelfleet": child}
print("kf-compare-imports: " + json.dumps(seen), file=sys.stderr, flush=True)
bad = {k: v for k, v in seen.items() if not os.path.realpath(v).startswith(tree + os.sep)}
if bad:
    print(f"kf-compare: not imported from {tree}: {bad}", file=sys.stderr)
    sys.exit(3)
sys.argv[0] = "benchmarks"
runpy.run_module("benchmarks", run_name="__main__", alter_sys=True)
"""


# -- trees -----------------------------------------------------------------------------------


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def source_digest(tree: Path) -> str:
    """The benchmark JSON's ``kernelfleet_source_sha1`` for *tree* (same algorithm)."""
    root = tree / "kernelfleet"
    h = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def base_worktree(rev: str) -> tuple[Path, str]:
    """A detached worktree of *rev* under /tmp (made once, reused); returns (path, full sha)."""
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    short = git("rev-parse", "--short=7", sha)
    path = TMP / f"kernelfleet-bench-base-{short}"
    if path.exists():
        head = git("rev-parse", "HEAD", cwd=path)
        if head != sha:
            raise SystemExit(f"{path} is at {head[:12]}, not {sha[:12]}; remove it first")
        dirty = git("status", "--porcelain", cwd=path)
        if dirty:
            raise SystemExit(f"{path} has local changes; remove it first:\n{dirty}")
        print(f"base: reusing worktree {path} ({sha[:12]})", file=sys.stderr)
    else:
        registered = str(path) in git("worktree", "list", "--porcelain")
        force = ["-f"] if registered else []  # registered, but its directory was removed
        git("worktree", "add", *force, "--detach", str(path), sha)
        print(f"base: made worktree {path} ({sha[:12]})", file=sys.stderr)
    return path, sha


def head_snapshot(src: Path) -> tuple[Path, list[str]]:
    """Copy *src*'s tracked and untracked-but-not-ignored files to /tmp (reused by digest)."""
    listed = git("ls-files", "-z", "-co", "--exclude-standard", cwd=src).split("\0")
    files = sorted({f for f in listed if f and (src / f).is_file()})
    h = hashlib.sha1()
    for rel in files:
        h.update(rel.encode() + b"\0" + (src / rel).read_bytes() + b"\0")
    path = TMP / f"kernelfleet-bench-head-{h.hexdigest()[:12]}"
    status = git("status", "--porcelain", cwd=src).splitlines()
    if (path / ".kf-compare-complete").exists():
        print(f"head: reusing snapshot {path} of {src}", file=sys.stderr)
        return path, status
    part = Path(tempfile.mkdtemp(prefix=path.name + ".part-", dir=TMP))
    for rel in files:
        (part / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, part / rel)
    (part / ".kf-compare-complete").write_text(f"{src}\n")
    try:
        part.rename(path)
    except OSError:  # made meanwhile by another comparison
        shutil.rmtree(part, ignore_errors=True)
    print(f"head: snapshot of {src} ({len(status)} changed path(s)) in {path}", file=sys.stderr)
    return path, status


def child_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("KF_BENCH_GATEWAY_CMD", "PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH"):
        if env.pop(name, None):
            print(f"note: {name} is not passed to the benchmark runs", file=sys.stderr)
    env["PYTHONPATH"] = str(tree)
    env["KF_COMPARE_TREE"] = str(tree)
    return env


def list_scenarios(tree: Path) -> dict[str, bool]:
    """``python -m benchmarks --list`` in *tree*: name → runs by default."""
    out = subprocess.run(
        [sys.executable, "-c", BOOTSTRAP, "--list"],
        check=False,
        cwd=tree,
        env=child_env(tree),
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"--list failed in {tree}:\n{out.stderr}{out.stdout}")
    return {
        line.split()[0]: "(only with --only)" not in line
        for line in out.stdout.splitlines()
        if line.strip()
    }


def resolve(want: str, names: Iterable[str]) -> str | None:
    names = list(names)
    if want in names:
        return want
    match = [n for n in names if n.startswith(want)]
    return match[0] if len(match) == 1 else None


# -- figures ---------------------------------------------------------------------------------


@dataclass
class Figure:
    key: str
    scenario: str
    group: str  # primary | info | cpu | control
    unit: str
    better: str  # "lower" | "higher"
    values: dict[str, list[float]] = field(default_factory=lambda: {"base": [], "head": []})


def _median_of(rows: Any, key: str) -> float | None:
    vals = [r[key] for r in rows or [] if isinstance(r, dict) and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def cpu_figures(scenario: str, d: dict[str, Any]) -> list[tuple[str, str, float | None, bool]]:
    """(label, unit, value, is_bare) CPU figures from a scenario's details, where present."""
    out: list[tuple[str, str, float | None, bool]] = []
    if scenario == "cold_start":
        g, b = d.get("gateway_phases_p50") or {}, d.get("bare_phases_p50") or {}
        out += [
            ("cold start: client CPU per start, p50", "s", g.get("client_cpu"), False),
            ("cold start: gateway CPU per start, p50", "s", g.get("gateway_cpu"), False),
            ("cold start: bare client CPU per start, p50", "s", b.get("client_cpu"), True),
        ]
    elif scenario == "execute_rtt":
        c = d.get("cpu_ms_per_execute") or {}
        out += [
            ("execute: client CPU per round trip", "ms", c.get("gw_client"), False),
            ("execute: gateway CPU per round trip", "ms", c.get("gw_gateway"), False),
            # the bare client's CPU is the metric "execute 1+1 CPU per round trip" [bare]
        ]
    elif scenario == "stdout_stream":
        for key, label in (("line_writes", "1 KiB writes"), ("chunk_writes", "1 MiB writes")):
            runs = (d.get(key) or {}).get("runs") or {}
            gw, bare = runs.get("gateway"), runs.get("bare")
            out += [
                (f"stream {label}: client CPU per run", "s", _median_of(gw, "client_cpu"), False),
                (f"stream {label}: gateway CPU per run", "s", _median_of(gw, "gateway_cpu"), False),
                (
                    f"stream {label}: bare client CPU per run",
                    "s",
                    _median_of(bare, "client_cpu"),
                    True,
                ),
            ]
    elif scenario == "concurrent_starts":
        c = d.get("cpu_seconds_per_burst") or {}
        for k, label, bare in (
            ("gw_client", "client", False),
            ("gw_gateway", "gateway", False),
            ("bare_client", "bare client", True),
        ):
            vals = c.get(k) or []
            med = statistics.median(vals) if vals else None
            out.append((f"10 concurrent starts: {label} CPU per burst", "s", med, bare))
    return out


def extract(payload: dict[str, Any]) -> list[tuple[str, str, str, str, str, float]]:
    """(key, scenario, group, unit, better, value) for every figure of one benchmark JSON."""
    rows: list[tuple[str, str, str, str, str, float]] = []
    for res in payload.get("results", []):
        scen = res["scenario"]
        if res.get("error"):
            continue
        for m in res.get("metrics", []):
            name, unit, bare, kf = m["metric"], m["unit"], m["bare"], m["kernelfleet"]
            group = "info" if scen in INFO_SCENARIOS else "primary"
            if "CPU" in name:
                group = "cpu"
            higher = unit == "MB/s" or m.get("target_kind") == "min"
            better = "higher" if higher else "lower"
            if kf is not None:
                rows.append((name, scen, group, unit, better, float(kf)))
            if bare is None:
                continue
            labels = GATEWAY_BARE_COLUMN.get(scen)
            if labels:
                rows.append((labels[0], scen, group, unit, better, float(bare)))
                if kf is not None and bare:
                    rows.append((labels[1], scen, group, "x", better, kf / bare))
                continue
            if kf is not None and bare:
                rows.append((f"{name} ÷ bare", scen, group, "x", better, kf / bare))
            rows.append((f"{name} [bare]", scen, "control", unit, better, float(bare)))
        for label, unit, value, is_bare in cpu_figures(scen, res.get("details") or {}):
            if value is not None:
                grp = "control" if is_bare else "cpu"
                rows.append((label, scen, grp, unit, "lower", float(value)))
    return rows


def verdict(f: Figure, tolerance: float) -> dict[str, Any]:
    base, head = f.values["base"], f.values["head"]
    out: dict[str, Any] = {"better": f.better}
    for side, vals in (("base", base), ("head", head)):
        out[side] = {
            "n": len(vals),
            "median": statistics.median(vals) if vals else None,
            "min": min(vals) if vals else None,
            "max": max(vals) if vals else None,
            "values": vals,
        }
    if not base or not head:
        out.update(ratio=None, gain_pct=None, verdict="only " + ("head" if head else "base"))
        return out
    b, h = out["base"]["median"], out["head"]["median"]
    if b == 0:
        out.update(ratio=None, gain_pct=None, verdict="base is 0")
        return out
    ratio = h / b
    gain = (ratio - 1) * 100 if f.better == "higher" else (1 - ratio) * 100  # >0: head better
    if gain < -tolerance:
        text = f"WORSE by {-gain:.1f}%"
        if out["base"]["min"] <= h <= out["base"]["max"]:
            text += " (in base's range)"
    elif gain > tolerance:
        text = f"better by {gain:.1f}%"
    else:
        how = (
            "±0.0%" if abs(gain) < 0.05 else f"{abs(gain):.1f}% {'better' if gain > 0 else 'worse'}"
        )
        text = f"within {tolerance:g}% ({how})"
    out.update(ratio=ratio, gain_pct=gain, verdict=text)
    return out


# -- output ----------------------------------------------------------------------------------


def num(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def render(figures: list[dict[str, Any]], tolerance: float) -> str:
    header = [
        "figure",
        "unit",
        "better",
        "base med",
        "head med",
        "head/base",
        "base min..max",
        "head min..max",
        "verdict",
    ]
    out: list[str] = []
    for group, title in GROUPS.items():
        rows = []
        for f in (f for f in figures if f["group"] == group):
            b, h = f["base"], f["head"]
            rows.append(
                [
                    f["figure"],
                    f["unit"],
                    "↑" if f["better"] == "higher" else "↓",
                    num(b["median"]),
                    num(h["median"]),
                    "—" if f["ratio"] is None else f"{f['ratio']:.3f}",
                    f"{num(b['min'])}..{num(b['max'])}" if b["n"] else "—",
                    f"{num(h['min'])}..{num(h['max'])}" if h["n"] else "—",
                    f["verdict"] + ("" if b["n"] == h["n"] else f" [n {b['n']}/{h['n']}]"),
                ]
            )
        if not rows:
            continue
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(cells: list[str], widths: list[int] = widths) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        out += [f"\n{title}:", line(header)]
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        out += [line(r) for r in rows]
    out.append(
        f"\nbetter: ↓ lower is better, ↑ higher is better; head/base = head median ÷ base "
        f"median; verdict: head median against base median, tolerance {tolerance:g}%; "
        "'in base's range' = the head median lies within base's min..max (likely noise)."
    )
    return "\n".join(out)


# -- running ---------------------------------------------------------------------------------


_RUNNING: list[subprocess.Popen[str]] = []  # the benchmark run in progress


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM to the comparison: pass it on (the run shuts its kernels and gateways down)."""
    for proc in _RUNNING:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    raise KeyboardInterrupt


def run_one(
    side: str, tree: Path, bench_args: list[str], json_path: Path, log_path: Path, verbose: bool
) -> dict[str, Any]:
    cmd = [sys.executable, "-c", BOOTSTRAP, "--json", str(json_path), *bench_args]
    t0 = time.monotonic()
    imports: dict[str, str] = {}
    kept: list[str] = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=tree,
            env=child_env(tree),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        _RUNNING.append(proc)
        try:
            for line in proc.stdout:
                log.write(line)
                if line.startswith("kf-compare-imports: "):
                    imports = json.loads(line.split(": ", 1)[1])
                elif line.startswith("kept /"):  # the run kept its temp dir (an error)
                    kept.append(line.split(" ", 1)[1].strip())
                if verbose or line.startswith(("-- ", "kf-compare:", "Traceback")):
                    sys.stderr.write(f"    {line}")
            rc = proc.wait()
        except KeyboardInterrupt:  # the run got the SIGINT (or SIGTERM) too: let it clean up
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        finally:
            _RUNNING.remove(proc)
    info: dict[str, Any] = {
        "side": side,
        "returncode": rc,
        "seconds": round(time.monotonic() - t0, 1),
        "json": str(json_path),
        "log": str(log_path),
        "imports": imports,
        "kept_tmp": kept,
    }
    if json_path.exists():
        payload = json.loads(json_path.read_text())
        info.update(
            bench_seconds=payload.get("seconds"),
            kernelfleet_source_sha1=payload.get("kernelfleet_source_sha1"),
            loadavg=[
                payload.get("machine", {}).get("loadavg_before"),
                payload.get("machine", {}).get("loadavg_after"),
            ],
            skipped=payload.get("skipped", {}),
            errors={r["scenario"]: r["error"] for r in payload["results"] if r.get("error")},
            scenario_seconds={r["scenario"]: r["seconds"] for r in payload["results"]},
        )
        info["payload"] = payload
    return info


def estimate(scenarios: list[str], quick: bool) -> tuple[float, list[str]] | None:
    """Seconds one run of *scenarios* took last time (from benchmarks/results/*.json)."""
    seen: dict[str, float] = {}
    sources: set[str] = set()
    files = sorted(RESULTS_DIR.glob("2*.json"), reverse=True)  # <UTC stamp>[-quick].json
    for path in files:
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if bool(payload.get("quick")) != quick:
            continue
        for r in payload.get("results", []):
            if r["scenario"] in scenarios and r["scenario"] not in seen and not r.get("error"):
                seen[r["scenario"]] = float(r["seconds"])
                sources.add(path.name)
    if set(scenarios) - set(seen):
        return None
    return sum(seen.values()) + RUN_OVERHEAD_S, sorted(sources)


def short_errors(info: dict[str, Any]) -> str:
    """The scenario errors of a run, each cut to its last line (the exception)."""
    errors: dict[str, str] = info.get("errors") or {}
    return "; ".join(f"{k}: {v.strip().splitlines()[-1][:160]}" for k, v in errors.items())


def usable(info: dict[str, Any]) -> bool:
    """Did the run produce at least one scenario result?"""
    payload = info.get("payload") or {}
    return any(not r.get("error") for r in payload.get("results", []))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description="The working tree against a base revision: N alternating runs each, "
        "medians compared with a tolerance.",
    )
    p.add_argument("--base", default="main", help="git revision to compare against (main)")
    p.add_argument("--runs", type=int, default=5, help="runs per side (default 5)")
    p.add_argument("--only", metavar="NAME[,NAME]", help="scenarios (names or unique prefixes)")
    p.add_argument("--quick", action="store_true", help="pass --quick to every run")
    p.add_argument(
        "--all",
        action="store_true",
        help=f"without --only: also {', '.join(sorted(SKIP_BY_DEFAULT))} (left out by default)",
    )
    p.add_argument("--tolerance", type=float, default=5.0, help="percent (default 5)")
    p.add_argument(
        "--order",
        choices=("abab", "abba"),
        default="abab",
        help="abab: base, head, base, head, …; abba: base, head, head, base, … (default abab)",
    )
    p.add_argument("--head", type=Path, default=REPO, help=f"the working tree (default {REPO})")
    p.add_argument(
        "--live-head",
        action="store_true",
        help="run the working tree itself, not a snapshot taken at the start",
    )
    p.add_argument("--scenario-timeout", type=float, help="passed to every run")
    p.add_argument("--json", type=Path, help="write the comparison here")
    p.add_argument(
        "--dry-run", action="store_true", help="prepare the trees, print the plan, run nothing"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="echo the runs' output")
    p.add_argument(
        "--report",
        type=Path,
        metavar="COMPARE_JSON",
        help="print the table of an earlier comparison and exit",
    )
    return p.parse_args(argv)


def select(args: argparse.Namespace, lists: dict[str, dict[str, bool]]) -> dict[str, list[str]]:
    """The scenario names to pass as --only to each side."""
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    else:
        wanted = []
        for names in lists.values():
            wanted += [n for n, dflt in names.items() if dflt and n not in wanted]
        if not args.all:
            wanted = [w for w in wanted if w not in SKIP_BY_DEFAULT]
    chosen: dict[str, list[str]] = {}
    for side, names in lists.items():
        chosen[side] = []
        for w in wanted:
            name = resolve(w, names)
            if name is None:
                print(f"note: {w!r} is not a scenario of {side}; not run there", file=sys.stderr)
            elif name not in chosen[side]:
                chosen[side].append(name)
        if not chosen[side]:
            raise SystemExit(f"nothing to run on {side}")
    return chosen


def summarize(figures: list[dict[str, Any]]) -> dict[str, Any]:
    prim = [f for f in figures if f["group"] == "primary"]
    return {
        "primary_figures": len(prim),
        "worse": [f["figure"] for f in prim if f["verdict"].startswith("WORSE")],
        "better": [f["figure"] for f in prim if f["verdict"].startswith("better")],
        "within": sum(f["verdict"].startswith("within") for f in prim),
        "incomplete": [f["figure"] for f in prim if f["ratio"] is None],
    }


def print_report(data: dict[str, Any]) -> None:
    print(render(data["figures"], data["options"]["tolerance"]))
    s = data["summary"]
    print(
        f"\n{s['primary_figures']} figures: {s['within']} within "
        f"{data['options']['tolerance']:g}%, {len(s['better'])} better, "
        f"{len(s['worse'])} WORSE" + (f" ({'; '.join(s['worse'])})" if s["worse"] else "")
    )
    if s["incomplete"]:
        print(f"not on both sides: {'; '.join(s['incomplete'])}")
    control = [
        abs(f["gain_pct"])
        for f in data["figures"]
        if f["group"] == "control" and f["gain_pct"] is not None
    ]
    if control:
        print(
            "control: the bare limit differs between the sides by "
            f"{statistics.median(control):.1f}% "
            f"(median over {len(control)} figures, max {max(control):.1f}%) — machine drift/noise "
            "of that size also moves the kernelfleet figures"
        )
    for side in ("base", "head"):
        secs = [r["seconds"] for r in data["runs"] if r["side"] == side]
        loads = [
            r["loadavg"][0][0]
            for r in data["runs"]
            if r["side"] == side and r.get("loadavg") and r["loadavg"][0]
        ]
        if secs:
            print(
                f"{side}: {data[side]['tree']} — {len(secs)} run(s), "
                f"{statistics.median(secs):.0f} s each (median)"
                + (f", 1-min load average {min(loads):g}..{max(loads):g} at start" if loads else "")
            )
    problems = [
        f"{r['side']} run {r['n']}: exit {r['returncode']} {short_errors(r)}".rstrip()
        for r in data["runs"]
        if r["returncode"] != 0 or r.get("errors")
    ]
    for p in problems:
        print(f"problem: {p}")
    for w in data.get("warnings", []):
        print(f"warning: {w}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        print_report(json.loads(args.report.read_text()))
        return 0
    signal.signal(signal.SIGTERM, _on_sigterm)
    if args.runs < 1:
        raise SystemExit("--runs must be ≥ 1")
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    head_src = args.head.resolve()
    base_tree, base_sha = base_worktree(args.base)
    if args.live_head:
        head_tree, head_status = head_src, git("status", "--porcelain", cwd=head_src).splitlines()
    else:
        head_tree, head_status = head_snapshot(head_src)
    trees = {"base": base_tree, "head": head_tree}
    for tree in trees.values():  # gitignored, so not in the tree; the runs write latest.json
        (tree / "benchmarks" / "results").mkdir(exist_ok=True)
    for tree in trees.values():  # compile once, so no run pays for it (gateway start-up)
        dirs = [
            str(tree / d) for d in ("kernelfleet", "benchmarks", "tests") if (tree / d).is_dir()
        ]
        subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=False)
    lists = {side: list_scenarios(tree) for side, tree in trees.items()}
    only = select(args, lists)
    run_dir = RESULTS_DIR / f"compare-{stamp}"
    out_path = args.json or RESULTS_DIR / f"compare-{stamp}.json"

    unit = ["base", "head"] if args.order == "abab" else ["base", "head", "head", "base"]
    schedule: list[str] = []
    while len(schedule) < 2 * args.runs:
        schedule += unit
    schedule = schedule[: 2 * args.runs]
    print(
        f"base {base_sha[:12]} ({base_tree}) vs head ({head_tree}): {args.runs} run(s) each, "
        f"order {' '.join(s[0].upper() for s in schedule)}; scenarios "
        f"base: {','.join(only['base'])}; head: {','.join(only['head'])}",
        file=sys.stderr,
    )
    est = [estimate(only[side], args.quick) for side in ("base", "head")]
    if est[0] and est[1]:
        total = args.runs * (est[0][0] + est[1][0])
        print(
            f"estimate: ~{est[1][0]:.0f} s per run, ~{total / 60:.0f} min in all "
            f"(scenario times from {', '.join(sorted(set(est[0][1] + est[1][1])))})",
            file=sys.stderr,
        )
    if args.dry_run:
        return 0
    run_dir.mkdir(parents=True, exist_ok=True)

    runs: list[dict[str, Any]] = []
    counts = {"base": 0, "head": 0}
    interrupted = False
    try:
        for i, side in enumerate(schedule):
            counts[side] += 1
            n = counts[side]
            bench_args = ["--only", ",".join(only[side])]
            if args.quick:
                bench_args.append("--quick")
            if args.scenario_timeout:
                bench_args += ["--scenario-timeout", str(args.scenario_timeout)]
            done = [r["seconds"] for r in runs]
            eta = (
                f", ~{statistics.mean(done) * (len(schedule) - i) / 60:.0f} min to go"
                if done
                else ""
            )
            print(f"[{i + 1}/{len(schedule)}] {side} run {n}{eta}", file=sys.stderr, flush=True)
            info = run_one(
                side,
                trees[side],
                bench_args,
                run_dir / f"{side}-{n}.json",
                run_dir / f"{side}-{n}.log",
                args.verbose,
            )
            info["n"] = n
            runs.append(info)
            if info["returncode"] == 3:  # imported the wrong code: nothing to compare
                raise SystemExit(f"{side} run {n} imported the wrong code; see {info['log']}")
            print(
                f"    {side} run {n}: exit {info['returncode']} in {info['seconds']} s"
                + (f"; errors: {short_errors(info)}" if info.get("errors") else ""),
                file=sys.stderr,
                flush=True,
            )
            if n == 1 and not usable(info):  # e.g. the working tree is mid-edit: stop early
                raise SystemExit(
                    f"{side} run 1 measured nothing ({short_errors(info) or 'no JSON'}); "
                    f"log: {info['log']}"
                )
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: comparing the runs completed so far", file=sys.stderr)

    warnings: list[str] = []
    digests = {side: source_digest(tree) for side, tree in trees.items()}
    for r in runs:
        got = r.get("kernelfleet_source_sha1")
        if got and got != digests[r["side"]]:
            warnings.append(
                f"{r['side']} run {r['n']} measured kernelfleet {got}, the tree now has "
                f"{digests[r['side']]} (edited during the comparison?)"
            )
    figures: dict[str, Figure] = {}
    for r in runs:
        payload = r.pop("payload", None)
        if payload is None:
            continue
        for key, scen, group, unit_, better, value in extract(payload):
            f = figures.setdefault(key, Figure(key, scen, group, unit_, better))
            f.values[r["side"]].append(value)
    compared = [
        {"figure": f.key, "scenario": f.scenario, "group": f.group, "unit": f.unit}
        | verdict(f, args.tolerance)
        for f in figures.values()
    ]
    finished = datetime.now(UTC)
    data: dict[str, Any] = {
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "seconds": round((finished - started).total_seconds(), 1),
        "argv": sys.argv[1:] if argv is None else argv,
        "interrupted": interrupted,
        "options": {
            "runs": args.runs,
            "quick": args.quick,
            "tolerance": args.tolerance,
            "order": args.order,
            "only": only,
            "schedule": schedule,
        },
        "base": {
            "rev": args.base,
            "sha": base_sha,
            "tree": str(base_tree),
            "kernelfleet_source_sha1": digests["base"],
        },
        "head": {
            "source": str(head_src),
            "tree": str(head_tree),
            "snapshot": not args.live_head,
            "git_status": head_status,
            "kernelfleet_source_sha1": digests["head"],
        },
        "runs": runs,
        "warnings": warnings,
        "figures": compared,
        "summary": summarize(compared),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print()
    print_report(data)
    print(f"JSON: {out_path} (runs' own JSON and logs: {run_dir})")
    if interrupted:
        return 130
    if any(r["returncode"] != 0 for r in runs):
        return 2
    return 1 if data["summary"]["worse"] else 0


if __name__ == "__main__":
    sys.exit(main())
