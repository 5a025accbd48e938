"""``kernelfleet hosts check``: can each host run a kernelspec? One row of checks per host.

Each host is checked over its own asyncssh connection (the same SSH settings and
:class:`~kernelfleet.transport.agent_client.SSHTarget` as the gateway's provisioner), all hosts
at once. After the login, three read-only commands run in parallel on that connection:

- ``date`` for the clock skew (host time minus the midpoint of the local send/receive times);
- the host probe (``kernelfleet/launchers/probe.py``, run by the agent's interpreter, as the
  gateway's agent would be) for the spec's files (sha256 of each, compared with this machine's
  copy: this machine is the primary that ``spec sync`` copies from), ``spark-submit``, the
  Spark master's reachability *from the host*, free ports in the port range, R/IRkernel;
- the spec's own interpreter importing the kernel's package (ipykernel, or the spec's ipykernel
  subclass module).

Parameters go to the probes as JSON on stdin; command lines hold only constants and the
admin's interpreter paths, quoted. What the answers mean (and the fix for each failure) is
decided by the pure :mod:`kernelfleet.specs.verdicts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import asyncssh

from kernelfleet.specs.installer import SpecRow
from kernelfleet.specs.manifest import local_manifest
from kernelfleet.specs.verdicts import (
    CHECK_NAMES,
    FAIL,
    OK,
    SKIP,
    CheckSettings,
    HostReport,
    SpecFacts,
    as_json,
    failure_lines,
    master_addresses,
    record_clock,
    record_interpreter,
    record_ports,
    record_probe,
    record_spark,
    record_spec,
    spec_facts,
    summary_rows,
)
from kernelfleet.transport.agent_client import SSHTarget, describe_connect_error

COMMAND_TIMEOUT = 60.0


def probe_source() -> str:
    return resources.files("kernelfleet.launchers").joinpath("probe.py").read_text("utf-8")


def ssh_options(target: SSHTarget) -> dict[str, Any]:
    """asyncssh.connect options for *target*, as the gateway's agent connection uses them
    (short-lived checks: no keepalives)."""
    return target.connect_options(keepalive=False)


async def run_command(
    conn: asyncssh.SSHClientConnection, command: str, stdin: str = ""
) -> tuple[int, str, str]:
    """Run *command* (a fixed shell string) with *stdin*; (exit status, stdout, stderr)."""
    async with asyncio.timeout(COMMAND_TIMEOUT):
        res = await conn.run(command, input=stdin, check=False)
    out = res.stdout if isinstance(res.stdout, str) else ""
    err = res.stderr if isinstance(res.stderr, str) else ""
    return (res.exit_status if res.exit_status is not None else -1), out, err


def python_command(python: str, code: str) -> str:
    return f"exec {shlex.quote(python)} -I -c {shlex.quote(code)}"


IMPORT_CODE = """
import importlib, json, sys
out = {"python": sys.version.split()[0], "modules": {}}
for name in json.loads(sys.stdin.readline()):
    try:
        mod = importlib.import_module(name)
        out["modules"][name] = {"ok": True, "version": str(getattr(mod, "__version__", ""))}
    except BaseException as exc:
        out["modules"][name] = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
print(json.dumps(out))
"""


async def check_host(
    target: SSHTarget, facts: SpecFacts | None, settings: CheckSettings
) -> HostReport:
    report = HostReport(target.host)
    host = target.host
    try:
        async with asyncio.timeout(target.connect_timeout * 2):
            conn = await asyncssh.connect(host, **ssh_options(target))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        _connect_failed(report, target, exc, settings)
        return report
    try:
        report.add("ssh", OK, f"logged in to {target.describe()}")
        report.add("host key", OK, "host key verified")
        await _checks_over(conn, report, target, facts, settings)
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await conn.wait_closed()
    return report


def connect_fix(target: SSHTarget, exc: BaseException, known_hosts_hint: str) -> str:
    """What to do about a failed SSH connection to *target* (host key, login, or none)."""
    host = target.host
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        known = target.known_hosts or known_hosts_hint
        return (
            f"if {host} is genuine: ssh-keyscan -p {target.port} {host} >> {known} "
            "(or point KF_SSH_KNOWN_HOSTS at a file with its key)"
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return (
            f"add the public key of {target.key_file or 'your SSH key'} to "
            f"~{target.user or ''}/.ssh/authorized_keys on {host}, or set KF_SSH_USER / "
            "KF_SSH_KEY to a login that works"
        )
    return (
        f"start sshd on {host} (systemctl start ssh) and check that port {target.port} "
        "is reachable from here (KF_SSH_PORT, firewall)"
    )


def _connect_failed(
    report: HostReport, target: SSHTarget, exc: BaseException, settings: CheckSettings
) -> None:
    reason = describe_connect_error(target, exc)
    fix = connect_fix(target, exc, settings.known_hosts_hint)
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        report.add("ssh", SKIP, "reachable; login not attempted (host key not verified)")
        report.add("host key", FAIL, reason, fix)
    elif isinstance(exc, asyncssh.PermissionDenied):
        report.add("ssh", FAIL, reason, fix)
        report.add("host key", OK, "host key verified")
    else:
        report.add("ssh", FAIL, reason, fix)
        report.add("host key", SKIP, "not checked (no connection)")
    for name in CHECK_NAMES[2:]:
        report.add(name, SKIP, "not checked (no SSH login)")


async def _checks_over(
    conn: asyncssh.SSHClientConnection,
    report: HostReport,
    target: SSHTarget,
    facts: SpecFacts | None,
    settings: CheckSettings,
) -> None:
    probe_input: dict[str, Any] = {}
    if facts is not None:
        probe_input["spec_dir"] = facts.resource_dir
        if facts.spark_home:
            probe_input["spark_home"] = facts.spark_home
        if facts.spark_master:
            probe_input["master"] = master_addresses(facts.spark_master)
        probe_input["r"] = facts.r
        if facts.toree_jar:
            probe_input["paths"] = [facts.toree_jar]
    if not settings.port_range.unrestricted:
        probe_input["port_range"] = [settings.port_range.lo, settings.port_range.hi]

    async def clock() -> tuple[float, float, tuple[int, str, str]]:
        sent = time.time()
        res = await run_command(conn, "exec date +%s.%N")
        return sent, time.time(), res

    async def probe() -> tuple[int, str, str]:
        code = python_command(target.agent_python, probe_source())
        return await run_command(conn, code, json.dumps(probe_input) + "\n")

    async def imports() -> tuple[int, str, str] | None:
        if facts is None or not facts.python or not facts.modules:
            return None
        code = python_command(facts.python, IMPORT_CODE)
        return await run_command(conn, code, json.dumps(list(facts.modules)) + "\n")

    results = await asyncio.gather(clock(), probe(), imports(), return_exceptions=True)
    clock_res, probe_res, import_res = results
    answer = record_probe(report, target, probe_res)
    record_interpreter(report, facts, import_res, answer)
    record_spec(report, facts, answer)
    record_spark(report, facts, answer)
    record_ports(report, settings, answer)
    record_clock(report, settings, clock_res)


async def check_hosts(
    targets: Sequence[SSHTarget], facts: SpecFacts | None, settings: CheckSettings
) -> list[HostReport]:
    """Check every target in parallel; reports in the order of *targets*."""
    return list(await asyncio.gather(*(check_host(t, facts, settings) for t in targets)))


def facts_for(row: SpecRow) -> SpecFacts:
    return spec_facts(row, local_manifest(row.resource_dir))


__all__ = [
    "CHECK_NAMES",
    "CheckSettings",
    "HostReport",
    "SpecFacts",
    "as_json",
    "check_hosts",
    "facts_for",
    "failure_lines",
    "spec_facts",
    "summary_rows",
]
