"""End to end on real SSH hosts: spec install ssh → hosts check → spec sync → hosts check →
a kernel from that spec runs on a host through the gateway; and `hosts check` catching real
faults (spec missing on a host, a python without ipykernel, sshd stopped, unknown host key),
each with its fix; `spec sync` carrying on past a failing host and skipping unchanged files.

The specs are installed under a /tmp prefix on this side: the testbed hosts have a private
/tmp, so a spec is truly absent on a host until `spec sync` copies it there (everything else of
the filesystem, e.g. the interpreter, is shared, as the "same path everywhere" rule wants).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.cli.hosts import CheckApp
from kernelfleet.cli.spec import RemoveApp, SSHInstallApp, SyncApp
from kernelfleet.client import stdout_of
from tests.conftest import client_for, temp_gateway
from tests.specs.fleet import cli_env, gateway_env_for, kf

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(180)]

SPEC = "kf_e2e"


APPS: dict[tuple[str, ...], type[Any]] = {
    ("hosts", "check"): CheckApp,
    ("spec", "sync"): SyncApp,
    ("spec", "install", "ssh"): SSHInstallApp,
    ("spec", "remove"): RemoveApp,
}


class Fleet:
    def __init__(self, bed: Any, prefix: Path):
        self.bed = bed
        self.prefix = prefix
        self.jupyter_path = prefix / "share" / "jupyter"
        self.env = cli_env(bed, self.jupyter_path)
        self.ips = [h.ip for h in bed.hosts]

    def kf(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The command, run in this process (the console script costs a second per call);
        :func:`kf` runs the real console script where that matters."""
        found = [(words, cls) for words, cls in APPS.items() if args[: len(words)] == words]
        if not found:
            return kf(self.env, *args)
        (words, app_cls) = found[0]
        argv = list(args[len(words) :])
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                app = app_cls()
                app.initialize(argv)
                app.start()
            except SystemExit as exc:
                code = int(exc.code or 0)
        return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())

    def check(self, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
        res = self.kf("hosts", "check", "--json", *args)
        assert res.stdout, res.stderr
        data = json.loads(res.stdout)
        assert data["ready"] == (res.returncode == 0)
        rows = {
            h["host"]: {c["name"]: c for c in h["checks"]} | {"ready": h["ready"]}
            for h in data["hosts"]
        }
        return res.returncode, rows

    def sync(self, *args: str) -> tuple[int, list[dict[str, Any]]]:
        res = self.kf("spec", "sync", "--json", *args)
        assert res.stdout, res.stderr
        return res.returncode, json.loads(res.stdout)


@pytest.fixture(scope="module")
def fleet(
    fleet_bed: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Fleet]:
    prefix = tmp_path_factory.mktemp("specs-e2e")
    f = Fleet(fleet_bed, prefix)
    mp = pytest.MonkeyPatch()
    for name, value in f.env.items():
        if name.startswith(("KF_", "JUPYTER_")):
            mp.setenv(name, value)
    mp.setenv("JUPYTER_DATA_DIR", str(prefix / "data"))
    mp.setenv("JUPYTER_RUNTIME_DIR", str(prefix / "runtime"))
    request.addfinalizer(mp.undo)
    res = f.kf(
        "spec",
        "install",
        "ssh",
        f"--prefix={prefix}",
        f"--kernel-name={SPEC}",
        f"--remote-hosts={','.join(f.ips)}",
        "--port-range=41000..41200",
        f"--python={sys.executable}",
        "--launch-timeout=45",
    )
    assert res.returncode == 0, res.stderr
    yield f


def test_check_before_sync_says_the_spec_is_missing_and_how_to_fix_it(fleet: Fleet) -> None:
    code, rows = fleet.check(f"--spec={SPEC}")
    assert code == 1
    for ip in fleet.ips:
        row = rows[ip]
        for name in ("ssh", "host key", "agent", "interpreter", "kernel", "ports", "clock"):
            assert row[name]["status"] == "ok", (ip, name, row[name])
        assert row["spec"]["status"] == "fail"
        assert "missing" in row["spec"]["detail"]
        assert row["spec"]["fix"] == f"kernelfleet spec sync {SPEC} --hosts {ip}"


def test_sync_copies_then_skips_unchanged_and_check_is_green(fleet: Fleet) -> None:
    code, results = fleet.sync(SPEC)
    assert code == 0
    assert sorted(r["host"] for r in results) == sorted(fleet.ips)
    assert {r["status"] for r in results} == {"copied"}
    assert all(r["sent"] >= 2 and r["linked"] == 0 for r in results)

    code, results = fleet.sync()  # no name: every kernelfleet-ssh spec
    assert code == 0 and {r["status"] for r in results} == {"unchanged"}

    code, rows = fleet.check(f"--spec={SPEC}")
    assert code == 0, rows
    assert all(rows[ip]["spec"]["status"] == "ok" for ip in fleet.ips)
    table = kf(fleet.env, "hosts", "check", f"--spec={SPEC}")  # the console script
    assert table.returncode == 0 and f"3 of 3 hosts ready for {SPEC}" in table.stdout


def test_check_without_options_checks_every_ssh_spec_on_its_hosts(fleet: Fleet) -> None:
    res = fleet.kf("hosts", "check", "--json")
    data = json.loads(res.stdout)
    assert data["ready"] == (res.returncode == 0), res.stderr
    (entry,) = [e for e in data["specs"] if e["spec"] == SPEC]
    assert sorted(h["host"] for h in entry["hosts"]) == sorted(fleet.ips)
    text = fleet.kf("hosts", "check").stdout
    assert f"== {SPEC} ==" in text and f"hosts ready for {SPEC}" in text


def test_sync_sends_only_changed_files(fleet: Fleet) -> None:
    res = fleet.kf(
        "spec",
        "install",
        "ssh",
        f"--prefix={fleet.prefix}",
        f"--kernel-name={SPEC}",
        f"--remote-hosts={','.join(fleet.ips)}",
        "--port-range=41000..41200",
        f"--python={sys.executable}",
        "--launch-timeout=45",
        "--display-name=E2E renamed",
        "--replace",
    )
    assert res.returncode == 0, res.stderr
    code, results = fleet.sync(SPEC, f"--hosts={fleet.ips[0]}")
    assert code == 0
    (only,) = results
    assert only["status"] == "copied" and only["sent"] == 1 and only["linked"] >= 1
    code, rows = fleet.check(f"--spec={SPEC}")
    assert code == 1
    assert rows[fleet.ips[0]]["spec"]["status"] == "ok"
    assert "differs: kernel.json" in rows[fleet.ips[1]]["spec"]["detail"]
    assert fleet.sync(SPEC)[0] == 0


def test_check_catches_a_spec_deleted_on_one_host(fleet: Fleet) -> None:
    host = fleet.bed.host(2)
    spec_dir = fleet.jupyter_path / "kernels" / SPEC
    assert fleet.bed.run_in(host, "rm", "-rf", str(spec_dir)).returncode == 0
    code, rows = fleet.check(f"--spec={SPEC}")
    assert code == 1
    assert rows[host.ip]["spec"]["status"] == "fail"
    assert rows[host.ip]["spec"]["fix"] == f"kernelfleet spec sync {SPEC} --hosts {host.ip}"
    assert [ip for ip in fleet.ips if rows[ip]["ready"]] == [fleet.ips[0], fleet.ips[2]]
    assert fleet.sync(SPEC, f"--hosts={host.ip}")[0] == 0
    assert fleet.check(f"--spec={SPEC}")[0] == 0


def test_check_catches_a_python_without_ipykernel(fleet: Fleet, fleet_bed: Any) -> None:
    venv = Path(fleet_bed.dir) / "no-ipykernel-venv"  # shared path: the same on every host
    if not venv.exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    name = "kf_noipykernel"
    res = fleet.kf(
        "spec",
        "install",
        "ssh",
        f"--prefix={fleet.prefix}",
        f"--kernel-name={name}",
        f"--remote-hosts={fleet.ips[0]}",
        f"--python={venv}/bin/python",
    )
    assert res.returncode == 0, res.stderr
    assert fleet.sync(name)[0] == 0
    code, rows = fleet.check(f"--spec={name}")
    assert code == 1
    kernel = rows[fleet.ips[0]]["kernel"]
    assert kernel["status"] == "fail"
    assert "cannot import ipykernel" in kernel["detail"]
    assert kernel["fix"].startswith(f"{venv}/bin/python -m pip install ipykernel")
    assert rows[fleet.ips[0]]["interpreter"]["status"] == "ok"
    # and the same spec with a python that does not exist at all
    res = fleet.kf(
        "spec",
        "install",
        "ssh",
        f"--prefix={fleet.prefix}",
        f"--kernel-name={name}",
        f"--remote-hosts={fleet.ips[0]}",
        "--python=/opt/nowhere/bin/python3",
        "--replace",
    )
    assert res.returncode == 0
    code, rows = fleet.check(f"--spec={name}")
    interp = rows[fleet.ips[0]]["interpreter"]
    assert code == 1 and interp["status"] == "fail"
    assert "/opt/nowhere/bin/python3 does not run" in interp["detail"]
    assert "--python" in interp["fix"]
    fleet.kf("spec", "remove", f"--prefix={fleet.prefix}", name)


@pytest.fixture
async def gateway_env(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[None]:
    async with gateway_env_for(fleet.bed, fleet.jupyter_path, tmp_path, monkeypatch):
        yield


async def test_a_kernel_from_the_synced_spec_runs_on_a_host_through_the_gateway(
    fleet: Fleet, gateway_env: None
) -> None:
    assert (await asyncio.to_thread(fleet.check, f"--spec={SPEC}"))[0] == 0
    async with temp_gateway() as gw:
        client = client_for(gw)
        kernel = await client.start_kernel(SPEC)
        try:
            ws = await client.connect(kernel["id"])
            try:
                reply, iopub = await ws.execute(
                    "import socket, os; print(socket.gethostname(), os.environ['KERNEL_ID'])"
                )
            finally:
                ws.close()
            assert reply["status"] == "ok"
            hostname, kid = stdout_of(iopub).split()
            assert hostname.startswith("kfs-host") and kid == kernel["id"]
        finally:
            await client.shutdown_kernel(kernel["id"])


def test_check_catches_an_unknown_host_key(fleet: Fleet, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    code, rows = fleet.check(f"--hosts={fleet.ips[0]}", f"--SSHProvisioner.ssh_known_hosts={empty}")
    assert code == 1
    key = rows[fleet.ips[0]]["host key"]
    assert key["status"] == "fail"
    assert f"ssh-keyscan -p 22 {fleet.ips[0]} >> {empty}" in key["fix"]


def test_check_catches_spark_problems(fleet: Fleet) -> None:
    name, ip = "kf_spark_check", fleet.ips[0]
    fake_home = Path(fleet.bed.dir) / "fake-spark"  # a shared path: the same on every host
    (fake_home / "bin").mkdir(parents=True, exist_ok=True)
    (fake_home / "bin" / "spark-submit").write_text("#!/bin/sh\nexit 0\n")
    (fake_home / "bin" / "spark-submit").chmod(0o755)
    for home, detail, fix in (
        ("/opt/nowhere/spark", "spark-submit not found", "--spark-home"),
        (str(fake_home), "master 10.90.0.1:9 unreachable", "start the Spark master"),
    ):
        res = fleet.kf(
            "spec",
            "install",
            "ssh",
            f"--prefix={fleet.prefix}",
            f"--kernel-name={name}",
            f"--remote-hosts={ip}",
            "--spark",
            "--spark-master=spark://10.90.0.1:9",
            f"--spark-home={home}",
            "--replace",
        )
        assert res.returncode == 0, res.stderr
        assert fleet.sync(name)[0] == 0
        code, rows = fleet.check(f"--spec={name}")
        spark = rows[ip]["spark"]
        assert code == 1 and spark["status"] == "fail", spark
        assert detail in spark["detail"] and fix in spark["fix"]
        assert rows[ip]["spec"]["status"] == "ok"
    # a Scala (Apache Toree) spec whose jar is not on the host
    res = fleet.kf(
        "spec",
        "install",
        "ssh",
        f"--prefix={fleet.prefix}",
        f"--kernel-name={name}",
        f"--remote-hosts={ip}",
        "--language=scala",
        "--toree-jar=/opt/nowhere/toree.jar",
        f"--spark-home={fake_home}",
        "--spark-master=yarn",
        "--replace",
    )
    assert res.returncode == 0, res.stderr
    assert fleet.sync(name)[0] == 0
    code, rows = fleet.check(f"--spec={name}")
    kernel = rows[ip]["kernel"]
    assert code == 1 and kernel["status"] == "fail" and "--toree-jar" in kernel["fix"]
    assert rows[ip]["spark"]["status"] == "ok"  # spark-submit found; yarn is not probed
    fleet.kf("spec", "remove", f"--prefix={fleet.prefix}", name)


async def test_hostile_extra_spark_opts_from_a_request_start_nothing(
    fleet: Fleet, gateway_env: None
) -> None:
    """KERNEL_EXTRA_SPARK_OPTS comes from the start request: a value that is not plain
    options is refused by run.sh on the host (the error names it), nothing runs, and
    spark-submit is never started."""
    name, host = "kf_spark_hostile", fleet.bed.host(1)
    fake_home = Path(fleet.bed.dir) / "fake-spark-marker"  # shared path
    (fake_home / "bin").mkdir(parents=True, exist_ok=True)
    submit = fake_home / "bin" / "spark-submit"
    submit.write_text("#!/bin/sh\ntouch /tmp/kf-spark-submit-ran\nexit 3\n")
    submit.chmod(0o755)
    res = await asyncio.to_thread(
        fleet.kf,
        "spec",
        "install",
        "ssh",
        f"--prefix={fleet.prefix}",
        f"--kernel-name={name}",
        f"--remote-hosts={host.ip}",
        "--spark",
        f"--spark-home={fake_home}",
        "--spark-master=spark://10.90.0.1:9",
        "--launch-timeout=20",
        "--replace",
    )
    assert res.returncode == 0, res.stderr
    assert (await asyncio.to_thread(fleet.sync, name))[0] == 0
    hostile = [
        ("--conf x=$(touch /tmp/kf-pwned)", "is not an option"),
        ('--conf "a=1" `touch /tmp/kf-pwned`', "is not an option"),
        ("--conf a=1\n--conf b=2", "control characters"),
        ("--name not-the-kernel-id", "--name may not be changed"),
        ("--conf 'a=1", "cannot be split"),
    ]
    async with temp_gateway() as gw:
        client = client_for(gw)
        for value, why in hostile:
            status, body = await client.request(
                "POST",
                "/api/kernels",
                {"name": name, "env": {"KERNEL_EXTRA_SPARK_OPTS": value}},
            )
            assert status == 500, body
            assert why in body["message"] and host.ip in body["message"], body
    for marker in ("/tmp/kf-pwned", "/tmp/kf-spark-submit-ran"):
        assert fleet.bed.run_in(host, "test", "-e", marker).returncode == 1, marker
    assert not fleet.bed.processes_matching(host, "run.sh")
    await asyncio.to_thread(fleet.kf, "spec", "remove", f"--prefix={fleet.prefix}", name)


def test_check_and_sync_with_sshd_stopped_on_one_host(fleet: Fleet) -> None:
    bed = fleet.bed
    host = bed.host(3)
    pid = bed.sshd_pid(host)
    assert pid is not None
    subprocess.run(["kill", str(pid)], check=True)
    try:
        code, rows = fleet.check(f"--spec={SPEC}")
        assert code == 1
        ssh = rows[host.ip]["ssh"]
        assert ssh["status"] == "fail" and "start sshd" in ssh["fix"]
        assert all(rows[host.ip][n]["status"] == "skip" for n in ("spec", "kernel", "clock"))
        assert rows[fleet.ips[0]]["ready"] and rows[fleet.ips[1]]["ready"]
        # a failing host does not stop the others; the exit status says not all succeeded
        (fleet.jupyter_path / "kernels" / SPEC / "extra.txt").write_text("new file\n")
        code, results = fleet.sync(SPEC)
        assert code == 1
        by_host = {r["host"]: r for r in results}
        assert by_host[host.ip]["status"] == "failed" and by_host[host.ip]["fix"]
        assert by_host[fleet.ips[0]]["status"] == "copied"
        assert by_host[fleet.ips[0]]["sent"] == 1
        text = kf(fleet.env, "spec", "sync", SPEC)  # the console script
        assert text.returncode == 1 and f"{host.ip}: {SPEC}:" in text.stdout
    finally:
        bed.start_sshd(host)  # a fresh private /tmp: the spec is gone there again
        (fleet.jupyter_path / "kernels" / SPEC / "extra.txt").unlink()
