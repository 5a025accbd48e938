"""Stdin: ``input()`` and ``getpass`` ask the client that ran the cell; without
``allow_stdin`` they fail at once instead of hanging.

No test covered this channel while ``input()`` was broken for every kernel (the stdin socket had
another ZMQ identity than the shell socket: commit 3791f65).
"""

from __future__ import annotations

import pytest

from kernelfleet.client import KernelSocket
from tests.conformance.conftest import Kernel
from tests.conformance.helpers import child_of, of_type, run, stream, within

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_input_asks_with_its_prompt_and_the_reply_reaches_the_cell(
    ws: KernelSocket,
) -> None:
    msg_id = await ws.send(
        ws.execute_request("name = input('name? ')\nprint('hello', name)", allow_stdin=True)
    )
    async with within("input_request"):
        request = await ws.wait_for(child_of(msg_id, "input_request"))
    assert request["channel"] == "stdin"
    assert request["content"] == {"prompt": "name? ", "password": False}
    await ws.answer(request, "Ada")
    async with within("the cell's end after input_reply"):
        reply, iopub = await ws.collect(msg_id)
    assert reply["status"] == "ok"
    assert stream(iopub) == "hello Ada\n"


async def test_getpass_asks_for_a_password(ws: KernelSocket) -> None:
    asked: list[dict[str, object]] = []

    def answer(content: dict[str, object]) -> str:
        asked.append(content)
        return "s3cret"

    reply, iopub = await run(
        ws,
        "import getpass\nsecret = getpass.getpass('token: ')\nprint(len(secret), secret[::-1])",
        on_input=answer,
    )
    assert asked == [{"prompt": "token: ", "password": True}]
    assert reply["status"] == "ok"
    assert stream(iopub) == "6 terc3s\n"


async def test_input_without_allow_stdin_raises_instead_of_waiting(ws: KernelSocket) -> None:
    reply, iopub = await run(ws, "input('never asked? ')")  # run() fails if it hangs
    assert reply["status"] == "error"
    assert reply["ename"] == "StdinNotImplementedError"
    assert [m["content"]["ename"] for m in of_type(iopub, "error")] == ["StdinNotImplementedError"]


async def test_input_asked_right_after_the_websocket_opened_reaches_the_client(
    fresh_kernel: Kernel,
) -> None:
    """No kernel_info handshake first (JupyterLab makes one; nbclient-style clients may not)."""
    for attempt in range(3):
        ws = await fresh_kernel.connect(handshake=False)
        try:
            msg_id = await ws.send(ws.execute_request("input('now? ')", allow_stdin=True))
            async with within(f"input_request of attempt {attempt}", 10):
                request = await ws.wait_for(child_of(msg_id, "input_request"))
            await ws.answer(request, "")
            async with within("the cell's end"):
                reply, _ = await ws.collect(msg_id)
            assert reply["status"] == "ok"
        finally:
            ws.close()
