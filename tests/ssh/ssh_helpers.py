"""Helpers for the SSH tests: kernelspecs in a temp dir, start/stop, run code."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

IMPERSONATED_USER = "kftuser"
SERVICE_USER = "kftsvc"
SYSTEM_PYTHON = "/usr/bin/python3"


class Specs:
    """Writes kernelspecs into a private directory and makes kernel managers for them."""

    def __init__(self, root: Path):
        self.root = root
        self.ksm = KernelSpecManager(kernel_dirs=[str(root)])

    def write(
        self,
        name: str,
        config: dict[str, Any] | None = None,
        *,
        argv: list[str] | None = None,
        env: dict[str, str] | None = None,
        interrupt_mode: str = "signal",
    ) -> str:
        spec = {
            "argv": argv or [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": name,
            "language": "python",
            "interrupt_mode": interrupt_mode,
            "env": env or {},
            "metadata": {
                "kernel_provisioner": {
                    "provisioner_name": "kernelfleet-ssh",
                    "config": config or {},
                }
            },
        }
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "kernel.json").write_text(json.dumps(spec))
        return name

    def manager(self, name: str) -> AsyncKernelManager:
        return AsyncKernelManager(kernel_name=name, kernel_spec_manager=self.ksm)


def kernel_env(**extra: str) -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], "KERNEL_USERNAME": "alice"}
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def running(
    km: AsyncKernelManager, env: dict[str, str] | None = None, ready: bool = True
) -> AsyncIterator[AsyncKernelManager]:
    """Start *km*'s kernel; always shut it down at the end."""
    try:
        await km.start_kernel(env=env or kernel_env())
        if ready:
            kc = km.client()
            kc.start_channels()
            try:
                await kc.wait_for_ready(timeout=30)
            finally:
                kc.stop_channels()
        yield km
    finally:
        with contextlib.suppress(Exception):
            if km.has_kernel:
                await km.shutdown_kernel(now=True)
            else:
                await km.cleanup_resources()


async def execute(km: AsyncKernelManager, code: str, limit: float = 30) -> tuple[str, Any]:
    """Run *code*; return (stdout text, the execute_reply content)."""
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=limit)
        msg_id = kc.execute(code)
        out: list[str] = []
        while True:
            msg = await kc.get_iopub_msg(timeout=limit)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        reply = await kc.get_shell_msg(timeout=limit)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = await kc.get_shell_msg(timeout=limit)
        return "".join(out), reply["content"]
    finally:
        kc.stop_channels()


async def wait_until(predicate: Any, limit: float, interval: float = 0.1) -> bool:
    """Test-side wait for an external fact (a process gone on a host) that has no event."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())
