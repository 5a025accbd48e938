"""``kernelfleet hosts check [--spec NAME] [--hosts H…] [--json]``: argument parsing and output.

With neither ``--spec`` nor ``--hosts`` it checks every installed SSH kernelspec on its hosts.

SSH settings are the provisioner's (``KF_SSH_USER``, ``KF_SSH_PORT``, ``KF_SSH_KEY``,
``KF_SSH_KNOWN_HOSTS``, ``KF_AGENT_PYTHON``, ``--SSHProvisioner.*``), overridden by the
kernelspec's own provisioner config when ``--spec`` names one, so the check connects exactly as
the gateway will; they are read through the ssh spec kind
(:func:`kernelfleet.specs.kinds.ssh.provisioner_settings`), as ``spec sync`` reads them. The
checks themselves are in :mod:`kernelfleet.specs.hostcheck`.
"""

from __future__ import annotations

import asyncio
import json
import os
from textwrap import dedent
from typing import Any

from traitlets import Float, Unicode

from kernelfleet.cli.base import KernelfleetCommand, table
from kernelfleet.cli.spec import FleetCommand
from kernelfleet.config import option
from kernelfleet.errors import PublicError
from kernelfleet.specs import hostcheck, installer
from kernelfleet.specs.kinds import ssh as ssh_kind
from kernelfleet.specs.verdicts import HostReport


class CheckApp(FleetCommand):
    name = "kernelfleet hosts check"
    description = """Check that every host can run a kernelspec: SSH login, host key, the
    agent's Python, the spec's interpreter and kernel package, the spec's files (identical to
    this machine's), spark-submit and the Spark master, free ports, clock skew. Exit status 1
    when a host is not ready."""
    examples = dedent("""
        kernelfleet hosts check                     # the hosts of every SSH kernelspec
        kernelfleet hosts check --hosts=host1,host2
        kernelfleet hosts check --spec=ssh_python_spark --json
        """)
    spec = option(
        Unicode(
            "",
            help="Kernelspec to check the hosts for. Default: with --hosts, host checks "
            "only; without, every installed SSH kernelspec and its hosts.",
        ),
        "KF_CHECK_SPEC",
    )
    max_clock_skew = option(
        Float(2.0, help="Largest accepted clock difference with a host, in seconds. Default: 2."),
        "KF_CHECK_MAX_CLOCK_SKEW",
    )
    aliases = {
        "spec": "CheckApp.spec",
        "hosts": "CheckApp.hosts",
        "prefix": "CheckApp.prefix",
        "max-clock-skew": "CheckApp.max_clock_skew",
    }
    flags = {"json": ({"CheckApp": {"json_output": True}}, "Print JSON instead of a table.")}

    def start(self) -> None:
        try:
            jobs = self._jobs()
        except PublicError as exc:
            self.fail_public(exc)
        results = asyncio.run(self._check_all(jobs))
        ready = all(r.ready for _, reports in results for r in reports)
        if self.json_output:
            if self.spec or self.hosts:
                data = hostcheck.as_json(results[0][1])
            else:  # every SSH kernelspec: one entry each
                specs = [
                    {"spec": row.name if row else None, **hostcheck.as_json(reports)}
                    for row, reports in results
                ]
                data = {"ready": ready, "specs": specs}
            print(json.dumps(data, indent=2))
        else:
            for row, reports in results:
                self._print(row, reports)
        if not ready:
            self.exit(1)

    def _jobs(self) -> list[tuple[installer.SpecRow | None, Any]]:
        """(kernelspec or None, provisioner settings) for each set of hosts to check: the
        named spec, the --hosts given, or — with neither — every installed SSH kernelspec."""
        ksm = self.spec_manager()
        if self.spec:
            rows: list[installer.SpecRow | None] = [installer.find_spec(ksm, self.spec)]
        elif self.hosts:
            rows = [None]
        else:
            ssh = ssh_kind.SSHKind.provisioner_name
            rows = [r for r in installer.list_specs(ksm) if r.provisioner == ssh and r.hosts]
            if not rows:
                self.fail(
                    "no hosts to check: no installed kernelspec runs on SSH hosts. Pass "
                    "--hosts, or install one with 'kernelfleet spec install ssh'.",
                    code=2,
                )
        jobs = []
        for row in rows:
            spec_config = row.provisioner_config if row else None
            provisioner = ssh_kind.provisioner_settings(self.config, spec_config)
            provisioner.ports()  # a bad port_range is an error before anything connects
            jobs.append((row, provisioner))
        return jobs

    async def _check_all(
        self, jobs: list[tuple[installer.SpecRow | None, Any]]
    ) -> list[tuple[installer.SpecRow | None, list[HostReport]]]:
        results = []
        known_hosts_hint = os.path.expanduser("~/.ssh/known_hosts")  # noqa: ASYNC240 (no I/O)
        for row, provisioner in jobs:
            settings = hostcheck.CheckSettings(
                port_range=provisioner.ports(),
                max_clock_skew=self.max_clock_skew,
                known_hosts_hint=known_hosts_hint,
            )
            targets = [provisioner.target_for(h) for h in self.host_list(provisioner)]
            facts = hostcheck.facts_for(row) if row is not None else None
            results.append((row, await hostcheck.check_hosts(targets, facts, settings)))
        return results

    def _print(self, row: installer.SpecRow | None, reports: list[HostReport]) -> None:
        if row is not None and not self.spec:
            print(f"== {row.name} ==")
        headers = ["HOST", "STATUS", *(n.upper() for n in hostcheck.CHECK_NAMES)]
        print(table(headers, hostcheck.summary_rows(reports)))
        lines = hostcheck.failure_lines(reports)
        if lines:
            print()
            print("\n".join(lines))
        ready = sum(r.ready for r in reports)
        print(f"\n{ready} of {len(reports)} hosts ready" + (f" for {row.name}" if row else ""))
        if row is not None and not self.spec:
            print()


class HostsApp(KernelfleetCommand):
    name = "kernelfleet hosts"
    description = "Check the hosts of the fleet."
    subcommands = {"check": (CheckApp, "Check that every host can run a kernelspec.")}
