"""The JSON-lines protocol between the gateway and a host agent, for any line: the reader on
either side answers or drops it and goes on reading; nothing it is sent crashes it.

Agent side (``launchers/agent.py``, run as the bootstrap runs it): every request line that is a
JSON object gets exactly one well-formed reply with its id; other lines are answered with an
error event or ignored; a status request sent last is still answered. Launches are fuzzed with
the process start replaced (nothing is executed) and the state directory in a temporary one.

Gateway side (``transport/agent_client.py``): replies resolve only the request with their id,
events go to the callback, anything else is dropped, and the connection stays open; a hello
that is not one is a ``HostDown``, never another exception.
"""

from __future__ import annotations

import asyncio
import json
import sys
import types
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from kernelfleet.transport import agent_client as ac
from kernelfleet.transport.agent_client import (
    AgentClient,
    AgentRequestError,
    HostDown,
    SSHTarget,
    parse_line,
)
from kernelfleet.transport.protocol import _AGENT_MODULES, AGENT_VERSION
from tests.fuzz.strategies import fuzz_settings, hostile_text, json_values

#: A failing example with a 100 kB line must still be reported (not turned into an error).
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

# -- lines ---------------------------------------------------------------------------------------


def deep(depth: int) -> bytes:
    return b'{"id":1,"op":' + b"[" * depth + b"]" * depth + b"}"


OPS = ["status", "host", "signal", "abort", "cleanup", "log", "launch", "launch", "launch",
       "nope", "__init__", "_", "handle", "run", "send"]  # fmt: skip
FIELDS = ["kernel_id", "signum", "max_bytes", "keep_log", "argv", "env", "user", "timeout",
          "ip", "port_range", "ports", "log_dir", "cwd", "connection", "kernel_name",
          "prohibited_uids"]  # fmt: skip
#: Addresses that bind or fail with OSError at once: no name lookups, and none of the values
#: (5, "a\x00") on which hostlib.try_hold leaks its socket (TypeError; reported).
SAFE_IPS = st.sampled_from([None, "", "127.0.0.1", "0.0.0.0", "::1"])
values = json_values | st.sampled_from(
    ["k1", "../../etc", "a" * 200, 0, -1, 9, 2**64, "9", "1e999", "nan", [], {}, ["/bin/true"],
     [40000, 40010], ["a", "b"], {"KERNEL_X": "1"}, {"A=B": "x"}, "root", "nobody", "/tmp"]
)  # fmt: skip


KERNEL_IDS = st.sampled_from(["k1", "kid-1", "6e7d2293-b825-464e-8d0f-a0e77d9e48b4"])


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-formed requests (an int id, a known op, a valid kernel id) with hostile
    fields; now and then anything at all."""
    request: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        request["id"] = draw(st.integers(0, 2**40) if draw(st.integers(0, 3)) else json_values)
    if draw(st.integers(0, 9)):
        request["op"] = draw(st.sampled_from(OPS) if draw(st.integers(0, 3)) else hostile_text)
    if draw(st.integers(0, 3)):
        request["kernel_id"] = draw(KERNEL_IDS)
    if request.get("op") == "launch" and draw(st.booleans()):
        request["argv"] = ["/bin/true", "{connection_file}"]
        request["env"] = {"KERNEL_X": "1"}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True)):
        request[name] = draw(SAFE_IPS if name == "ip" else values)
    if request.get("op") == "launch" and "ip" not in request:
        request["ip"] = "127.0.0.1"  # never a name to resolve
    return request


lines = (
    requests().map(lambda r: json.dumps(r).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=40)
    | st.builds(lambda b: b"\xff" + b, st.binary(max_size=10))
    | st.sampled_from([b"", b"{", b"{}", b"[]", b"null", b'{"id": 1}', b'{"op": "status"}',
                       b"NaN", b'{"id": 1, "op": "status"}{}', b"\x00", deep(50_000)])
)  # fmt: skip

# -- the agent, loaded as the bootstrap loads it ----------------------------------------------


def load_agent() -> types.ModuleType:
    """Install the agent's helper modules (``kernelfleet_hostlib``, ``kernelfleet_cgroups``)
    and run agent.py, as _BOOTSTRAP_CODE does."""
    files = resources.files("kernelfleet.launchers")
    for name, file in _AGENT_MODULES:
        source = files.joinpath(file).read_text("utf-8")
        module = types.ModuleType(name)
        module.__source__ = source  # type: ignore[attr-defined]
        sys.modules[name] = module
        exec(compile(source, name, "exec"), module.__dict__)
    agent = types.ModuleType("kernelfleet_agent")
    exec(compile(files.joinpath("agent.py").read_text("utf-8"), "agent", "exec"), agent.__dict__)
    return agent


@pytest.fixture
def agent_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    for name, _ in _AGENT_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    agent = load_agent()
    for name, _ in _AGENT_MODULES:
        monkeypatch.setitem(sys.modules, name, sys.modules[name])

    def no_process(launch: dict[str, Any], *args: Any) -> Any:
        raise agent.AgentError("exec", f"executable not found: {launch['argv'][0]!r:.50}")

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    agent.popen_kernel = no_process  # nothing is ever executed
    agent.runtime_root = lambda uid: str(state / str(uid))
    yield agent


class Collect:
    """The agent's stdout writer."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def messages(self) -> list[dict[str, Any]]:
        out = []
        for line in bytes(self.data).splitlines():
            message = json.loads(line)  # everything the agent writes is one JSON object
            assert isinstance(message, dict)
            out.append(message)
        return out


async def run_agent(agent: types.ModuleType, data: bytes, limit: int = 0) -> list[Any]:
    """Feed *data* to a fresh agent's read loop (line limit: the agent's own) until EOF."""
    writer = Collect()
    instance = agent.Agent(asyncio.get_running_loop(), writer)
    reader = asyncio.StreamReader(limit=limit or agent.MAX_LINE)
    reader.feed_data(data)
    reader.feed_eof()
    async with asyncio.timeout(60):
        await instance.run(reader)
        while instance.tasks:
            await asyncio.gather(*instance.tasks, return_exceptions=True)
    return writer.messages()


LAST = {"id": "last", "op": "status"}


@fuzz_settings(300)
@given(body=st.lists(lines, max_size=6))
async def test_the_agent_answers_each_request_and_reads_on_after_any_line(
    agent_module: types.ModuleType, body: list[bytes]
) -> None:
    data = b"".join(line.replace(b"\n", b" ") + b"\n" for line in body)
    data += json.dumps(LAST).encode() + b"\n"
    try:
        messages = await run_agent(agent_module, data)
    except RecursionError:
        # a known gap (reported): the agent's loop catches ValueError only; see
        # test_a_line_nested_too_deep_is_an_error_event_not_the_end_of_the_agent
        assert any(b"[" * 1000 in line for line in body)
        event("RecursionError (known)")
        return
    requests = [r for r in map(parse_line, data.splitlines()) if r is not None]
    replies = [m for m in messages if "ok" in m]
    assert len(replies) == len(requests)  # one reply per request object, whatever it held
    for reply in replies:
        assert reply["ok"] in (True, False)
        if reply["ok"] is False:
            assert isinstance(reply["error"]["kind"], str)
            assert isinstance(reply["error"]["message"], str)
            event(f"error kind {reply['error']['kind']}")
    last = [m for m in replies if m.get("id") == "last"]
    assert last and last[-1]["ok"] is True and last[-1]["kernels"] == {}
    for m in messages:
        if "ok" not in m:
            assert m.get("event") == "error" and isinstance(m.get("message"), str)
    event(f"{len(requests)} requests")


async def test_a_line_nested_too_deep_is_an_error_event_not_the_end_of_the_agent(
    agent_module: types.ModuleType,
) -> None:
    data = deep(50_000) + b"\n" + json.dumps(LAST).encode() + b"\n"
    messages = await run_agent(agent_module, data)
    assert messages[0]["event"] == "error"
    assert messages[-1]["id"] == "last" and messages[-1]["ok"] is True


async def test_an_overlong_line_is_an_error_event_and_ends_the_session(
    agent_module: types.ModuleType,
) -> None:
    """By design (agent.py): past the line limit the stream is out of step, so the agent says
    so and stops reading; its kernels keep running for the next agent."""
    data = b'{"id": 1, "op": "status", "pad": "' + b"x" * 4096 + b'"}\n' + b'{"id": 2}\n'
    messages = await run_agent(agent_module, data, limit=1024)
    assert messages == [{"event": "error", "message": "request line too long"}]


# -- the gateway's reader ----------------------------------------------------------------------


class FakeStdin:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.sent.append(json.loads(data))


class FakeProcess:
    def __init__(self, stdout: asyncio.StreamReader) -> None:
        self.stdout = stdout
        self.stderr = asyncio.StreamReader()
        self.stderr.feed_eof()
        self.stdin = FakeStdin()


class FakeConnection:
    def __init__(self, process: FakeProcess) -> None:
        self.process = process
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True

    async def wait_closed(self) -> None:
        return None

    async def create_process(self, *args: Any, **kwargs: Any) -> FakeProcess:
        return self.process


#: asyncssh's readline has no line limit; asyncio's default (64 KiB) would end the session.
NO_LIMIT = 2**26


async def open_client(events: list[dict[str, Any]]) -> tuple[AgentClient, asyncio.StreamReader]:
    stdout = asyncio.StreamReader(limit=NO_LIMIT)
    process = FakeProcess(stdout)
    client = AgentClient(
        SSHTarget("h1"), FakeConnection(process), process, {"event": "hello"}, events.append
    )  # type: ignore[arg-type]
    return client, stdout


def raising(message: dict[str, Any]) -> None:
    raise RuntimeError("a broken event handler")


@fuzz_settings(300)
@given(body=st.lists(lines | requests().map(lambda r: json.dumps(r).encode()), max_size=8))
async def test_the_gateway_drops_what_is_not_a_reply_and_stays_connected(
    body: list[bytes],
) -> None:
    events: list[dict[str, Any]] = []
    client, stdout = await open_client(events)
    try:
        pending = asyncio.ensure_future(client.request("status"))
        await asyncio.sleep(0)  # the request is sent: id 1
        for line in body:
            stdout.feed_data(line.replace(b"\n", b" ") + b"\n")
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert client.is_open, client.closed.result() if client.closed.done() else ""
        for message in filter(None, map(parse_line, body)):
            if message.get("id") is None and message.get("event"):
                assert message in events
        if pending.done():  # some line answered id 1: only a reply with the int id 1
            try:
                reply = pending.result()
                assert type(reply["id"]) is int and reply["id"] == 1 and reply.get("ok")
            except AgentRequestError as exc:
                assert isinstance(exc.kind, str) and isinstance(exc.message, str)
        else:
            stdout.feed_data(b'{"id": 1, "ok": true, "kernels": {}}\n')
            async with asyncio.timeout(10):
                assert (await pending)["kernels"] == {}
    finally:
        stdout.feed_eof()
        await client.close()


@fuzz_settings(200)
@given(error=json_values)
async def test_an_error_reply_of_any_shape_is_an_agent_request_error(error: Any) -> None:
    client, stdout = await open_client([])
    try:
        pending = asyncio.ensure_future(client.request("log", kernel_id="k"))
        await asyncio.sleep(0)
        stdout.feed_data(json.dumps({"id": 1, "ok": False, "error": error}).encode() + b"\n")
        async with asyncio.timeout(10):
            with pytest.raises(AgentRequestError):
                await pending
        assert client.is_open
    finally:
        stdout.feed_eof()
        await client.close()


async def test_a_broken_event_handler_does_not_stop_the_reader() -> None:
    stdout = asyncio.StreamReader(limit=NO_LIMIT)
    process = FakeProcess(stdout)
    client = AgentClient(
        SSHTarget("h1"), FakeConnection(process), process, {"event": "hello"}, raising
    )  # type: ignore[arg-type]
    pending = asyncio.ensure_future(client.request("status"))
    await asyncio.sleep(0)
    stdout.feed_data(b'{"event": "exit", "kernel_id": "k"}\n{"id": [1]}\n{"id": true}\n')
    stdout.feed_data(b'{"id": 1, "ok": true}\n')
    async with asyncio.timeout(10):
        assert (await pending)["id"] == 1
    assert client.is_open
    stdout.feed_eof()
    await client.close()


hello_objects = st.fixed_dictionaries(
    {
        "event": st.just("hello"),
        "version": st.sampled_from([AGENT_VERSION] * 6 + ["kernelfleet-agent/0", None]),
    },
    optional={
        "error": st.sampled_from([None] * 4 + ["", "state dir unsafe"]) | values,
        "kernels": st.sampled_from([{}, {"k1": {"alive": True, "pid": 1}}]) | values,
        "ip": values,
        "hostname": values,
    },
).map(lambda h: json.dumps(h).encode())
hellos = st.one_of(hello_objects, hello_objects, lines)


@fuzz_settings(200)
@given(hello=hellos)
async def test_any_first_line_opens_a_client_or_is_host_down(
    hello: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdout = asyncio.StreamReader(limit=NO_LIMIT)
    stdout.feed_data(hello.replace(b"\n", b" ") + b"\n")
    process = FakeProcess(stdout)
    conn = FakeConnection(process)

    async def connect(*args: Any, **kwargs: Any) -> FakeConnection:
        return conn

    monkeypatch.setattr(ac.asyncssh, "connect", connect)
    try:
        client = await AgentClient.open(SSHTarget("h1", connect_timeout=5), lambda m: None)
    except HostDown as exc:
        assert exc.host == "h1" and exc.reason
        assert conn.aborted
        event("host down")
        return
    event("open")
    assert isinstance(client.hello.get("kernels", {}), dict) and client.hostname is not None
    stdout.feed_eof()
    await client.close()


@pytest.mark.xfail(
    reason="agent.py creates a launch's runtime directory before all of the request is "
    "checked (log_dir, port_range): a malformed launch leaves it behind; "
    "launchers/agent.py owns the fix",
    strict=True,
)
async def test_a_malformed_launch_leaves_no_directory(
    agent_module: types.ModuleType, tmp_path: Path
) -> None:
    launches = [{"log_dir": 5}, {"port_range": "ab"}, {"timeout": "soon"}]
    data = b"".join(
        json.dumps(
            {
                "id": i,
                "op": "launch",
                "kernel_id": f"k{i}",
                "argv": ["/bin/true"],
                "ip": "127.0.0.1",
            }
            | fields
        ).encode()
        + b"\n"
        for i, fields in enumerate(launches)
    )
    replies = await run_agent(agent_module, data)
    assert [r["error"]["kind"] for r in replies] == ["internal"] * 3
    assert "ValueError" in replies[2]["error"]["message"]  # refused before any directory
    assert not [p for p in (tmp_path / "state").rglob("k*") if p.is_dir()]
