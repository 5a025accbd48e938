"""``kernelfleet hosts check [--spec NAME] [--hosts H…] [--json]``: argument parsing and output.

SSH settings are the provisioner's (``KF_SSH_USER``, ``KF_SSH_PORT``, ``KF_SSH_KEY``,
``KF_SSH_KNOWN_HOSTS``, ``KF_AGENT_PYTHON``, ``--SSHProvisioner.*``), overridden by the
kernelspec's own provisioner config when ``--spec`` names one, so the check connects exactly as
the gateway will. The checks themselves are in :mod:`kernelfleet.specs.hostcheck`.
"""

from __future__ import annotations

import asyncio
import json
import os

from traitlets import Float, Unicode

from kernelfleet.cli.spec import FleetCommand, KernelfleetCommand, ssh_provisioner, table
from kernelfleet.config import option
from kernelfleet.errors import PublicError
from kernelfleet.specs import hostcheck, installer


class CheckApp(FleetCommand):
    name = "kernelfleet hosts check"
    description = """Check that every host can run a kernelspec: SSH login, host key, the
    agent's Python, the spec's interpreter and kernel package, the spec's files (identical to
    this machine's), spark-submit and the Spark master, free ports, clock skew. Exit status 1
    when a host is not ready."""
    examples = """
    kernelfleet hosts check --hosts=host1,host2
    kernelfleet hosts check --spec=ssh_python_spark --json
    """
    spec = option(
        Unicode("", help="Kernelspec to check the hosts for. Default: host checks only."),
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
            row = installer.find_spec(self.spec_manager(), self.spec) if self.spec else None
            provisioner = ssh_provisioner(self.config, row.provisioner_config if row else None)
            settings = hostcheck.CheckSettings(
                port_range=provisioner.ports(),
                max_clock_skew=self.max_clock_skew,
                known_hosts_hint=os.path.expanduser("~/.ssh/known_hosts"),
            )
        except PublicError as exc:
            self.fail_public(exc)
        targets = [provisioner.target_for(h) for h in self.host_list(provisioner)]
        facts = hostcheck.facts_for(row) if row is not None else None
        reports = asyncio.run(hostcheck.check_hosts(targets, facts, settings))
        if self.json_output:
            print(json.dumps(hostcheck.as_json(reports), indent=2))
        else:
            headers = ["HOST", "STATUS", *(n.upper() for n in hostcheck.CHECK_NAMES)]
            print(table(headers, hostcheck.summary_rows(reports)))
            lines = hostcheck.failure_lines(reports)
            if lines:
                print()
                print("\n".join(lines))
            ready = sum(r.ready for r in reports)
            print(f"\n{ready} of {len(reports)} hosts ready" + (f" for {self.spec}" if row else ""))
        if not all(r.ready for r in reports):
            self.exit(1)


class HostsApp(KernelfleetCommand):
    name = "kernelfleet hosts"
    description = "Check the hosts of the fleet."
    subcommands = {"check": (CheckApp, "Check that every host can run a kernelspec.")}
