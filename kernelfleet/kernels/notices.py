"""Messages the gateway itself writes into a kernel's output, for every connected client.

A notice is an iopub ``stream`` message on ``stderr`` (a notebook shows it under the cell that
runs, or the next one), used when the gateway did something to the kernel that its user must
know and that no kernel message says: a restart that moved the kernel to another host.
"""

from __future__ import annotations

import json
import uuid

from kernelfleet.kernels.record import format_timestamp, utcnow
from kernelfleet.kernels.wire import KernelMessage


def notice_message(text: str, session_id: str = "kernelfleet") -> KernelMessage:
    """An iopub stderr ``stream`` message carrying *text* (a line break is added)."""
    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": "stream",
        "session": session_id,
        "username": "kernelfleet",
        "date": format_timestamp(utcnow()),
        "version": "5.3",
    }
    content = {"name": "stderr", "text": f"[kernelfleet] {text}\n"}
    parts = [json.dumps(part).encode() for part in (header, {}, {}, content)]
    return KernelMessage("iopub", parts, header)


def moved_notice(old_host: str, new_host: str) -> KernelMessage:
    return notice_message(
        f"This kernel's host {old_host} was unreachable, so it was restarted on {new_host}: "
        "its state (variables, imports, open files) is gone. Run your setup cells again."
    )
