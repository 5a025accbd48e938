"""The debugger (``debug_request`` on control, ``debug_event`` on iopub), driven in the order
JupyterLab's debugger panel drives it."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from kernelfleet.client import KernelSocket
from tests.conformance.conftest import Kernel
from tests.conformance.helpers import Message, of_type, stream, within

pytestmark = pytest.mark.asyncio(loop_scope="package")

_seq = itertools.count(1)

#: What JupyterLab sends as "initialize" (packages/debugger/src/session.ts).
INITIALIZE = {
    "clientID": "jupyterlab",
    "clientName": "JupyterLab",
    "adapterID": "python",
    "pathFormat": "path",
    "linesStartAt1": True,
    "columnsStartAt1": True,
    "supportsVariableType": True,
    "supportsVariablePaging": True,
    "supportsRunInTerminalRequest": True,
    "locale": "en",
}

CELL = """def conformance_double(n):
    doubled = n * 2
    return doubled
print(conformance_double(21))
"""
BREAK_LINE = 3  # "return doubled": `doubled` is set


async def debug(ws: KernelSocket, command: str, **arguments: Any) -> dict[str, Any]:
    """Send a DAP request on control; return the DAP response (asserting it succeeded)."""
    content = {"type": "request", "seq": next(_seq), "command": command, "arguments": arguments}
    async with within(f"debug_reply to {command}"):
        reply = await ws.request("debug_request", content, "control")
    assert reply["msg_type"] == "debug_reply"
    body: dict[str, Any] = reply["content"]
    assert body.get("success") is True, body
    assert body["command"] == command
    return body


def stopped(msg: Message) -> bool:
    return msg["msg_type"] == "debug_event" and msg["content"].get("event") == "stopped"


async def test_debug_info_answers_before_the_debugger_starts(ws: KernelSocket) -> None:
    info = (await debug(ws, "debugInfo"))["body"]
    assert info["isStarted"] is False
    assert info["hashMethod"] == "Murmur2"
    assert info["tmpFileSuffix"] == ".py"
    assert info["breakpoints"] == [] and info["stoppedThreads"] == []


@pytest.mark.timeout(180)
async def test_a_breakpoint_stops_the_cell_and_shows_its_local_variables(
    fresh_kernel: Kernel,
) -> None:
    ws = await fresh_kernel.connect()
    try:
        await debug(ws, "initialize", **INITIALIZE)
        assert (await debug(ws, "debugInfo"))["body"]["isStarted"] is True
        await debug(ws, "attach")
        path = (await debug(ws, "dumpCell", code=CELL))["body"]["sourcePath"]
        info = (await debug(ws, "debugInfo"))["body"]
        assert path.startswith(info["tmpFilePrefix"]) and path.endswith(info["tmpFileSuffix"])
        breakpoints = await debug(
            ws,
            "setBreakpoints",
            source={"path": path},
            breakpoints=[{"line": BREAK_LINE}],
            sourceModified=False,
        )
        assert [(b["verified"], b["line"]) for b in breakpoints["body"]["breakpoints"]] == [
            (True, BREAK_LINE)
        ]
        await debug(ws, "configurationDone")
        assert (await debug(ws, "debugInfo"))["body"]["breakpoints"] == [
            {"source": path, "breakpoints": [{"line": BREAK_LINE}]}
        ]

        msg_id = await ws.send(ws.execute_request(CELL))
        async with within("debug_event 'stopped' at the breakpoint"):
            event = await ws.wait_for(stopped)
        assert event["channel"] == "iopub"
        assert event["content"]["body"]["reason"] == "breakpoint"
        thread = event["content"]["body"]["threadId"]

        frames = (await debug(ws, "stackTrace", threadId=thread))["body"]["stackFrames"]
        top = frames[0]
        assert (top["name"], top["line"], top["source"]["path"]) == (
            "conformance_double",
            BREAK_LINE,
            path,
        )
        scopes = (await debug(ws, "scopes", frameId=top["id"]))["body"]["scopes"]
        local_scope = next(s for s in scopes if s["name"] == "Locals")
        variables = (
            await debug(ws, "variables", variablesReference=local_scope["variablesReference"])
        )["body"]["variables"]
        assert {v["name"]: v["value"] for v in variables} == {"n": "21", "doubled": "42"}

        await debug(ws, "continue", threadId=thread)
        async with within("the cell's end after continue"):
            reply, iopub = await ws.collect(msg_id)
        assert reply["status"] == "ok"
        assert stream(iopub) == "42\n"
        assert of_type(iopub, "error") == []
    finally:
        ws.close()
