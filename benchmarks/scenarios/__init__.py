"""The scenario registry and the context every scenario receives.

A scenario is an ``async def f(ctx: Context) -> ScenarioResult`` registered with
:func:`scenario`. Every module in this package is imported by :func:`load_all`, so adding a
group of scenarios is adding a file here, e.g. ``ssh.py`` for remote (SSH) provisioners::

    from benchmarks.scenarios import Context, scenario
    from benchmarks.common import Metric, ScenarioResult

    def _no_testbed() -> str | None:
        return None if testbed_available() else "no SSH testbed (see tests/testbed.py)"

    @scenario("ssh_cold_start", "cold start on an SSH host", group="ssh", requires=_no_testbed)
    async def ssh_cold_start(ctx: Context) -> ScenarioResult:
        gw = await ctx.gateway("gateway-ssh", extra_args=[...])   # a gateway with SSH hosts
        ...
        return ScenarioResult("ssh_cold_start", [Metric("ssh cold start p50", "s", bare, gwv,
                                                        1.15, "max")])

``requires`` returns ``None`` when the scenario can run, else the reason it is skipped.
Scenarios with ``default=False`` run only when named with ``--only``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import pkgutil
import shutil
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bare import BareKernel
from benchmarks.common import BenchEnv, ScenarioResult
from benchmarks.gateway import GatewayKernel, GatewayProcess

ScenarioFunc = Callable[["Context"], Awaitable[ScenarioResult]]


@dataclass
class Scenario:
    name: str
    title: str
    func: ScenarioFunc
    group: str = "local"
    default: bool = True
    requires: Callable[[], str | None] | None = None


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str,
    title: str,
    *,
    group: str = "local",
    default: bool = True,
    requires: Callable[[], str | None] | None = None,
) -> Callable[[ScenarioFunc], ScenarioFunc]:
    """Register an async scenario function under *name* (order of registration = run order)."""

    def deco(func: ScenarioFunc) -> ScenarioFunc:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} registered twice")
        SCENARIOS[name] = Scenario(name, title, func, group, default, requires)
        return func

    return deco


def load_all() -> dict[str, Scenario]:
    """Import every module of this package (each registers its scenarios)."""
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: (m.name != "local", m.name)):
        importlib.import_module(f"{__name__}.{mod.name}")
    return SCENARIOS


@dataclass
class Context:
    """Options, the private environment, shared gateways and the kernels to clean up."""

    env: BenchEnv
    quick: bool = False
    py_spy_dir: Path | None = None
    py_spy_rate: int = 500
    gateways: dict[str, GatewayProcess] = field(default_factory=dict)
    _kernels: list[BareKernel | GatewayKernel] = field(default_factory=list)
    _profilers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    current: str = ""

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    async def gateway(
        self, name: str = "gateway", extra_args: list[str] | None = None, fresh: bool = False
    ) -> GatewayProcess:
        """The gateway subprocess called *name*, started on first use and shared after."""
        gw = self.gateways.get(name)
        if gw is not None and fresh:
            await self.stop_gateway(name)
            gw = None
        if gw is None:
            gw = GatewayProcess(self.env, name, extra_args)
            await gw.start()
            self.gateways[name] = gw
            self.profile(gw)
        return gw

    async def stop_gateway(self, name: str) -> None:
        gw = self.gateways.pop(name, None)
        if gw is not None:
            await gw.stop()

    def bare_kernel(self) -> BareKernel:
        k = BareKernel(self.env)
        self._kernels.append(k)
        return k

    def gateway_kernel(
        self, gw: GatewayProcess, connect: bool = True, kernel_name: str = "python3"
    ) -> GatewayKernel:
        k = GatewayKernel(gw, connect=connect, kernel_name=kernel_name)
        self._kernels.append(k)
        return k

    async def release_kernels(self) -> None:
        """Shut down every kernel a scenario left open (normally none)."""
        kernels, self._kernels = self._kernels, []

        async def one(k: BareKernel | GatewayKernel) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(k.shutdown(), 30)

        await asyncio.gather(*(one(k) for k in kernels))

    # -- py-spy ---------------------------------------------------------------------------

    def profile(self, gw: GatewayProcess) -> None:
        if self.py_spy_dir is None:
            return
        exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if exe is None:
            print("py-spy not found; not profiling", file=sys.stderr)
            return
        self.py_spy_dir.mkdir(parents=True, exist_ok=True)
        out = self.py_spy_dir / f"pyspy-{self.current or 'run'}-{gw.name}.txt"
        cmd = [
            exe,
            "record",
            "--pid",
            str(gw.pid),
            "--rate",
            str(self.py_spy_rate),
            "--format",
            "raw",
        ]
        cmd += ["--output", str(out)]
        self._profilers.append(
            subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

    def stop_profilers(self) -> None:
        for proc in self._profilers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self._profilers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._profilers.clear()

    async def close(self) -> None:
        await self.release_kernels()
        self.stop_profilers()
        for name in list(self.gateways):
            await self.stop_gateway(name)


def details_of(samples: dict[str, list[float]], digits: int = 4) -> dict[str, Any]:
    """Round a dict of sample lists for the JSON file."""
    return {k: [round(x, digits) for x in v] for k, v in samples.items()}
