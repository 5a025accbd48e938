"""What ``kernelfleet hosts check`` concludes from what it saw on a host (pure, no I/O).

:func:`spec_facts` reads what a kernelspec needs from a host out of its kernel.json; the
``record_*`` functions turn the answers of the commands run on the host (see
:mod:`kernelfleet.specs.hostcheck`) into rows of :class:`Check` — each failed one with its fix.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kernelfleet.specs.installer import SpecRow
from kernelfleet.specs.manifest import Manifest, diff_manifests
from kernelfleet.transport.agent_client import SSHTarget
from kernelfleet.transport.protocol import PortRange

OK, FAIL, SKIP = "ok", "fail", "skip"
CHECK_NAMES = (
    "ssh",
    "host key",
    "agent",
    "interpreter",
    "kernel",
    "spec",
    "spark",
    "ports",
    "clock",
)
_SPARK_MASTER = re.compile(r"^spark://(.+)$")


@dataclass(frozen=True)
class SpecFacts:
    """What a kernelspec needs from a host, read from its kernel.json (pure)."""

    name: str
    resource_dir: str
    language: str
    python: str | None
    modules: tuple[str, ...]
    r: bool
    spark_home: str | None
    spark_master: str | None
    manifest: Manifest
    toree_jar: str | None = None


def kernel_class_module(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        value = None
        if arg.startswith("--IPKernelApp.kernel_class="):
            value = arg.split("=", 1)[1]
        elif arg == "--kernel-class" and i + 1 < len(argv):
            value = argv[i + 1]
        if value and "." in value:
            return value.rsplit(".", 1)[0]
    return None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def spec_facts(row: SpecRow, manifest: Manifest) -> SpecFacts:
    spec = row.spec
    argv = [str(a) for a in spec.get("argv") or []]
    env: dict[str, Any] = _mapping(spec.get("env"))
    ours = _mapping(_mapping(spec.get("metadata")).get("kernelfleet"))
    language = str(ours.get("language") or spec.get("language") or "").lower()
    python: str | None = None
    if isinstance(ours.get("python"), str):
        python = ours["python"]
    elif len(argv) >= 3 and argv[1:3] == ["-m", "ipykernel_launcher"]:
        python = argv[0]
    elif isinstance(env.get("PYSPARK_PYTHON"), str):
        python = env["PYSPARK_PYTHON"]
    modules: tuple[str, ...] = ()
    if language == "python":
        extra = kernel_class_module(argv)
        modules = ("ipykernel",) + ((extra,) if extra and extra != "ipykernel.ipkernel" else ())
    spark = _mapping(ours.get("spark")) or None
    spark_home = env.get("SPARK_HOME") if isinstance(env.get("SPARK_HOME"), str) else None
    master = spark.get("master") if spark else None
    return SpecFacts(
        name=row.name,
        resource_dir=row.resource_dir,
        language=language,
        python=python,
        modules=modules,
        r=language == "r",
        spark_home=spark_home if spark or spark_home else None,
        spark_master=str(master) if master else None,
        manifest=manifest,
        toree_jar=str(env["TOREE_JAR"]) if language == "scala" and env.get("TOREE_JAR") else None,
    )


def master_addresses(master: str | None) -> list[tuple[str, int]]:
    """``spark://a:7077,b:7077`` → [(a, 7077), (b, 7077)]; other masters: []."""
    match = _SPARK_MASTER.match(master or "")
    if not match:
        return []
    out = []
    for part in match.group(1).split(","):
        host, _, port = part.rpartition(":")
        if host and port.isdigit():
            out.append((host.strip("[]"), int(port)))
    return out


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, str]:
        out = {"name": self.name, "status": self.status, "detail": self.detail}
        if self.fix:
            out["fix"] = self.fix
        return out


@dataclass
class HostReport:
    host: str
    checks: list[Check] = field(default_factory=list)
    hostname: str = ""

    @property
    def ready(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def get(self, name: str) -> Check | None:
        for check in self.checks:
            if check.name == name:
                return check
        return None

    def add(self, name: str, status: str, detail: str, fix: str = "") -> None:
        self.checks.append(Check(name, status, detail, fix))

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "hostname": self.hostname,
            "ready": self.ready,
            "checks": [c.as_json() for c in self.checks],
        }


@dataclass(frozen=True)
class CheckSettings:
    port_range: PortRange = field(default_factory=lambda: PortRange(0, 0))
    max_clock_skew: float = 2.0
    known_hosts_hint: str = "~/.ssh/known_hosts"


def json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    return None


def failure_text(res: Any) -> str:
    if isinstance(res, BaseException):
        return f"{type(res).__name__}: {res}"
    code, out, err = res
    text = (err or out).strip()
    return f"exit status {code}: {text[-300:]}" if text else f"exit status {code}"


def record_probe(report: HostReport, target: SSHTarget, res: Any) -> dict[str, Any] | None:
    answer = None if isinstance(res, BaseException) or res[0] != 0 else json_line(res[1])
    if answer is None:
        report.add(
            "agent",
            FAIL,
            f"{target.agent_python} does not run: {failure_text(res)}",
            f"install Python 3.9+ on {target.host} or set KF_AGENT_PYTHON to its path "
            "(the gateway's host agent runs with it)",
        )
        return None
    report.hostname = str(answer.get("hostname", ""))
    report.add("agent", OK, f"{target.agent_python} is Python {answer.get('python')}")
    return answer


def record_interpreter(
    report: HostReport, facts: SpecFacts | None, res: Any, answer: dict[str, Any] | None
) -> None:
    host = report.host
    if facts is None:
        report.add("interpreter", SKIP, "no --spec given")
        report.add("kernel", SKIP, "no --spec given")
        return
    if facts.r:
        r = (answer or {}).get("r")
        if not isinstance(r, dict):
            report.add("interpreter", SKIP, "not checked (the probe did not run)")
            report.add("kernel", SKIP, "not checked (the probe did not run)")
        elif not r.get("runs"):
            report.add(
                "interpreter",
                FAIL,
                f"R does not run: {r.get('error')}",
                f"install R on {host} (apt-get install r-base-core)",
            )
            report.add("kernel", SKIP, "not checked (R does not run)")
        else:
            report.add("interpreter", OK, str(r.get("version")))
            if r.get("irkernel"):
                report.add("kernel", OK, f"IRkernel {r['irkernel']}")
            else:
                report.add(
                    "kernel",
                    FAIL,
                    f"IRkernel is not installed: {r.get('error', '')}"[:400],
                    f"install IRkernel on {host} (apt-get install r-cran-irkernel)",
                )
        return
    if facts.toree_jar:
        report.add("interpreter", SKIP, "Scala runs in spark-submit's JVM (see spark)")
        found = ((answer or {}).get("paths") or {}).get(facts.toree_jar)
        if found is None:
            report.add("kernel", SKIP, "not checked (the probe did not run)")
        elif found:
            report.add("kernel", OK, f"Apache Toree jar {facts.toree_jar}")
        else:
            report.add(
                "kernel",
                FAIL,
                f"Apache Toree jar {facts.toree_jar} not found",
                f"install Apache Toree on {host} (pip install apache-toree, Spark 3.5) or "
                "reinstall the spec with --toree-jar set to its assembly jar",
            )
        return
    if res is None:
        report.add("interpreter", SKIP, "the spec names no Python interpreter")
        report.add("kernel", SKIP, "not checked")
        return
    reply = None if isinstance(res, BaseException) or res[0] != 0 else json_line(res[1])
    python = facts.python or "?"
    if reply is None:
        report.add(
            "interpreter",
            FAIL,
            f"{python} does not run: {failure_text(res)}",
            f"install that Python on {host}, or reinstall the spec with --python set to an "
            "interpreter that exists on every host",
        )
        report.add("kernel", SKIP, "not checked (the interpreter does not run)")
        return
    report.add("interpreter", OK, f"{python} (Python {reply.get('python')})")
    modules = reply.get("modules") or {}
    missing = [(n, m.get("error", "")) for n, m in modules.items() if not m.get("ok")]
    if missing:
        names = ", ".join(n for n, _ in missing)
        report.add(
            "kernel",
            FAIL,
            f"cannot import {names}: {missing[0][1]}"[:400],
            f"{python} -m pip install {' '.join(n.split('.')[0] for n, _ in missing)} on {host}",
        )
    else:
        report.add(
            "kernel",
            OK,
            ", ".join(f"{n} {m.get('version', '')}".strip() for n, m in modules.items()),
        )


def record_spec(report: HostReport, facts: SpecFacts | None, answer: dict[str, Any] | None) -> None:
    if facts is None:
        report.add("spec", SKIP, "no --spec given")
        return
    if answer is None:
        report.add("spec", SKIP, "not checked (the probe did not run)")
        return
    fix = f"kernelfleet spec sync {facts.name} --hosts {report.host}"
    remote = answer.get("manifest")
    if not isinstance(remote, dict):
        report.add("spec", FAIL, f"kernelspec {facts.name} is missing at {facts.resource_dir}", fix)
        return
    changed, missing, extra = diff_manifests(facts.manifest, remote)
    if changed or missing or extra:
        parts = []
        if changed:
            parts.append(f"differs: {', '.join(changed[:5])}")
        if missing:
            parts.append(f"missing: {', '.join(missing[:5])}")
        if extra:
            parts.append(f"extra: {', '.join(extra[:5])}")
        report.add("spec", FAIL, f"not identical to this machine's copy ({'; '.join(parts)})", fix)
        return
    report.add("spec", OK, f"identical ({len(remote)} files, sha256)")


def record_spark(
    report: HostReport, facts: SpecFacts | None, answer: dict[str, Any] | None
) -> None:
    if facts is None or not facts.spark_home:
        report.add("spark", SKIP, "not a Spark spec")
        return
    if answer is None:
        report.add("spark", SKIP, "not checked (the probe did not run)")
        return
    submit = answer.get("spark_submit") or {}
    if not submit.get("ok"):
        report.add(
            "spark",
            FAIL,
            f"{submit.get('path')} not found or not executable",
            f"install Spark at {facts.spark_home} on {report.host}, or reinstall the spec with "
            "--spark-home set to where Spark is on every host",
        )
        return
    masters = answer.get("master") or []
    down = [m for m in masters if not m.get("ok")]
    if down:
        report.add(
            "spark",
            FAIL,
            f"spark-submit found; master {down[0]['address']} unreachable from "
            f"{report.host}: {down[0].get('error')}",
            f"start the Spark master at {down[0]['address']} or fix --spark-master; check "
            f"that {report.host} may connect to it (firewall, routes)",
        )
        return
    reach = (
        f"master {', '.join(m['address'] for m in masters)} reachable"
        if masters
        else (f"master {facts.spark_master} not checked")
    )
    report.add("spark", OK, f"spark-submit found; {reach}")


def record_ports(
    report: HostReport, settings: CheckSettings, answer: dict[str, Any] | None
) -> None:
    pr = settings.port_range
    if pr.unrestricted:
        report.add("ports", OK, "any free port (no port_range)")
        return
    ports = (answer or {}).get("ports")
    if not isinstance(ports, dict):
        report.add("ports", SKIP, "not checked (the probe did not run)")
        return
    free, tried = int(ports.get("free", 0)), int(ports.get("tried", 0))
    text = f"{free} of {tried} ports free in {pr.lo}..{pr.hi}"
    if free < 5:
        report.add(
            "ports",
            FAIL,
            text + " (a kernel needs 5)",
            f"stop what listens on {pr.lo}..{pr.hi} on {report.host}, or widen port_range",
        )
    else:
        report.add("ports", OK, text)


def record_clock(report: HostReport, settings: CheckSettings, res: Any) -> None:
    if isinstance(res, BaseException) or res[2][0] != 0:
        report.add("clock", SKIP, "could not read the host's clock")
        return
    sent, received, (_, out, _) = res
    try:
        remote = float(out.strip())
    except ValueError:
        report.add("clock", SKIP, f"unexpected 'date' output {out.strip()[:40]!r}")
        return
    skew = remote - (sent + received) / 2
    text = f"skew {skew:+.2f} s (±{(received - sent) / 2:.2f})"
    if abs(skew) > settings.max_clock_skew:
        report.add(
            "clock",
            FAIL,
            text + f", more than {settings.max_clock_skew:g} s",
            f"synchronise the clock of {report.host} (chrony or systemd-timesyncd)",
        )
    else:
        report.add("clock", OK, text)


def summary_rows(
    reports: Sequence[HostReport], names: Sequence[str] = CHECK_NAMES
) -> list[list[str]]:
    """One table row per report: host, readiness, then a mark per check of *names*."""
    marks = {OK: "ok", FAIL: "FAIL", SKIP: "-"}
    rows = []
    for rep in reports:
        row = [rep.host, "ready" if rep.ready else "NOT READY"]
        for name in names:
            check = rep.get(name)
            row.append(marks[check.status] if check else "-")
        rows.append(row)
    return rows


def failure_lines(reports: Sequence[HostReport]) -> list[str]:
    lines = []
    for rep in reports:
        for check in rep.checks:
            if check.status == FAIL:
                lines.append(f"{rep.host}: {check.name}: {check.detail}")
                lines.append(f"    fix: {check.fix}")
    return lines


def as_json(reports: Sequence[HostReport]) -> dict[str, Any]:
    return {
        "ready": all(r.ready for r in reports),
        "hosts": [r.as_json() for r in reports],
    }
