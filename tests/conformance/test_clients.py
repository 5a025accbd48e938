"""Several clients on one kernel (two websockets, two session ids), and a client that
reconnects in the middle of a cell.

IOPub is broadcast; shell, control and stdin replies reach only the connection that asked.
"Only" is checked with a barrier instead of a wait: the kernel answers requests in order on
one ROUTER socket, so a reply misrouted to the other client would reach it *before* that
client's own later reply, on the same ZMQ pipe and websocket.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kernelfleet.client import KernelSocket
from tests.conformance.conftest import Kernel
from tests.conformance.helpers import (
    Message,
    child_of,
    iopub_of,
    run,
    run_ok,
    stream,
    within,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def two_clients(
    kernel: Kernel, sockets: list[KernelSocket]
) -> tuple[KernelSocket, KernelSocket]:
    a, b = await kernel.connect(), await kernel.connect()
    sockets += [a, b]
    assert a.session_id != b.session_id
    return a, b


async def received_until(ws: KernelSocket, msg_id: str, channel: str) -> list[Message]:
    """Everything *ws* receives up to and including the *channel* reply to *msg_id*."""
    seen: list[Message] = []
    async with within(f"{channel} reply to {msg_id}"):
        while True:
            msg = await ws.recv()
            seen.append(msg)
            if msg["parent_header"].get("msg_id") == msg_id and msg["channel"] == channel:
                return seen


def answer_with(value: str, prompts: list[str]) -> Any:
    def on_input(content: dict[str, Any]) -> str:
        prompts.append(content["prompt"])
        return value

    return on_input


async def test_each_client_sees_the_iopub_of_the_others_executions(
    kernel: Kernel, sockets: list[KernelSocket]
) -> None:
    a, b = await two_clients(kernel, sockets)
    for runner, watcher, text in ((a, b, "from a"), (b, a, "from b")):
        msg_id = await runner.send(runner.execute_request(f"print({text!r})"))
        async with within(f"the cell printing {text!r}"):
            reply, own = await runner.collect(msg_id)
        assert reply["status"] == "ok"
        seen = await iopub_of(watcher, msg_id)
        assert stream(seen) == stream(own) == f"{text}\n"
        assert [m["msg_type"] for m in seen] == [m["msg_type"] for m in own]


async def test_shell_replies_reach_only_the_client_that_asked(
    kernel: Kernel, sockets: list[KernelSocket]
) -> None:
    a, b = await two_clients(kernel, sockets)
    a_exec = await a.send(a.execute_request("'a executes'"))
    a_info = await a.send(a.make("kernel_info_request", {}))
    a_seen = await received_until(a, a_info, "shell")
    assert [
        (m["msg_type"], m["parent_header"]["msg_id"]) for m in a_seen if m["channel"] == "shell"
    ] == [
        ("execute_reply", a_exec),
        ("kernel_info_reply", a_info),
    ]
    b_info = await b.send(b.make("kernel_info_request", {}))  # the barrier
    b_seen = await received_until(b, b_info, "shell")
    assert [m["parent_header"]["msg_id"] for m in b_seen if m["channel"] == "shell"] == [b_info]


async def test_input_request_reaches_only_the_client_whose_cell_asked(
    kernel: Kernel, sockets: list[KernelSocket]
) -> None:
    a, b = await two_clients(kernel, sockets)
    a_prompts: list[str] = []
    reply, iopub = await run(
        a, "print('a got', input('a? '))", on_input=answer_with("yes", a_prompts)
    )
    assert a_prompts == ["a? "] and stream(iopub) == "a got yes\n"
    # The barrier: b's own input_request comes after any of a's misrouted to b.
    b_exec = await b.send(b.execute_request("print('b got', input('b? '))", allow_stdin=True))
    async with within("b's input_request"):
        first = await b.wait_for(lambda m: m["channel"] == "stdin")
    assert first["parent_header"]["msg_id"] == b_exec, f"b was asked for a's input: {first}"
    assert first["content"]["prompt"] == "b? "
    await b.answer(first, "no")
    async with within("b's cell end"):
        reply, iopub = await b.collect(b_exec)
    assert reply["status"] == "ok" and stream(iopub) == "b got no\n"


@pytest.mark.timeout(180)
async def test_a_client_that_reconnects_gets_the_output_produced_while_away(
    kernel: Kernel, sockets: list[KernelSocket]
) -> None:
    """The client leaves after the cell's first line; a second client (another session) sees
    the cell finish; the first reconnects with its session id and is replayed the rest."""
    session = f"conformance-{uuid.uuid4().hex[:8]}"
    ws = await kernel.connect(session)
    observer = await kernel.connect()
    sockets += [ws, observer]
    ticks = 6
    cell = (
        f"import time\nfor i in range({ticks}):\n"
        "    print('tick', i, flush=True)\n    time.sleep(0.5)"
    )
    msg_id = await ws.send(ws.execute_request(cell))
    async with within("the cell's first tick"):
        first = await ws.wait_for(child_of(msg_id, "stream"))
    ws.close()
    before: list[Message] = [first, *ws.backlog]  # all the old connection got, to its close
    async with within("the old websocket's close"):
        while (raw := await ws.conn.read_message()) is not None:
            before.append(ws.decode(raw))
    await iopub_of(observer, msg_id)  # the cell ended while the client was away

    back = await kernel.connect(session)
    sockets.append(back)
    replayed = await iopub_of(back, msg_id)
    got = [m for m in before if child_of(msg_id, "stream")(m)] + replayed
    assert stream(got) == "".join(f"tick {i}\n" for i in range(ticks))
    assert stream(replayed), "nothing produced while the client was away came back"
    assert stream(await run_ok(back, "print('after the reconnect')")) == "after the reconnect\n"
