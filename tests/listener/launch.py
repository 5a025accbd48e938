"""Helpers of the end-to-end tests: the kernel launcher's command line, a Jupyter client for
the connection info the listener received, processes by command line."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.connect import KernelConnectionInfo

from kernelfleet.launchers import kernel_launcher
from kernelfleet.transport.listener import ConnectionInfo

LAUNCHER = str(Path(kernel_launcher.__file__).resolve())
KERNEL_ARGV = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
#: What a kernel needs besides the registration's variables (debugpy's frozen-module warning off).
KERNEL_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}


def launcher_argv(*options: str, kernel_argv: list[str] | None = None) -> list[str]:
    return [sys.executable, LAUNCHER, *options, "--", *(kernel_argv or KERNEL_ARGV)]


@contextlib.asynccontextmanager
async def client_for(info: ConnectionInfo) -> AsyncIterator[AsyncKernelClient]:
    """A Jupyter client of the kernel *info* describes, channels open."""
    kc = AsyncKernelClient()
    kc.load_connection_info(cast(KernelConnectionInfo, dict(info)))
    kc.start_channels()
    try:
        yield kc
    finally:
        kc.stop_channels()


async def kernel_info_and_shutdown(info: ConnectionInfo) -> dict[str, Any]:
    """The kernel's ``kernel_info_reply`` content; then ask it to shut down (and get the
    reply), as a kernel manager does."""
    async with client_for(info) as kc:
        reply = await kc.kernel_info(reply=True, timeout=30)
        msg_id = kc.shutdown()
        while True:
            answer = await kc.control_channel.get_msg(timeout=30)
            if answer["parent_header"].get("msg_id") == msg_id:
                break
    return dict(reply["content"])


def local_processes_with(text: str) -> dict[int, str]:
    """pid -> command line of this machine's processes whose command line contains *text*."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found[int(proc.name)] = cmdline
    return found


async def wait_exit(proc: Any, limit: float = 30) -> int:
    """The exit status of a local or SSH process, waited for at most *limit* seconds."""
    result = await asyncio.wait_for(proc.wait(), limit)
    status = getattr(result, "exit_status", result)
    assert isinstance(status, int)
    return status
