"""Helpers of the contract suite: one test's kernelspecs, gateway config and data directory
(:class:`Contract`), deadlines that name what was awaited, and reading the kernel store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kernelfleet.client import KernelSocket
from kernelfleet.kernels.record import KernelRecord
from kernelfleet.kernels.secrets import SecretBox
from kernelfleet.kernels.stores.base import COLUMNS, SELECT, StoredKernel, to_utc
from kernelfleet.provisioners.base import KernelfleetProvisioner
from tests.conftest import add_kernelspec
from tests.contract_backends.backends import Checkpoint, ContractBackend

T = TypeVar("T")

#: The kernelspecs every test gets: the same Python kernel in both interrupt modes.
SPEC = "contract"
MESSAGE_SPEC = "contract_message"

#: A cell that runs until interrupted; its first output says it runs.
SLEEPER = "import time\nprint('contract: sleeping', flush=True)\ntime.sleep(30)"


@contextlib.asynccontextmanager
async def within(what: str, seconds: float = 30.0) -> AsyncIterator[None]:
    """Fail naming *what* did not happen, rather than hang until the test timeout."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise AssertionError(f"{what}: nothing within {seconds:g} s") from None


async def eventually(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str, seconds: float = 10.0
) -> T:
    """Poll *probe* until *ok* holds for its value (facts with no event: a process gone on a
    host, a store row); returns that value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        value = await probe()
        if ok(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {seconds:g} s (last: {value!r})")
        await asyncio.sleep(0.1)


def delayed_argv(seconds: float, before: str = "", python: str = sys.executable) -> list[str]:
    """A kernel command that runs the shell code *before*, sleeps, then execs ipykernel (of
    *python*: where the kernel runs, a backend's :attr:`ContractBackend.python`)."""
    script = f'{before}sleep {seconds:g}; exec "{python}" -m ipykernel_launcher -f "$0"'
    return ["/bin/sh", "-c", script, "{connection_file}"]


def notify_code(address: str, port: int, python: str = sys.executable) -> str:
    """Shell code that connects to *address*:*port* once (tells the test the kernel command
    runs, on whatever machine it runs)."""
    py = f"import socket; socket.create_connection(('{address}', {port})).close()"
    return f'"{python}" -c "{py}"; '


def provisioner(record: KernelRecord) -> KernelfleetProvisioner:
    prov = record.manager.provisioner if record.manager is not None else None
    assert isinstance(prov, KernelfleetProvisioner), f"not a KernelfleetProvisioner: {prov!r}"
    return prov


async def checkpoint_of(record: KernelRecord) -> Checkpoint:
    """What the provisioner would persist now (its checkpoint)."""
    info: Checkpoint = await provisioner(record).get_provisioner_info()
    return info


async def resource_alive(backend: ContractBackend, kernel_id: str, cp: Checkpoint) -> bool:
    return await asyncio.to_thread(backend.resource_alive, kernel_id, cp)


async def wait_resource_gone(
    backend: ContractBackend, kernel_id: str, cp: Checkpoint, seconds: float = 10.0
) -> None:
    async def probe() -> bool:
        return await resource_alive(backend, kernel_id, cp)

    await eventually(probe, lambda alive: not alive, f"kernel {kernel_id} stopped", seconds)


async def execute_ok(ws: KernelSocket, code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    async with within(f"execution of {code[:50]!r}"):
        reply, iopub = await ws.execute(code)
    assert reply["status"] == "ok", reply
    return reply, iopub


def read_row(data_dir: Path, key_file: Path, kernel_id: str) -> tuple[StoredKernel, Checkpoint]:
    """The stored row of *kernel_id* and its unsealed payload, read from the SQLite store of a
    gateway process (blocking)."""
    db = sqlite3.connect(data_dir / "kernels.sqlite")
    try:
        rows = db.execute(SELECT + " WHERE id = ?", (kernel_id,)).fetchall()
    finally:
        db.close()
    assert len(rows) == 1, f"one row for {kernel_id} expected, found {rows}"
    values = dict(zip(COLUMNS, rows[0], strict=True))
    values["created"] = to_utc(values["created"])
    values["last_activity"] = to_utc(values["last_activity"])
    values["pooled"] = bool(values["pooled"])
    row = StoredKernel(**values)
    return row, row.unseal(SecretBox.from_file(str(key_file)))


@dataclass
class Contract:
    """One test of one backend: its directory, kernelspecs and gateway settings."""

    backend: ContractBackend
    tmp: Path

    @property
    def jupyter_path(self) -> Path:
        return self.tmp / "jupyter"

    @property
    def data_dir(self) -> Path:
        return self.tmp / "gwdata"

    @property
    def key_file(self) -> Path:
        return self.data_dir / "secret" / "store.key"

    def write_spec(
        self,
        name: str,
        *,
        argv: list[str] | None = None,
        interrupt_mode: str = "signal",
        config: dict[str, Any] | None = None,
    ) -> str:
        """Add kernelspec *name* of this backend (argv: ipykernel unless given)."""
        spec: dict[str, Any] = {
            "interrupt_mode": interrupt_mode,
            "metadata": self.backend.metadata(self.tmp, dict(config or {})),
        }
        if argv is None and self.backend.python != sys.executable:
            argv = [self.backend.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        if argv is not None:
            spec["argv"] = argv
        add_kernelspec(self.jupyter_path, name, spec)
        return name

    def kernelspec(self, name: str) -> dict[str, Any]:
        """The kernel.json of kernelspec *name*, as :meth:`write_spec` wrote it."""
        spec: dict[str, Any] = json.loads(
            (self.jupyter_path / "kernels" / name / "kernel.json").read_text()
        )
        return spec

    def config(self, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Gateway config sections: the backend's, a private data dir, then *sections*."""
        out: dict[str, dict[str, Any]] = {
            k: dict(v) for k, v in self.backend.gateway_config.items()
        }
        out.setdefault("Gateway", {})["data_dir"] = str(self.data_dir)
        for section, values in sections.items():
            out.setdefault(section, {}).update(values)
        return out

    def process_env(self) -> dict[str, str]:
        """Environment of a gateway run as a process (tests/gatewayproc.py) on this test's
        kernelspecs and data dir."""
        return {
            "JUPYTER_PATH": str(self.jupyter_path),
            "JUPYTER_DATA_DIR": str(self.tmp / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.tmp / "runtime"),
            "KF_DATA_DIR": str(self.data_dir),
            "KF_CONFIG_DIR": str(self.tmp / "cfg"),
            "KF_SECRET_KEY_FILE": str(self.key_file),
            "KF_IP": "127.0.0.1",
            "KF_MONITOR_INTERVAL": "0.5",
            **self.backend.process_env,
        }
