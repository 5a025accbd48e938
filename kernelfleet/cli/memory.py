"""Give memory back: the gateway's large buffers go back to the OS as soon as they are freed.

glibc's malloc raises its mmap threshold every time a large block is freed (up to 32 MiB), so
after the first burst of large websocket messages, later ones of that size come from the heap,
and a freed heap is seldom returned: a gateway that once carried 20 clients' 10 MiB messages
would keep ~400 MB for good. Fixing the threshold at 128 KiB (which also turns the dynamic
raise off) serves every block of that size or more from its own mapping, unmapped when freed.
Measured by tests/gateway/test_resource_bounds.py: back to baseline + ~30 MB after the crowd
instead of staying at the peak. Other C libraries (musl) return large blocks anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


def return_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds; False where there is no glibc ``mallopt``."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    ok: bool = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return ok and bool(mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD) == 1)
