"""Local kernels that a restarted gateway can take back.

jupyter_client's ``LocalProvisioner`` only knows the kernel it spawned (its ``Popen``); after
``load_provisioner_info`` in a new gateway process it reports every kernel as exited. This
subclass keeps the kernel's pid, process group and start time in its checkpoint and, when it
has no ``Popen``, manages the process by pid: liveness through a pidfd (the process is the
same one only if its start time matches, so a recycled pid is never mistaken for the kernel),
signals to the process group, and :meth:`wait` awaiting the pidfd instead of polling.

A kernel profile's memory and CPU limits hold for local kernels as for SSH kernels: a cgroup
per kernel (:mod:`kernelfleet.launchers.cgroups`), which needs a gateway running as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.local_provisioner import (
    LocalProvisioner as _JupyterLocalProvisioner,
)

from kernelfleet.errors import LaunchFailed
from kernelfleet.launchers import cgroups
from kernelfleet.provisioners.base import Backend, KernelfleetProvisioner


def process_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of *pid*, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name may contain spaces or parentheses: fields follow the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None  # a zombie has exited
    return int(fields[19])


class LocalBackend(Backend):
    """Local kernels share nothing but the machine: stopping an orphan scans its processes."""

    async def stop_orphan(self, kernel_id: str) -> int:
        """Kill every local process left by kernel *kernel_id* (a launch the gateway never
        checkpointed); returns how many were found."""
        pids = await asyncio.to_thread(_processes_of_kernel, kernel_id)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)


class LocalProvisioner(_JupyterLocalProvisioner, KernelfleetProvisioner):  # type: ignore[misc]
    """Local kernels that survive, and are reattached after, a gateway restart.

    The ``auto`` stop mode shuts them down with the gateway (they share its machine), and the
    gateway keeps their log and gives them their working directory.
    """

    kernels_outlive_gateway = False
    gateway_keeps_log = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_time: int | None = None
        self.cgroups: list[str] = []

    def make_backend(self) -> Backend:
        return LocalBackend()

    @property
    def has_process(self) -> bool:
        return self.process is not None or self._adopted_alive()

    def _adopted_alive(self) -> bool:
        pid = self.pid
        if self.process is not None or not pid or self.start_time is None:
            return False
        return process_start_time(pid) == self.start_time

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        # Without 'independent', jupyter_client sets JPY_PARENT_PID and ipykernel exits as soon
        # as its parent (the gateway) does: kernels must outlive the gateway to be reattached.
        kwargs.setdefault("independent", True)
        limits = self.terms.limits if self.terms is not None else None
        if limits is not None:
            try:
                self.cgroups = await asyncio.to_thread(
                    cgroups.create, str(self.kernel_id), limits.memory, limits.cpus
                )
            except cgroups.CgroupError as exc:
                raise LaunchFailed(
                    f"Kernel '{self.kernel_spec.display_name}' not started: profile "
                    f"'{limits.profile}' sets limits and {exc}."
                ) from None
        info = await super().launch_kernel(cmd, **kwargs)
        if self.pid:
            if self.cgroups:  # at once: the new process is still loading Python
                await asyncio.to_thread(cgroups.join, self.cgroups, self.pid)
            self.start_time = process_start_time(self.pid)
        await self.checkpoint_reached()  # the pid: found and stopped if the gateway dies now
        return info

    def exit_reason(self) -> str | None:
        if not self.cgroups or not cgroups.oom_killed(self.cgroups):
            return None
        limits = self.terms.limits if self.terms is not None else None
        allows = (
            f"its profile '{limits.profile}' allows {limits.memory / 1024**2:.0f} MiB"
            if limits is not None and limits.memory
            else "its memory limit"
        )
        return f"it ran out of memory: {allows}, and the kernel was killed on reaching it"

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart)
        if self.cgroups:
            await asyncio.to_thread(cgroups.remove, self.cgroups)
            self.cgroups = []

    async def poll(self) -> int | None:
        if self.process is not None:
            return await super().poll()  # type: ignore[no-any-return]
        if self.pid and self.start_time is not None:
            return None if self._adopted_alive() else -1
        return 0

    async def wait(self) -> int | None:
        if self.process is not None:
            # Await the exit (pidfd) rather than jupyter_client's 0.1 s polling loop, then let
            # the base class reap the process and close its pipes.
            await self._pidfd_exit(self.process.pid)
            return await super().wait()  # type: ignore[no-any-return]
        pid = self.pid
        if not pid or not self._adopted_alive():
            return -1
        await self._pidfd_exit(pid, self.start_time)
        self.start_time = None
        return -1

    async def _pidfd_exit(self, pid: int, start_time: int | None = None) -> None:
        """Return once process *pid* has exited (or at once if it cannot be watched). With
        *start_time*, a pid now used by another process counts as exited."""
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        if start_time is not None and process_start_time(pid) != start_time:
            os.close(fd)  # the pidfd pins a process: checked after opening, no race
            return
        loop = asyncio.get_running_loop()
        exited = loop.create_future()

        def on_exit() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, on_exit)
        try:
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    async def send_signal(self, signum: int) -> None:
        if self.process is not None:
            await super().send_signal(signum)
            return
        if not self._adopted_alive():
            return
        with contextlib.suppress(ProcessLookupError):
            if self.pgid and self.pgid > 0:
                os.killpg(self.pgid, signum)
            elif self.pid:
                os.kill(self.pid, signum)

    async def kill(self, restart: bool = False) -> None:
        if self.process is not None:
            await super().kill(restart)
        else:
            await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        if self.process is not None:
            await super().terminate(restart)
        else:
            await self.send_signal(signal.SIGTERM)

    async def get_provisioner_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await super().get_provisioner_info()
        info["start_time"] = self.start_time
        info["cgroups"] = self.cgroups
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await super().load_provisioner_info(provisioner_info)
        self.start_time = provisioner_info.get("start_time")
        self.cgroups = list(provisioner_info.get("cgroups") or [])


def _processes_of_kernel(kernel_id: str) -> list[int]:
    """Pids whose environment says ``KERNEL_ID=<kernel_id>`` (kernels we started carry it)."""
    needle = f"KERNEL_ID={kernel_id}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        if needle in env.split(b"\x00"):
            pids.append(int(entry))
    return pids
