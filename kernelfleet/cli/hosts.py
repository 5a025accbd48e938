"""``kernelfleet hosts check [--spec NAME] [--hosts H…] [--json]``: argument parsing and output.

With neither ``--spec`` nor ``--hosts`` it checks every installed SSH kernelspec on its hosts,
and the cluster of every YARN and Kubernetes kernelspec.

SSH settings are the provisioner's (``KF_SSH_USER``, ``KF_SSH_PORT``, ``KF_SSH_KEY``,
``KF_SSH_KNOWN_HOSTS``, ``KF_AGENT_PYTHON``, ``--SSHProvisioner.*``), overridden by the
kernelspec's own provisioner config when ``--spec`` names one, so the check connects exactly as
the gateway will; they are read through the ssh spec kind
(:func:`kernelfleet.specs.kinds.ssh.provisioner_settings`), as ``spec sync`` reads them. The
checks themselves are in :mod:`kernelfleet.specs.hostcheck`.

A YARN kernelspec (``kernelfleet-yarn``) is checked without SSH, one row for its cluster
(:mod:`kernelfleet.specs.yarncheck`), with the YARN provisioner's settings (``KF_YARN_*``,
``c.YarnProvisioner.*`` in the config file, then the kernelspec's config), read through the
yarn spec kind (:func:`kernelfleet.specs.kinds.yarn.provisioner_settings`). A Kubernetes
kernelspec (``kernelfleet-k8s``) likewise: one row for its cluster, asked through the API server
under the gateway's own identity (:mod:`kernelfleet.specs.k8scheck`), with the provisioner's
settings (``KF_K8S_*``, ``c.K8sProvisioner.*``, then the kernelspec's config). A Docker
kernelspec (``kernelfleet-docker``): one row for its engine, asked through its API as the
gateway's user (:mod:`kernelfleet.specs.dockercheck`), with the provisioner's settings
(``KF_DOCKER_*``, ``c.DockerProvisioner.*``, then the kernelspec's config).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from textwrap import dedent
from typing import Any

from traitlets import Float, TraitError, Unicode

from kernelfleet.cli.base import KernelfleetCommand, table
from kernelfleet.cli.spec import FleetCommand
from kernelfleet.config import EnvError, option
from kernelfleet.errors import PublicError
from kernelfleet.specs import dockercheck, hostcheck, installer, k8scheck, yarncheck
from kernelfleet.specs.kinds import docker as docker_kind
from kernelfleet.specs.kinds import k8s as k8s_kind
from kernelfleet.specs.kinds import ssh as ssh_kind
from kernelfleet.specs.kinds import yarn as yarn_kind
from kernelfleet.specs.verdicts import HostReport

YARN = yarn_kind.YarnKind.provisioner_name
K8S = k8s_kind.K8sKind.provisioner_name
DOCKER = docker_kind.DockerKind.provisioner_name


@dataclass(frozen=True)
class Job:
    """One set of checks: a kernelspec (or None: --hosts alone) and either the SSH
    provisioner's settings (hosts to check), a YARN or Kubernetes cluster or a Docker engine
    to check."""

    row: installer.SpecRow | None
    provisioner: Any = None
    yarn: yarncheck.YarnTarget | None = None
    k8s: k8scheck.K8sTarget | None = None
    docker: dockercheck.DockerTarget | None = None


class CheckApp(FleetCommand):
    name = "kernelfleet hosts check"
    description = """Check that every host can run a kernelspec: SSH login, host key, the
    agent's Python, the spec's interpreter and kernel package, the spec's files (identical to
    this machine's), spark-submit and the Spark master, free ports, clock skew. For a YARN
    kernelspec, its cluster instead: the ResourceManagers' HA states, the NodeManagers, the
    queue, and spark-submit and the Hadoop configuration on this machine. For a Kubernetes
    kernelspec, its cluster: the API server, the gateway's rights there, the namespaces, the
    image on the nodes and the pod template. For a Docker kernelspec, its engine: reachable,
    its API version, the image and network on it, the swarm, and who can use its socket. Exit
    status 1 when a host (or cluster, or engine) is not ready."""
    examples = dedent("""
        kernelfleet hosts check             # every SSH spec's hosts, every cluster spec's cluster
        kernelfleet hosts check --hosts=host1,host2
        kernelfleet hosts check --spec=ssh_python_spark --json
        kernelfleet hosts check --spec=yarn_python
        kernelfleet hosts check --spec=k8s_python --json
        kernelfleet hosts check --spec=docker_python
        """)
    spec = option(
        Unicode(
            "",
            help="Kernelspec to check the hosts (or YARN or Kubernetes cluster, or Docker "
            "engine) for. Default: with --hosts, host checks only; without, every installed SSH "
            "kernelspec and its hosts, every YARN and Kubernetes kernelspec's cluster and every "
            "Docker kernelspec's engine.",
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

    def _jobs(self) -> list[Job]:
        """What to check: the named spec, the --hosts given, or — with neither — every
        installed SSH kernelspec (on its hosts) and YARN or Kubernetes kernelspec (its
        cluster)."""
        ksm = self.spec_manager()
        if self.spec:
            rows: list[installer.SpecRow | None] = [installer.find_spec(ksm, self.spec)]
        elif self.hosts:
            rows = [None]
        else:
            ssh = ssh_kind.SSHKind.provisioner_name
            rows = [
                r
                for r in installer.list_specs(ksm)
                if (r.provisioner == ssh and r.hosts) or r.provisioner in (YARN, K8S, DOCKER)
            ]
            if not rows:
                self.fail(
                    "no hosts to check: no installed kernelspec runs on SSH hosts, YARN, "
                    "Kubernetes or Docker. "
                    "Pass --hosts, or install one with 'kernelfleet spec install ssh'.",
                    code=2,
                )
        jobs = []
        for row in rows:
            if row is not None and row.provisioner == YARN:
                if self.hosts:
                    self.fail(
                        f"--hosts does not apply to kernelspec {row.name}: its kernels run where "
                        "YARN puts them (its cluster is checked instead)",
                        code=2,
                    )
                try:
                    settings = yarn_kind.provisioner_settings(self.config, row.provisioner_config)
                except (EnvError, TraitError) as exc:
                    self.fail(f"kernelspec {row.name}: {exc}", code=2)
                jobs.append(Job(row, yarn=yarncheck.target_for(row, settings)))
                continue
            if row is not None and row.provisioner == K8S:
                jobs.append(Job(row, k8s=self._k8s_target(row)))
                continue
            if row is not None and row.provisioner == DOCKER:
                jobs.append(Job(row, docker=self._docker_target(row)))
                continue
            spec_config = row.provisioner_config if row else None
            provisioner = ssh_kind.provisioner_settings(self.config, spec_config)
            provisioner.ports()  # a bad port_range is an error before anything connects
            jobs.append(Job(row, provisioner))
        return jobs

    def _k8s_target(self, row: installer.SpecRow) -> k8scheck.K8sTarget:
        if self.hosts:
            self.fail(
                f"--hosts does not apply to kernelspec {row.name}: its kernels run where "
                "Kubernetes schedules their pods (its cluster is checked instead)",
                code=2,
            )
        try:
            settings = k8s_kind.provisioner_settings(self.config, row.provisioner_config)
            return k8scheck.target_for(row, settings)
        except (EnvError, TraitError, PublicError) as exc:
            self.fail(f"kernelspec {row.name}: {getattr(exc, 'message', exc)}", code=2)

    def _docker_target(self, row: installer.SpecRow) -> dockercheck.DockerTarget:
        if self.hosts:
            self.fail(
                f"--hosts does not apply to kernelspec {row.name}: its kernels run on its "
                "Docker engine (the engine is checked instead)",
                code=2,
            )
        try:
            settings = docker_kind.provisioner_settings(self.config, row.provisioner_config)
            return dockercheck.target_for(row, settings)
        except (EnvError, TraitError, PublicError) as exc:
            self.fail(f"kernelspec {row.name}: {getattr(exc, 'message', exc)}", code=2)

    async def _check_all(
        self, jobs: list[Job]
    ) -> list[tuple[installer.SpecRow | None, list[HostReport]]]:
        results: list[tuple[installer.SpecRow | None, list[HostReport]]] = []
        known_hosts_hint = os.path.expanduser("~/.ssh/known_hosts")  # noqa: ASYNC240 (no I/O)
        for job in jobs:
            row, provisioner = job.row, job.provisioner
            if job.yarn is not None:
                results.append((row, [await yarncheck.check_cluster(job.yarn)]))
                continue
            if job.k8s is not None:
                results.append((row, [await k8scheck.check_cluster(job.k8s)]))
                continue
            if job.docker is not None:
                results.append((row, [await dockercheck.check_engine(job.docker)]))
                continue
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
        provisioner = row.provisioner if row is not None else ""
        cluster = {YARN: "YARN cluster", K8S: "Kubernetes cluster", DOCKER: "Docker engine"}.get(
            provisioner
        )
        names = {
            YARN: yarncheck.YARN_CHECK_NAMES,
            K8S: k8scheck.K8S_CHECK_NAMES,
            DOCKER: dockercheck.DOCKER_CHECK_NAMES,
        }.get(provisioner, hostcheck.CHECK_NAMES)
        first = "ENGINE" if provisioner == DOCKER else "CLUSTER" if cluster else "HOST"
        headers = [first, "STATUS", *(n.upper() for n in names)]
        if provisioner == DOCKER:  # its rows may hold warnings besides faults
            rows, lines = (
                dockercheck.summary_rows(reports, names),
                dockercheck.report_lines(reports),
            )
        else:
            rows, lines = hostcheck.summary_rows(reports, names), hostcheck.failure_lines(reports)
        print(table(headers, rows))
        if lines:
            print()
            print("\n".join(lines))
        ready = sum(r.ready for r in reports)
        if cluster and row is not None:
            print(f"\n{cluster} {'ready' if ready else 'NOT READY'} for {row.name}")
        else:
            print(f"\n{ready} of {len(reports)} hosts ready" + (f" for {row.name}" if row else ""))
        if row is not None and not self.spec:
            print()


class HostsApp(KernelfleetCommand):
    name = "kernelfleet hosts"
    description = "Check the hosts of the fleet."
    subcommands = {"check": (CheckApp, "Check that every host can run a kernelspec.")}
