"""The bare limit: a local ipykernel started and reached directly with jupyter_client (async).

Readiness follows ``AsyncKernelClient.wait_for_ready`` (send ``kernel_info_request``, wait for
the reply on shell, confirm iopub delivers) but the clock stops at the first
``kernel_info_reply`` — ``wait_for_ready`` itself then spends a fixed 0.2 s flushing iopub,
which is not part of any kernel's start-up and would flatter the gateway if it were counted.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from queue import Empty
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager

from benchmarks.common import BenchEnv


class BareKernel:
    """One kernel started with AsyncKernelManager and an AsyncKernelClient on its channels."""

    def __init__(self, env: BenchEnv, kernel_name: str = "python3") -> None:
        self.env = env
        self.km = AsyncKernelManager(kernel_name=kernel_name)
        self.kc: AsyncKernelClient | None = None
        self._log: Any = None

    async def start(self) -> dict[str, float]:
        """Start and wait until ready. Returns phase times (seconds from the call)."""
        t0 = time.perf_counter()
        self._log = open(  # noqa: ASYNC230, SIM115 - tiny local file; closed in shutdown()
            self.env.log_dir / f"bare-{id(self):x}.log", "ab", buffering=0
        )
        await self.km.start_kernel(
            env=self.env.kernel_env(), stdout=self._log, stderr=subprocess.STDOUT
        )
        t_launched = time.perf_counter()
        kc = self.km.client()
        kc.start_channels()
        self.kc = kc
        first_reply: float | None = None
        while True:
            kc.kernel_info()
            try:
                msg = await kc.shell_channel.get_msg(timeout=1)
            except Empty:
                msg = None
            if msg is not None and msg["msg_type"] == "kernel_info_reply":
                if first_reply is None:
                    first_reply = time.perf_counter()
                try:  # the same iopub check wait_for_ready makes
                    await kc.iopub_channel.get_msg(timeout=0.2)
                except Empty:
                    pass
                else:
                    break
            if not await self.km.is_alive():
                raise RuntimeError("bare kernel died before replying to kernel_info")
            if time.perf_counter() - t0 > 60:
                raise RuntimeError("bare kernel did not answer kernel_info within 60 s")
        t_ready = time.perf_counter()
        await self.drain_iopub()
        return {
            "launch": t_launched - t0,
            "first_reply": (first_reply or t_ready) - t0,
            "ready": t_ready - t0,
        }

    async def drain_iopub(self, quiet: float = 0.05) -> None:
        assert self.kc is not None
        while True:
            try:
                await self.kc.iopub_channel.get_msg(timeout=quiet)
            except Empty:
                return

    async def execute(self, code: str) -> tuple[float, int, int]:
        """Run *code* until idle and execute_reply.

        Returns (seconds, bytes of stdout stream text, number of stream messages).
        """
        kc = self.kc
        assert kc is not None
        t0 = time.perf_counter()
        msg_id = kc.execute(code)
        nbytes = 0
        nmsgs = 0
        # iopub first (its idle status follows the reply), so output is consumed while the
        # kernel produces it; then the reply, which is already queued on shell.
        while True:
            msg = await kc.iopub_channel.get_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            mtype = msg["msg_type"]
            if mtype == "stream":
                nbytes += len(msg["content"]["text"])
                nmsgs += 1
            elif mtype == "status" and msg["content"]["execution_state"] == "idle":
                break
        while True:
            msg = await kc.shell_channel.get_msg(timeout=60)
            if msg["parent_header"].get("msg_id") == msg_id:
                if msg["content"].get("status") != "ok":
                    raise RuntimeError(f"execute failed: {msg['content']}")
                break
        return time.perf_counter() - t0, nbytes, nmsgs

    async def shutdown(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
            self.kc = None
        with contextlib.suppress(Exception):
            if self.km.has_kernel:
                await self.km.shutdown_kernel(now=False)
        if self._log is not None:
            self._log.close()
            self._log = None
