"""Run `kernelfleet serve` as a real process for tests that kill or restart the gateway."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from kernelfleet.client import GatewayClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Every gateway process started by a test; the conftest kills what a failed test left.
RUNNING: list[GatewayProcess] = []


class GatewayProcess:
    """One gateway process; ``client`` talks to it. Always ``stop()`` or ``kill()`` it."""

    def __init__(
        self, env: dict[str, str], *args: str, token: str = "tok", cwd: str | None = None
    ) -> None:
        """*cwd*: the process's working directory (default: this process's). ``python -m``
        puts it first on ``sys.path``: a tree of another version's package goes there."""
        self.port = free_port()
        self.token = token
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("KF_")}
        full_env.update(env)
        full_env["KF_TOKEN"] = token
        self.log_path = Path(full_env.get("KF_DATA_DIR", "/tmp")) / f"gateway-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in _closed()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kernelfleet",
                "serve",
                "--port",
                str(self.port),
                "--port-retries",
                "0",
                *args,
            ],
            env=full_env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        RUNNING.append(self)
        self._wait_up()
        self.client = GatewayClient(f"http://127.0.0.1:{self.port}", token=token)

    def _wait_up(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited: {self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"gateway did not start: {self.output()}")

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._closed()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            code = self.proc.wait(timeout=60)
        else:
            code = self.proc.returncode
        self._closed()
        return code

    def _closed(self) -> None:
        if not self._log.closed:
            self._log.close()


def kernel_pids(kernel_id: str) -> list[int]:
    """Processes whose environment carries KERNEL_ID=<kernel_id>."""
    needle = f"KERNEL_ID={kernel_id}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                env = Path(f"/proc/{entry}/environ").read_bytes()
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            if needle in env.split(b"\0") and b") Z " not in stat:
                pids.append(int(entry))
    return pids
