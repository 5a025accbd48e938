"""Kernel logs: where a local kernel's stdout/stderr go, and reading the end of any kernel's.

"My kernel died" must be debuggable without shell access: local kernels write to one file per
kernel id in the gateway's log directory (provisioners whose ``gateway_keeps_log`` is set),
remote provisioners keep theirs where the kernel runs and expose it through
``get_kernel_log``; :func:`kernel_log` reads either.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from kernelfleet.kernels.record import KernelRecord
from kernelfleet.provisioners.base import KernelfleetProvisioner


def open_log(record: KernelRecord, directory: str) -> Any:
    """Create the log file of a local kernel (0600, in a 0700 directory); blocking."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, f"{record.id}.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return None
    record.log_path = path
    record.log_file = os.fdopen(fd, "ab", buffering=0)
    return record.log_file


def reopen_log(record: KernelRecord) -> Any:
    """Append to the log file of a reattached local kernel (for its next restart); blocking."""
    if not record.log_path:
        return None
    try:
        fd = os.open(record.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return None
    record.log_file = os.fdopen(fd, "ab", buffering=0)
    return record.log_file


async def kernel_log(record: KernelRecord, max_bytes: int) -> str | None:
    """The end of the kernel's stdout/stderr (from its provisioner for remote kernels), or
    None when no log is kept."""
    prov = record.manager.provisioner if record.manager is not None else None
    if isinstance(prov, KernelfleetProvisioner):
        text = await prov.get_kernel_log(max_bytes)
        if text is not None:
            return text
    if record.log_path:
        return await asyncio.to_thread(tail_file, record.log_path, max_bytes)
    return None


def tail_file(path: str, max_bytes: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def working_dir(env: dict[str, str]) -> str | None:
    """``KERNEL_WORKING_DIR`` is a path on the notebook server's host: use it only if it
    exists here; blocking."""
    path = env.get("KERNEL_WORKING_DIR")
    if path and os.path.isdir(path):
        return path
    return None
