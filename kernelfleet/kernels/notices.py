"""Messages the gateway itself writes into a kernel's output, for every connected client.

Every message the gateway makes, rather than relays, is built here on one header
(:func:`_message`); :mod:`~kernelfleet.kernels.wire` only converts frames and makes none.

A ``status`` message tells clients of a state no kernel reports itself: ``restarting`` while the
gateway restarts a kernel, ``dead`` once it is gone. A notice is an iopub ``stream`` message on
``stderr`` (a notebook shows it under the cell that runs, or the next one), used when the
gateway did something to the kernel that its user must know and that no kernel message says: a
restart that moved the kernel to another host, output dropped for a slow client. Refusal
replies answer a cell that no kernel can run (its host is unreachable) with the reason as the
cell's error.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from kernelfleet.kernels.timestamps import format_timestamp, utcnow
from kernelfleet.kernels.wire import KernelMessage


def _message(
    channel: str,
    msg_type: str,
    content: dict[str, Any],
    parent: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> KernelMessage:
    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": msg_type,
        "session": "kernelfleet",
        "username": "kernelfleet",
        "date": format_timestamp(utcnow()),
        "version": "5.3",
    }
    parts = [json.dumps(part).encode() for part in (header, parent or {}, metadata or {}, content)]
    return KernelMessage(channel, parts, header)


def status_message(state: str) -> KernelMessage:
    """An iopub ``status`` message with ``execution_state`` *state* (``restarting``, ``dead``)."""
    return _message("iopub", "status", {"execution_state": state})


def notice_message(text: str) -> KernelMessage:
    """An iopub stderr ``stream`` message carrying *text* (a line break is added)."""
    return _message("iopub", "stream", {"name": "stderr", "text": f"[kernelfleet] {text}\n"})


def loss_notice(replica: str, died_at: str, requests: list[str], complete: bool) -> KernelMessage:
    """The notice a client of a gateway replica that died (at *died_at*, ISO 8601) gets from
    the replica it reconnected to (:mod:`~kernelfleet.kernels.failover`). Its metadata says the
    same for programs: ``{"kernelfleet": {"lost": {"messages": -1, "requests": [msg_id, ...],
    "sent_before": died_at}}}``: the output or replies of *requests* may be incomplete (-1: how
    many messages is unknown), and a request the client sent before *died_at* and has no
    answer to may never have reached the kernel (the replica died with it)."""
    if requests:
        what = (
            f"output or replies of the {len(requests)} request(s) running then may be "
            "incomplete; run those cells again if their results matter"
        )
    else:
        what = "no request was running then"
    if not complete:
        what += "; some output from after the stop was too old or too large to keep"
    when = died_at[11:19] + " UTC" if len(died_at) >= 19 else died_at
    text = (
        f"This kernel's gateway replica {replica} stopped at {when}, and this connection "
        f"moved to another replica: the kernel kept running, {what}."
    )
    lost = {"messages": -1, "requests": list(requests), "sent_before": died_at}
    metadata = {"kernelfleet": {"lost": lost}}
    content = {"name": "stderr", "text": f"[kernelfleet] {text}\n"}
    return _message("iopub", "stream", content, metadata=metadata)


def refusal_replies(request: dict[str, Any], reason: str) -> list[KernelMessage]:
    """What a client gets for an ``execute_request`` (header *request*) that no kernel can
    run now: busy, the *reason* as the cell's error output and reply, idle — so a notebook
    shows why under the cell instead of waiting forever."""
    error = {"ename": "KernelUnavailable", "evalue": reason, "traceback": [reason]}
    return [
        _message("iopub", "status", {"execution_state": "busy"}, request),
        _message("iopub", "error", error, request),
        _message("shell", "execute_reply", {"status": "error", **error}, request),
        _message("iopub", "status", {"execution_state": "idle"}, request),
    ]


def moved_notice(old_host: str, new_host: str) -> KernelMessage:
    return notice_message(
        f"This kernel's host {old_host} was unreachable, so it was restarted on {new_host}: "
        "its state (variables, imports, open files) is gone. Run your setup cells again."
    )


def standin_kernel_info(request: dict[str, Any], reason: str, language: str) -> list[KernelMessage]:
    """The answer to a ``kernel_info_request`` for a kernel that has no process now (its host
    is unreachable): enough for a notebook to count the kernel as connected, so that its cells
    reach the gateway and get :func:`refusal_replies`, and its Restart button still works."""
    content = {
        "status": "ok",
        "protocol_version": "5.3",
        "implementation": "kernelfleet-unavailable",
        "implementation_version": "0",
        "language_info": {"name": language or "python"},
        "banner": reason,
        "help_links": [],
    }
    return [
        _message("iopub", "status", {"execution_state": "busy"}, request),
        _message("shell", "kernel_info_reply", content, request),
        _message("iopub", "status", {"execution_state": "idle"}, request),
    ]
