"""Small helpers of the conformance tests: deadlines that name what was awaited, message
filters, and the kernel-side code some tests install."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from kernelfleet.client import GatewayClient, KernelSocket

Message = dict[str, Any]

#: Generous: kernels on a loaded 2-core machine (or a remote host) may be slow; never a latency
#: assertion, only "it did not hang".
DEADLINE = 60.0


@contextlib.asynccontextmanager
async def within(what: str, seconds: float = DEADLINE) -> AsyncIterator[None]:
    """Fail the test naming *what* did not happen, rather than hang until the test timeout."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise AssertionError(f"{what}: nothing within {seconds:g} s") from None


def child_of(msg_id: str, msg_type: str | None = None, channel: str | None = None) -> Any:
    """A predicate for :meth:`KernelSocket.wait_for`: a message answering *msg_id*."""

    def match(msg: Message) -> bool:
        return (
            msg["parent_header"].get("msg_id") == msg_id
            and (msg_type is None or msg["msg_type"] == msg_type)
            and (channel is None or msg["channel"] == channel)
        )

    return match


def status_is(state: str) -> Callable[[Message], bool]:
    return lambda m: m["msg_type"] == "status" and m["content"]["execution_state"] == state


def of_type(iopub: list[Message], msg_type: str) -> list[Message]:
    return [m for m in iopub if m["msg_type"] == msg_type]


def stream(iopub: list[Message], name: str = "stdout") -> str:
    return "".join(
        m["content"]["text"] for m in of_type(iopub, "stream") if m["content"]["name"] == name
    )


async def run(ws: KernelSocket, code: str, **kwargs: Any) -> tuple[Message, list[Message]]:
    """Execute *code* within the deadline; returns (execute_reply content, its iopub)."""
    async with within(f"execution of {code[:60]!r}"):
        return await ws.execute(code, **kwargs)


async def run_ok(ws: KernelSocket, code: str, **kwargs: Any) -> list[Message]:
    reply, iopub = await run(ws, code, **kwargs)
    assert reply["status"] == "ok", f"{code!r} failed: {reply}"
    return iopub


async def wait_state(client: GatewayClient, kernel_id: str, state: str) -> dict[str, Any]:
    """Poll the kernel's model until its execution_state is *state* (a REST fact: no event)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while True:
        status, model = await client.request("GET", f"/api/kernels/{kernel_id}")
        if status == 200 and model["execution_state"] == state:
            return dict(model)
        if loop.time() > deadline:
            raise AssertionError(f"kernel {kernel_id} never reported {state!r}: {status} {model}")
        await asyncio.sleep(0.1)


async def wait_gone(client: GatewayClient, kernel_id: str) -> None:
    """Poll until GET /api/kernels/{id} answers 404."""
    async with within(f"kernel {kernel_id} gone (404)"):
        while (await client.request("GET", f"/api/kernels/{kernel_id}"))[0] != 404:
            await asyncio.sleep(0.1)


#: A comm target in the kernel: it greets on open, echoes every message (with the hex of the
#: buffers it received, and those buffers reversed), and records closed comm ids.
ECHO_TARGET = """
def _conformance_echo(comm, open_msg):
    comm.send({"opened": open_msg["content"]["data"]})

    @comm.on_msg
    def _on_msg(msg):
        got = [bytes(b) for b in msg["buffers"]]
        comm.send(
            {"echo": msg["content"]["data"], "received": [b.hex() for b in got]},
            buffers=[b[::-1] for b in got],
        )

    @comm.on_close
    def _on_close(msg):
        conformance_closed.append(comm.comm_id)

conformance_closed = []
get_ipython().kernel.comm_manager.register_target("conformance_echo", _conformance_echo)
"""


async def iopub_of(ws: KernelSocket, msg_id: str) -> list[Message]:
    """The iopub messages of request *msg_id* up to its idle status (others are kept)."""
    out: list[Message] = []
    async with within(f"iopub of request {msg_id} up to its idle status"):
        while not out or not status_is("idle")(out[-1]):
            out.append(await ws.wait_for(child_of(msg_id, channel="iopub")))
    return out
