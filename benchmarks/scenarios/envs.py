"""Kernel environments (issue 16): build pandas + scikit-learn (+ ipykernel) and ship it to the
SSH testbed's 3 hosts, once with a cold uv cache and once with a warm one, each against the
bare limit measured in the same run.

- **kernelfleet**: :meth:`EnvService.create` in this process (what the admin API and
  ``kernelfleet env create`` run) of a ``kind: ssh`` environment for the 3 hosts: resolve (a
  lock with hashes), install (``uv pip sync``, bytecode compiled), archive (``tar.gz``, hashed),
  ship (one asyncssh stream per host, unpacked as it arrives), kernelspec. Phases come from its
  progress lines, each stamped with the clock and this process's CPU (``getrusage``: itself =
  the gateway's work; its children = uv). The sandbox is the default (``auto``;
  ``KF_BENCH_ENV_SANDBOX`` overrides). Then the same packages as a second environment, the uv
  cache now warm, and a re-ship of that build to hosts that already have it (``cached``).
- **bare**: ``uv venv`` + ``uv pip install`` of the same packages with a cold and a warm cache
  (no sandbox, no lock, no archive; ``--compile-bytecode --link-mode copy`` like kernelfleet
  and like pip, so the environments are the same), and the same bytes shipped the plainest
  way: ``tar | gzip -1`` once, then ``ssh host 'tar -xzf -' < file`` to the 3 hosts at once
  (``KF_BENCH_ENV_PIPELINES=1`` also times ``tar | gzip -1 | ssh`` per host, which gzips 3
  times and is slower on 2 CPUs; the faster counts); a re-ship is 3 parallel
  ``ssh host test -f marker``.
- **why uv**: pip's cold install (``python3.11 -m venv`` + ``pip install --no-cache-dir``,
  which compiles bytecode too).
- **relocate vs rebuild**: ``uv venv`` + ``uv pip sync`` of the cold run's lock on every host
  at once, each with a cold cache of its own under its private /tmp: first as the hosts are
  (no route out, so it fails: rebuilding needs index access on every host), then through an
  allow-list proxy (kernelfleet's) per host on the gateway side of the bridge.

Targets: build + ship ≤ 1.5x the bare limit, cold and warm; a cached re-ship ≤ 2x. About
3 minutes on 2 CPUs (``--quick``, without pip and the rebuild: about 2).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import resource
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traitlets.config import Config

from benchmarks.common import Metric, ScenarioResult
from benchmarks.scenarios import Context, scenario
from benchmarks.scenarios.fleet import _bed, _no_testbed

if TYPE_CHECKING:  # kernelfleet is imported when the scenario runs (--list needs none of it)
    from kernelfleet.envs.model import EnvRecord
    from kernelfleet.envs.proxy import Resolver
    from kernelfleet.envs.service import Caller, EnvService
    from kernelfleet.transport.agent_client import SSHTarget

PACKAGES = ("pandas", "scikit-learn")  # ipykernel is added by kernelfleet
BARE_PACKAGES = (*PACKAGES, "ipykernel")
PYTHON = "/usr/bin/python3.11"
BUILD_TARGET = 1.5
#: A re-ship is 3 connections and a check each: sub-second, so noisier.
RESHIP_TARGET = 2.0
HOST_ROOT = "/tmp/kfbench-envs"  # /tmp is private to each testbed host
BARE_ROOT = "/tmp/kfbench-bare"
REBUILD_ROOT = "/tmp/kfbench-rebuild"
STEP_TIMEOUT = 180.0
CA_VARS = ("SSL_CERT_FILE", "SSL_CERT_DIR", "PIP_CERT")
UV_SUMMARY = re.compile(r"^\s*(Resolved|Prepared|Installed|Bytecode compiled) .* in [0-9.]+m?s$")
#: The first progress line of each phase of a create (lines without a host).
PHASES = (
    ("install", "resolving "),  # resolve and install, one uv pass (a rebuild: "installing ")
    ("lock", "recording the lock"),
    ("archive", "archiving "),
    ("ship", "shipping "),
    ("kernelspec", "kernelspec "),
)


# -- clocks ----------------------------------------------------------------------------------


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


@dataclass(frozen=True)
class Clock:
    """Wall clock, this process's CPU, its waited-for children's CPU, the machine's jiffies."""

    wall: float
    own: float
    children: float
    busy: int
    total: int

    @classmethod
    def now(cls) -> Clock:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy, total = _machine_jiffies()
        return cls(
            time.perf_counter(),
            me.ru_utime + me.ru_stime,
            kids.ru_utime + kids.ru_stime,
            busy,
            total,
        )

    def since(self, start: Clock) -> dict[str, float]:
        wall = self.wall - start.wall
        own = self.own - start.own
        total = self.total - start.total
        return {
            "seconds": round(wall, 3),
            "gateway_cpu_s": round(own, 3),
            "gateway_cpu_pct_of_one_cpu": round(100 * own / wall, 1) if wall > 0 else 0.0,
            "children_cpu_s": round(self.children - start.children, 3),
            "machine_busy_pct": round(100 * (self.busy - start.busy) / total, 1) if total else 0.0,
        }


@dataclass
class Progress:
    """A create's ``say`` callback: every line, stamped."""

    marks: list[tuple[Clock, str, str]] = field(default_factory=list)

    def __call__(self, text: str, *, level: str = "info", host: str = "") -> None:
        del level
        self.marks.append((Clock.now(), text, host))

    def phases(self, start: Clock, end: Clock) -> dict[str, dict[str, float]]:
        """Each phase from its first line to the next phase's (the last one to *end*); what
        comes before the first is ``prepare`` (interpreter probe, checks, claiming the name)."""
        bounds: list[tuple[str, Clock]] = [("prepare", start)]
        for name, prefix in PHASES:
            found = next((c for c, t, h in self.marks if not h and t.startswith(prefix)), None)
            if found is not None:
                bounds.append((name, found))
        bounds.append(("end", end))
        return {
            a: b_clock.since(a_clock) for (a, a_clock), (_, b_clock) in itertools.pairwise(bounds)
        }

    def timeline(self, start: Clock) -> list[str]:
        """The create's own lines and uv's summaries (not its per-package lines), with the
        seconds since *start*."""
        return [
            f"{c.wall - start.wall:6.2f} {t}"
            for c, t, h in self.marks
            if not h and not t.lstrip().startswith(("+ ", "- "))
        ]

    def host_lines(self) -> list[str]:
        return [f"{h}: {t}" for _, t, h in self.marks if h and not t.startswith("sent ")]


def _phase_sum(phases: dict[str, dict[str, float]], *names: str) -> float:
    return sum(phases[n]["seconds"] for n in names if n in phases)


# -- processes -------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    ok: bool
    tail: str
    cpu: dict[str, float]
    summary: list[str] = field(default_factory=list)  # uv's "... in 1.2s" lines


async def _shell(
    command: str,
    *,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    limit: float = STEP_TIMEOUT,
) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_shell(
        command,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(limit):
            out, _ = await proc.communicate(stdin)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"timed out after {limit:g} s"
    return proc.returncode or 0, out.decode("utf-8", "replace")


async def _timed(
    commands: Sequence[str],
    *,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    limit: float = STEP_TIMEOUT,
) -> Run:
    """*commands* at once; their wall time together, and whether all succeeded."""
    start = Clock.now()
    done = await asyncio.gather(*(_shell(c, stdin=stdin, env=env, limit=limit) for c in commands))
    cpu = Clock.now().since(start)
    bad = [out for status, out in done if status != 0]
    tail = " | ".join(" ".join(out.split())[-300:] for out in bad)
    summary = [x.strip() for _, out in done for x in out.splitlines() if UV_SUMMARY.match(x)]
    return Run(cpu["seconds"], not bad, tail, cpu, summary)


def _must(run: Run, what: str) -> Run:
    if not run.ok:
        raise RuntimeError(f"{what} failed: {run.tail}")
    return run


def _plain_env(home: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "UV_NO_PROGRESS": "1",
        "NO_COLOR": "1",
        **_ca_env(),
    }


def _ca_env() -> dict[str, str]:
    """Where this machine's CA certificates are (a TLS-inspecting proxy's, say): what
    kernelfleet's builds inherit (``build.INHERITED``), and pip's own spelling."""
    return {k: os.environ[k] for k in CA_VARS if os.environ.get(k)}


def _ssh(bed: Any, ip: str, command: str) -> str:
    """The ``ssh`` command line running *command* on the host *ip* as root (the testbed's key
    and known_hosts, nothing from ~/.ssh)."""
    options = "-F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=10"
    keys = ["-i", str(bed.key), "-o", f"UserKnownHostsFile={bed.known_hosts}"]
    return shlex.join(["ssh", *options.split(), *keys, "-l", "root", ip, command])


# -- the bare side ---------------------------------------------------------------------------


async def _bare_uv(uv: str, work: Path, cache: Path, dest: Path, *, bytecode: bool = True) -> Run:
    q = shlex.quote
    flags = "--link-mode copy --compile-bytecode" if bytecode else ""
    command = (
        f"{q(uv)} venv -q --no-config --python {PYTHON} --cache-dir {q(str(cache))} {q(str(dest))}"
        f" && {q(uv)} pip install --no-config --cache-dir {q(str(cache))} --python "
        f"{q(str(dest / 'bin' / 'python'))} --only-binary :all: {flags} {' '.join(BARE_PACKAGES)}"
    )
    return _must(await _timed([command], env=_plain_env(work)), "bare uv install")


async def _bare_pip(work: Path, dest: Path) -> dict[str, Any]:
    env = _plain_env(work)
    made = _must(await _timed([f"{PYTHON} -m venv {shlex.quote(str(dest))}"], env=env), "venv")
    pip = shlex.quote(str(dest / "bin" / "pip"))
    command = (
        f"{pip} install -q --no-cache-dir --disable-pip-version-check {' '.join(BARE_PACKAGES)}"
    )
    installed = _must(await _timed([command], env=env), "pip install")
    return {"venv": made.cpu, "install": installed.cpu, "seconds": made.seconds + installed.seconds}


async def _bare_ship(bed: Any, venv: Path, work: Path, *, pipelines: bool) -> dict[str, Any]:
    """The venv to every host at once, the plainest way: compressed once (``tar | gzip -1``),
    then ``ssh host 'tar -xzf -' < file`` to each; with *pipelines* also ``tar | gzip -1 |
    ssh`` per host (gzip 3 times, overlapped with the sending). The faster is the limit."""
    q = shlex.quote
    ips = [h.ip for h in bed.hosts]
    unpack = f"mkdir -p {BARE_ROOT} && tar -xzf - -C {BARE_ROOT}"
    clean = [_ssh(bed, ip, f"rm -rf {BARE_ROOT}") for ip in ips]
    archive = work / "bare.tar.gz"
    tar = f"tar -C {q(str(venv))} -cf - . | gzip -1"
    packed = _must(await _timed([f"{tar} > {q(str(archive))}"]), "tar | gzip")
    sent = _must(
        await _timed([f"{_ssh(bed, ip, unpack)} < {q(str(archive))}" for ip in ips]), "ssh"
    )
    await _timed(clean)
    figures: dict[str, Any] = {
        "seconds": round(packed.seconds + sent.seconds, 3),
        "compress_once": packed.cpu,
        "then_ssh_each": sent.cpu,
        "archive_mb": round(archive.stat().st_size / 1e6, 1),
    }
    archive.unlink()
    if pipelines:
        piped = _must(await _timed([f"{tar} | {_ssh(bed, ip, unpack)}" for ip in ips]), "pipes")
        await _timed(clean)
        figures["per_host_pipelines"] = piped.cpu
        figures["seconds"] = min(figures["seconds"], round(piped.seconds, 3))
    return figures


async def _rebuild_per_host(bed: Any, uv: str, lock: str, proxies: dict[str, str]) -> Run:
    """The lock installed on every host at once, each with a cold cache in its own /tmp."""
    from kernelfleet.envs import model

    args = model.UvArgs(uv, "https://pypi.org/simple", f"{REBUILD_ROOT}/cache")
    venv = f"{REBUILD_ROOT}/venv"
    steps = [
        f"rm -rf {REBUILD_ROOT}",
        f"mkdir -p {REBUILD_ROOT}/home",
        f"cat > {REBUILD_ROOT}/lock.txt",
        shlex.join(model.venv_argv(args, PYTHON, venv)),
        shlex.join(model.sync_argv(args, f"{venv}/bin/python", f"{REBUILD_ROOT}/lock.txt")),
    ]
    env = f"env HOME={REBUILD_ROOT}/home UV_NO_PROGRESS=1 UV_HTTP_TIMEOUT=10"
    env += "".join(f" {k}={shlex.quote(v)}" for k, v in _ca_env().items())

    def command(ip: str) -> str:
        proxy = proxies.get(ip)
        # without a proxy the index is unreachable: no need to watch uv retry
        via = f" HTTPS_PROXY={proxy} HTTP_PROXY={proxy}" if proxy else " UV_HTTP_RETRIES=0"
        return " && ".join(steps[:3] + [f"{env}{via} {s}" for s in steps[3:]])

    ips = [h.ip for h in bed.hosts]
    run = await _timed([_ssh(bed, ip, command(ip)) for ip in ips], stdin=lock.encode(), limit=120)
    await _timed([_ssh(bed, ip, f"rm -rf {REBUILD_ROOT}") for ip in ips])
    return run


def _resolve_once() -> Resolver:
    """The proxy's DNS lookup, one per (host, port) and shared. Resolving every connection
    anew (what the proxy does) sends 3 uv's ~150 lookups at once through the event loop's
    few resolver threads, and this machine's resolver then fails or stalls some of them:
    uv's downloads time out."""
    from kernelfleet.envs.proxy import resolve_dns

    answers: dict[tuple[str, int], asyncio.Future[list[str]]] = {}

    async def resolve(host: str, port: int) -> list[str]:
        key = (host, port)
        if key not in answers:
            answers[key] = asyncio.ensure_future(resolve_dns(host, port))
        try:
            return await asyncio.shield(answers[key])
        except OSError:
            answers.pop(key, None)
            raise

    return resolve


async def _rebuild(bed: Any, uv: str, lock: str, index_hosts: tuple[str, ...]) -> dict[str, Any]:
    """As the hosts are (no route out), then through an allow-list proxy per host on the
    gateway side of the bridge (one each: uv opens up to 50 connections at once, and one proxy
    serves 256), which resolve each index host once (see :func:`_resolve_once`)."""
    from kernelfleet.envs.proxy import AllowListProxy

    direct = await _rebuild_per_host(bed, uv, lock, {})
    refused: list[str] = []
    resolve = _resolve_once()
    proxies = [
        AllowListProxy(index_hosts, on_refusal=refused.append, resolve=resolve) for _ in bed.hosts
    ]
    try:
        ports = [await p.serve_tcp(bed.gateway_ip) for p in proxies]
        urls = {
            h.ip: f"http://{bed.gateway_ip}:{port}"
            for h, port in zip(bed.hosts, ports, strict=True)
        }
        proxied = await _rebuild_per_host(bed, uv, lock, urls)
    finally:
        for p in proxies:
            await p.close()
    return {
        "direct": {"ok": direct.ok, "seconds": round(direct.seconds, 3), "error": direct.tail},
        "via_proxy": {
            **proxied.cpu,
            "ok": proxied.ok,
            "error": proxied.tail,
            "proxy_refusals": refused[:5],
        },
    }


# -- the kernelfleet side --------------------------------------------------------------------


async def _no_kernels(kernel_name: str) -> list[str]:
    del kernel_name
    return []


async def _create(
    service: EnvService, name: str, hosts: list[str]
) -> tuple[EnvRecord, dict[str, Any]]:
    from kernelfleet.envs.service import EnvRequest
    from kernelfleet.specs.options import SpecOptions

    request = EnvRequest(
        name=name,
        packages=PACKAGES,
        python="3.11",
        spec=SpecOptions(kind="ssh", remote_hosts=tuple(hosts), launch_timeout=60.0),
    )
    say = Progress()
    start = Clock.now()
    record = await service.create(request, _admin(), say)
    end = Clock.now()
    phases = say.phases(start, end)
    return record, {
        **end.since(start),
        "phases": phases,
        "build_s": round(_phase_sum(phases, "install", "lock"), 3),
        "archive_ship_s": round(_phase_sum(phases, "archive", "ship"), 3),
        "timeline": say.timeline(start),
        "host_lines": say.host_lines(),
        "lines": len(say.marks),
    }


async def _reship(
    service: EnvService, record: EnvRecord, targets: list[SSHTarget]
) -> dict[str, Any]:
    from kernelfleet.envs import ship

    start = Clock.now()
    results = await ship.ship_to_hosts(
        service.store.archive_path(record.sha256),
        record.sha256,
        service.host_dir(record),
        targets,
        progress=lambda host, text: None,
    )
    return {**Clock.now().since(start), "hosts": [r.as_json() for r in results]}


# -- the scenario ----------------------------------------------------------------------------


def _work_dir() -> Path:
    """A directory the build user (``nobody``, when sandboxed as root) can pass through."""
    work = Path(tempfile.mkdtemp(prefix="kfbench-envs-"))
    os.chmod(work, 0o711)  # builds enter only their own directory below it
    return work


def _step(what: str, seconds: float) -> None:
    print(f"  env_ship: {what}: {seconds:.1f} s", file=sys.stderr, flush=True)


def _service(bed: Any, work: Path) -> EnvService:
    """An :class:`EnvService` as the gateway makes one, on private directories (so uv's cache
    starts cold), shipping under /tmp on the hosts, the testbed's SSH settings."""
    from kernelfleet.envs.service import EnvService
    from kernelfleet.envs.settings import EnvSettings

    settings = EnvSettings(
        root=str(work / "envs"),
        kernels_dir=str(work / "kernels"),
        build_dir=str(work / "builds"),
        host_root=HOST_ROOT,
        sandbox=os.environ.get("KF_BENCH_ENV_SANDBOX", "auto"),
    )
    ssh = {"ssh_user": "root", "ssh_key": str(bed.key), "ssh_known_hosts": str(bed.known_hosts)}
    (work / "kernels").mkdir()
    return EnvService(
        settings,
        data_dir=str(work),
        kernels_dir=work / "kernels",
        in_use=_no_kernels,
        config=Config({"SSHProvisioner": ssh}),
    )


@scenario(
    "env_ship",
    "build pandas + scikit-learn and ship it to 3 SSH hosts, cold and warm, vs uv + tar | ssh",
    group="envs",
    requires=_no_testbed,
)
async def env_ship(ctx: Context) -> ScenarioResult:
    bed: Any = _bed()
    work = _work_dir()
    service = _service(bed, work)
    try:
        return await _measure(ctx, bed, service, work)
    finally:
        for name in ("bench-cold", "bench-warm"):
            if service.store.read(name) is not None:
                await service.remove(name, _admin())
        await asyncio.to_thread(shutil.rmtree, work, True)


async def _measure(ctx: Context, bed: Any, service: EnvService, work: Path) -> ScenarioResult:
    from kernelfleet.specs.kinds import ssh as ssh_kind

    hosts = [h.ip for h in bed.hosts]
    uv = service.settings.uv_path()
    cache = work / "bare-cache"
    d: dict[str, Any] = {
        "packages": list(BARE_PACKAGES),
        "hosts": hosts,
        "sandbox": service.settings.sandbox,
        "sandboxed": service.runner.sandboxed,
        "sandbox_problem": service.runner.problem(),
    }
    cold_record, d["kernelfleet_cold"] = await _create(service, "bench-cold", hosts)
    _step("kernelfleet, cold", d["kernelfleet_cold"]["seconds"])
    d["env_mb"] = round(cold_record.size_bytes / 1e6, 1)
    d["env_files"] = cold_record.files
    d["locked_packages"] = len(cold_record.locked)
    bare_cold = await _bare_uv(uv, work, cache, work / "bare-cold")
    d["bare_uv_cold"] = {**bare_cold.cpu, "uv": bare_cold.summary}
    _step("bare uv, cold", d["bare_uv_cold"]["seconds"])
    pipelines = os.environ.get("KF_BENCH_ENV_PIPELINES", "") == "1"
    venv = service.store.venv_dir(cold_record)
    d["bare_ship"] = await _bare_ship(bed, venv, work, pipelines=pipelines)
    _step("bare tar | ssh", d["bare_ship"]["seconds"])
    await service.remove("bench-cold", _admin())

    warm_record, d["kernelfleet_warm"] = await _create(service, "bench-warm", hosts)
    _step("kernelfleet, warm", d["kernelfleet_warm"]["seconds"])
    bare_warm = await _bare_uv(uv, work, cache, work / "bare-warm")
    d["bare_uv_warm"] = {**bare_warm.cpu, "uv": bare_warm.summary}
    _step("bare uv, warm", d["bare_uv_warm"]["seconds"])
    plain = await _bare_uv(uv, work, cache, work / "bare-plain", bytecode=False)
    d["bare_uv_warm_no_bytecode"] = plain.cpu
    ssh = ssh_kind.provisioner_settings(service.config, {})
    targets = [ssh.target_for(ip) for ip in hosts]
    d["kernelfleet_reship_cached"] = await _reship(service, warm_record, targets)
    _step("re-ship (cached)", d["kernelfleet_reship_cached"]["seconds"])
    marker = f"{service.host_dir(warm_record)}/.kf-env.json"
    probe = await _timed([_ssh(bed, ip, f"test -f {marker}") for ip in hosts])
    d["bare_ssh_test_marker"] = _must(probe, "ssh test -f").cpu
    await service.remove("bench-warm", _admin())
    for name in ("bare-cold", "bare-warm", "bare-plain"):
        await asyncio.to_thread(shutil.rmtree, work / name, True)

    if not ctx.quick:
        d["bare_pip_cold"] = await _bare_pip(work, work / "pip-venv")
        _step("bare pip, cold", d["bare_pip_cold"]["seconds"])
        index = service.settings.index_hosts()
        d["rebuild_per_host"] = await _rebuild(bed, uv, cold_record.lock, index)
        _step("rebuild on each host", d["rebuild_per_host"]["via_proxy"]["seconds"])
    return ScenarioResult("env_ship", _metrics(d), d)


def _admin() -> Caller:
    from kernelfleet.envs.service import Caller

    return Caller("bench", admin=True)


def _row(
    name: str, bare: float | None, kf: float | None, target: float | None = None, note: str = ""
) -> Metric:
    return Metric(name, "s", bare, kf, target, "max" if target else "info", note)


def _cpu_row(what: str, figures: dict[str, Any], note: str) -> Metric:
    pct = figures["gateway_cpu_pct_of_one_cpu"]
    return Metric(f"gateway CPU, {what}", "%", None, pct, note=f"of one CPU; {note}")


def _metrics(d: dict[str, Any]) -> list[Metric]:
    n = len(d["hosts"])
    cold, warm = d["kernelfleet_cold"], d["kernelfleet_warm"]
    phases = cold["phases"]
    uv_cold, uv_warm = d["bare_uv_cold"]["seconds"], d["bare_uv_warm"]["seconds"]
    ship_s = d["bare_ship"]["seconds"]
    rows = [
        _row(f"env build + ship to {n} hosts, cold cache", uv_cold + ship_s, cold["seconds"],
             BUILD_TARGET, "bare: uv venv + uv pip install, then tar | gzip -1 and ssh"),
        _row(f"env build + ship to {n} hosts, warm cache", uv_warm + ship_s, warm["seconds"],
             BUILD_TARGET),
        _row("↳ build (resolve + install), cold", uv_cold, cold["build_s"]),
        _row("↳ build (resolve + install), warm", uv_warm, warm["build_s"]),
        _row(f"↳ archive + ship to {n} hosts", ship_s, cold["archive_ship_s"],
             note="kernelfleet: the cold run's phases"),
        _row(f"re-ship to {n} hosts that have it (cached)", d["bare_ssh_test_marker"]["seconds"],
             d["kernelfleet_reship_cached"]["seconds"], RESHIP_TARGET,
             "bare: ssh host test -f <marker>, to every host at once"),
        _cpu_row("cold create", cold, f"its children (uv) {cold['children_cpu_s']:.1f} s CPU; "
                 f"machine {cold['machine_busy_pct']:.0f}% busy"),
        _cpu_row("archive phase", phases["archive"], "tar + gzip -1 in a thread"),
        _cpu_row("ship phase", phases["ship"], f"asyncssh to {n} hosts; machine "
                 f"{phases['ship']['machine_busy_pct']:.0f}% busy"),
    ]  # fmt: skip
    if "bare_pip_cold" in d:
        rows.append(
            _row("why uv: cold install, pip → uv", d["bare_pip_cold"]["seconds"], uv_cold,
                 note="bare column: pip (venv + install); kernelfleet column: uv")
        )  # fmt: skip
    if "rebuild_per_host" in d:
        proxied, direct = d["rebuild_per_host"]["via_proxy"], d["rebuild_per_host"]["direct"]
        reach = "reach the index" if direct["ok"] else "cannot reach the index themselves"
        rows.append(
            _row(f"rebuild on each of {n} hosts (bare) vs build once + ship, cold",
                 proxied["seconds"] if proxied["ok"] else None, cold["seconds"],
                 note="bare column: uv venv + uv pip sync of the lock on every host at once, "
                 f"through a proxy (the hosts {reach})")
        )  # fmt: skip
    return rows
