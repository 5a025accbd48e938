"""Small asyncio helpers shared by the gateway's background tasks."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel *task* and wait until it has finished (its cancellation is not re-raised here,
    unless the caller itself is being cancelled)."""
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    current = asyncio.current_task()
    if current is not None and current.cancelling():
        raise asyncio.CancelledError


def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None elsewhere (musl, macOS)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return getattr(libc, "malloc_trim", None) if libc is not None else None
    except OSError:
        return None


_TRIM = _malloc_trim()


async def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc ``malloc_trim``): after a burst
    of output the gateway's memory returns to its working size instead of staying at the
    burst's peak. In a thread: it walks the heap (milliseconds)."""
    if _TRIM is not None:
        await asyncio.to_thread(_TRIM, 0)
