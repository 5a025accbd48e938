"""Frames as a launcher builds them, for the listener's tests."""

from __future__ import annotations

import os
import time
from typing import Any

from kernelfleet.launchers import respond

PORTS = {"shell_port": 40001, "iopub_port": 40002, "stdin_port": 40003, "control_port": 40004,
         "hb_port": 40005}  # fmt: skip


def info(**changes: Any) -> dict[str, Any]:
    """A valid connection-info payload (what kernel_launcher sends), with *changes*."""
    payload: dict[str, Any] = {
        **PORTS,
        "ip": "10.0.0.7",
        "transport": "tcp",
        "key": "a" * 64,
        "signature_scheme": "hmac-sha256",
        "kernel_name": "python3",
        "pid": 4242,
        "timestamp": time.time(),
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not _DROP}


_DROP = object()
#: ``info(key=DROP)``: the payload without that field.
DROP: Any = _DROP


def frame(kernel_id: str, key: bytes, payload: dict[str, Any] | None = None) -> bytes:
    return bytes(respond.seal_frame(kernel_id, key, info() if payload is None else payload))


def wrong_key() -> bytes:
    return os.urandom(32)
