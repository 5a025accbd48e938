"""jupyter_server's own gateway client against our gateway, booted in-process on the same loop.

This is the inverse of jupyter_server's ``tests/test_gateway.py`` (which fakes the gateway): here
the client side is jupyter_server's real code (``GatewayClient``, ``GatewayMappingKernelManager``,
``GatewayKernelManager``, ``GatewayKernelSpecManager``, ``GatewayWebSocketConnection``) and the
gateway side is ours, with real ipykernels. Only the browser end of the websocket proxy is faked
(:class:`FakeBrowserSocket` records what jupyter_server would forward to the browser tab).
See ``../shared/docs/contract.md`` for every fact checked here.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session
from jupyter_server.gateway.connections import GatewayWebSocketConnection
from jupyter_server.gateway.gateway_client import GatewayClient as JupyterGatewayClient
from jupyter_server.gateway.managers import (
    GatewayKernelManager,
    GatewayKernelSpecManager,
    GatewayMappingKernelManager,
)
from tornado import web
from tornado.websocket import WebSocketHandler
from traitlets import Instance, Unicode
from traitlets.config import LoggingConfigurable

from kernelfleet.gateway.app import Gateway
from kernelfleet.kernels import timestamps
from tests.conftest import TOKEN, add_kernelspec, temp_gateway

#: jupyter_server's base_url in these tests: resource URLs must be rewritten under it.
SERVER_BASE = "/jupyter/"
#: A complete 1x1 PNG, so the logo bytes are known exactly.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8ffff3f0005fe02fea7d6a4e30000000049454e44ae426082"
)


class FakeServer(LoggingConfigurable):
    """What the gateway managers read from their parent ServerApp, and nothing more."""

    base_url = Unicode(SERVER_BASE)
    root_dir = Unicode()
    kernel_manager = Instance(GatewayMappingKernelManager, allow_none=True)


class FakeBrowserSocket(WebSocketHandler):
    """The browser tab's websocket as jupyter_server's proxy sees it: it records each frame."""

    def __init__(self) -> None:  # no request, no application: nothing real behind it
        self.frames: asyncio.Queue[str | bytes] = asyncio.Queue()

    def write_message(self, message: Any, binary: bool = False) -> Any:
        self.frames.put_nowait(message)


#: Tabs opened by the current test, closed at teardown even when the test fails.
OPEN_TABS: list[Tab] = []


class Tab:
    """A browser tab's kernel connection, proxied by jupyter_server's GatewayWebSocketConnection."""

    def __init__(self, km: GatewayKernelManager, session_id: str | None = None) -> None:
        self.browser = FakeBrowserSocket()
        self.session = Session(session=session_id or uuid.uuid4().hex, username="tab")
        self.conn = GatewayWebSocketConnection(
            parent=km, websocket_handler=self.browser, session=self.session
        )

    async def open(self) -> Tab:
        OPEN_TABS.append(self)
        await self.conn.connect()
        assert self.conn.ws_future is not None
        async with asyncio.timeout(30):
            await self.conn.ws_future
            while self.conn.ws is None:
                await asyncio.sleep(0.01)
        return self

    def close(self) -> None:
        if not self.conn.disconnected:
            self.conn.disconnect()

    def send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        msg = self.session.msg(msg_type, content)
        msg["channel"] = channel
        self.conn.handle_incoming_message(json.dumps(msg, default=json_default))
        return str(msg["header"]["msg_id"])

    async def recv(self) -> dict[str, Any]:
        frame = await self.browser.frames.get()
        assert isinstance(frame, str), "jupyter_server forwards legacy JSON text frames only"
        value: dict[str, Any] = json.loads(frame)
        return value

    async def until(self, predicate: Any, within: float = 30) -> dict[str, Any]:
        """Read frames until one satisfies *predicate* (at most *within* seconds); return it."""
        async with asyncio.timeout(within):
            while True:
                msg = await self.recv()
                if predicate(msg):
                    return msg

    async def execute(
        self, code: str, within: float = 30
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run *code*; returns (execute_reply content, its iopub messages up to idle)."""
        msg_id = self.send("execute_request", {"code": code, "silent": False})
        return await self.finished(msg_id, within)

    async def finished(
        self, msg_id: str, within: float = 30
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Wait for the reply *and* the idle status of request *msg_id* (in either order).

        Only then may the next execute_request go out: after an error, ipykernel aborts the
        requests that reach it before it has finished handling that error.
        """
        reply: dict[str, Any] | None = None
        iopub: list[dict[str, Any]] = []
        async with asyncio.timeout(within):
            while reply is None or not any(_is_idle(m) for m in iopub):
                msg = await self.recv()
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["channel"] == "shell":
                    reply = msg["content"]
                elif msg["channel"] == "iopub":
                    iopub.append(msg)
        return reply, iopub


def _is_idle(msg: dict[str, Any] | None) -> bool:
    return (
        msg is not None
        and msg["msg_type"] == "status"
        and msg["content"]["execution_state"] == "idle"
    )


def _stdout(iopub: list[dict[str, Any]]) -> str:
    return "".join(
        m["content"]["text"]
        for m in iopub
        if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
    )


def _result(iopub: list[dict[str, Any]]) -> str | None:
    for m in iopub:
        if m["msg_type"] == "execute_result":
            return str(m["content"]["data"]["text/plain"])
    return None


class JupyterSide:
    """jupyter_server's gateway-mode kernel and kernelspec managers, pointed at one gateway."""

    def __init__(self, root_dir: Path) -> None:
        self.server = FakeServer(root_dir=str(root_dir))
        self.mkm = GatewayMappingKernelManager(parent=self.server)
        self.server.kernel_manager = self.mkm
        self.ksm = GatewayKernelSpecManager(parent=self.server)

    async def start(self) -> tuple[str, GatewayKernelManager]:
        kernel_id = await self.mkm.start_kernel(kernel_name="python3", path="")
        km = self.mkm.get_kernel(kernel_id)
        assert isinstance(km, GatewayKernelManager)
        return kernel_id, km

    async def shutdown_all(self) -> None:
        while OPEN_TABS:
            OPEN_TABS.pop().close()
        await self.mkm.shutdown_all(now=True)


@pytest.fixture
def client_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A clean environment for jupyter_server's singleton GatewayClient, restored afterwards.

    The client reads ``JUPYTER_GATEWAY_*`` and ``KERNEL_*`` from the process environment and
    writes ``KERNEL_LAUNCH_TIMEOUT`` back into it (and into a class attribute).
    """
    for name in list(os.environ):
        if name.startswith(("JUPYTER_GATEWAY_", "KERNEL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KERNEL_LAUNCH_TIMEOUT", "40")
    monkeypatch.setattr(JupyterGatewayClient, "KERNEL_LAUNCH_TIMEOUT", 40)
    JupyterGatewayClient.clear_instance()
    GatewayMappingKernelManager._kernels.clear()  # a class-level dict in jupyter_server
    yield monkeypatch
    JupyterGatewayClient.clear_instance()
    GatewayMappingKernelManager._kernels.clear()


def configure_client(gw: Gateway, token: str | None = TOKEN) -> JupyterGatewayClient:
    traits: dict[str, Any] = {
        "url": gw.url.rstrip("/"),
        "request_timeout": 60.0,
        "gateway_retry_interval": 0.1,
        "gateway_retry_interval_max": 0.2,
        "gateway_retry_max": 1,
    }
    if token is not None:
        traits["auth_token"] = token
    JupyterGatewayClient.clear_instance()
    return JupyterGatewayClient.instance(**traits)


@contextlib.asynccontextmanager
async def jupyter_side(
    gw: Gateway, root: Path, token: str | None = TOKEN
) -> AsyncIterator[JupyterSide]:
    configure_client(gw, token)
    side = JupyterSide(root)
    try:
        yield side
    finally:
        await side.shutdown_all()


@pytest.fixture
async def gw(kernelspec_dir: Path, client_env: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    (kernelspec_dir / "kernels" / "python3" / "logo-64x64.png").write_bytes(PNG)
    add_kernelspec(
        kernelspec_dir,
        "bobs-only",
        {"metadata": {"process_proxy": {"config": {"authorized_users": ["bob"]}}}},
    )
    async with temp_gateway() as gateway:
        yield gateway


@pytest.fixture
async def side(gw: Gateway, tmp_path: Path) -> AsyncIterator[JupyterSide]:
    async with jupyter_side(gw, tmp_path) as js:
        yield js


# -- kernelspecs ----------------------------------------------------------------------------


async def test_kernelspec_list_and_single_spec(side: JupyterSide) -> None:
    specs = await side.ksm.list_kernel_specs()
    assert specs["default"] == "python3"
    # (>=: the machine may have more specs on the system Jupyter path, e.g. Debian's ir)
    assert set(specs["kernelspecs"]) >= {"python3", "bobs-only"}
    py = specs["kernelspecs"]["python3"]
    assert py["spec"]["language"] == "python"
    assert isinstance(py["spec"]["argv"], list)
    # Our resource URLs carry /kernelspecs/, so jupyter_server re-roots them under its base_url.
    assert py["resources"]["logo-64x64"] == f"{SERVER_BASE}kernelspecs/python3/logo-64x64.png"

    side.mkm.default_kernel_name = "something-else"
    assert set(await side.ksm.get_all_specs()) == set(specs["kernelspecs"])
    assert side.mkm.default_kernel_name == "python3"  # adopted from our "default"

    single = await side.ksm.get_kernel_spec("python3")
    assert single["name"] == "python3"
    assert single["spec"]["display_name"] == "Python 3"
    with pytest.raises(KeyError):
        await side.ksm.get_kernel_spec("no-such-spec")


async def test_kernelspecs_with_kernel_username_set(
    gw: Gateway, tmp_path: Path, client_env: pytest.MonkeyPatch
) -> None:
    client_env.setenv("KERNEL_USERNAME", "alice")
    async with jupyter_side(gw, tmp_path) as side:
        assert side.ksm.base_endpoint.endswith("/api/kernelspecs?user=alice")
        specs = await side.ksm.list_kernel_specs()
        # Filtered for the user: alice may not use the bob-only spec.
        assert "python3" in specs["kernelspecs"]
        assert "bobs-only" not in specs["kernelspecs"]
        # The client now sends GET /api/kernelspecs?user=alice/python3 (contract.md): we must
        # answer with the single model, not the list (Kernel Gateway's list broke the server).
        single = await side.ksm.get_kernel_spec("python3")
        assert single["name"] == "python3"
        assert "kernelspecs" not in single
        with pytest.raises(KeyError):
            await side.ksm.get_kernel_spec("no-such-spec")
        # The same variable is forwarded in the start request: the kernel is alice's (the
        # shared token is a trusted notebook server, allowed to name its user).
        kernel_id, _ = await side.start()
        assert gw.registry.records[kernel_id].owner == "alice"


async def test_logo_fetch_through_get_kernel_spec_resource(side: JupyterSide) -> None:
    assert await side.ksm.get_kernel_spec_resource("python3", "logo-64x64.png") == PNG
    assert await side.ksm.get_kernel_spec_resource("python3", "logo-svg.svg") is None
    assert await side.ksm.get_kernel_spec_resource("no-such-spec", "logo-64x64.png") is None


# -- kernels --------------------------------------------------------------------------------


async def test_start_execute_with_output_and_delete(side: JupyterSide, gw: Gateway) -> None:
    kernel_id, km = await side.start()
    uuid.UUID(kernel_id)
    assert km.kernel is not None and km.kernel["name"] == "python3"
    listed = await side.mkm.list_kernels()
    assert [m["id"] for m in listed] == [kernel_id]

    tab = await Tab(km).open()
    reply, iopub = await tab.execute("print('hello from the gateway'); 40 + 2")
    assert reply["status"] == "ok"
    assert _stdout(iopub) == "hello from the gateway\n"
    assert _result(iopub) == "42"
    assert [m["content"]["execution_state"] for m in iopub if m["msg_type"] == "status"] == [
        "busy",
        "idle",
    ]
    # Every frame carries top-level msg_id/msg_type (jupyter_server's debug summary reads them).
    assert all(m["msg_type"] == m["header"]["msg_type"] for m in iopub)
    model = await km.refresh_model()
    assert model is not None and model["connections"] == 1
    assert side.mkm._kernel_connections[kernel_id] == 1
    tab.close()

    await side.mkm.shutdown_kernel(kernel_id)
    assert kernel_id not in gw.registry.records
    assert await km.refresh_model() is None  # 404 -> gone
    await km.shutdown_kernel()  # deleting again: our 404 is tolerated by the client
    assert await side.mkm.list_kernels() == []


async def test_interrupt_stops_a_running_sleep(side: JupyterSide) -> None:
    kernel_id, km = await side.start()
    tab = await Tab(km).open()
    msg_id = tab.send("execute_request", {"code": "import time; print('zzz'); time.sleep(60)"})
    # Interrupt once the cell is inside sleep(): a SIGINT that lands while ipykernel is still
    # setting the cell up is not a KeyboardInterrupt in the user's code.
    await tab.until(
        lambda m: m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id
    )
    model = await km.refresh_model()
    assert model is not None and model["execution_state"] == "busy"
    await side.mkm.interrupt_kernel(kernel_id)
    reply, _ = await tab.finished(msg_id, within=20)
    assert reply["status"] == "error"
    assert reply["ename"] == "KeyboardInterrupt"
    model = await km.refresh_model()
    assert model is not None and model["execution_state"] == "idle"
    _, iopub = await tab.execute("print('alive')")
    assert _stdout(iopub) == "alive\n"


async def test_restart_loses_the_state_and_keeps_the_id(side: JupyterSide) -> None:
    kernel_id, km = await side.start()
    tab = await Tab(km).open()
    await tab.execute("x = 41")
    _, iopub = await tab.execute("print(x + 1)")
    assert _stdout(iopub) == "42\n"

    await side.mkm.restart_kernel(kernel_id)
    assert km.kernel_id == kernel_id
    model = await km.refresh_model()
    assert model is not None and model["id"] == kernel_id
    assert [m["id"] for m in await side.mkm.list_kernels()] == [kernel_id]
    # The same websocket keeps working against the new kernel process.
    msg_id = tab.send("execute_request", {"code": "print('x' in globals())"})
    seen: list[dict[str, Any]] = []

    def finished(msg: dict[str, Any]) -> bool:
        seen.append(msg)
        return _is_idle(msg) and msg["parent_header"].get("msg_id") == msg_id

    await tab.until(finished)
    assert _stdout([m for m in seen if m["parent_header"].get("msg_id") == msg_id]) == "False\n"
    # A requested restart is not announced with an iopub "restarting" status: JupyterLab
    # reads that as "the kernel died and is being restarted automatically" (a dialog).
    states = [m["content"]["execution_state"] for m in seen if m["msg_type"] == "status"]
    assert "restarting" not in states
    tab.close()


async def test_last_activity_without_microseconds_parses(
    side: JupyterSide, client_env: pytest.MonkeyPatch
) -> None:
    """Every timestamp the gateway takes falls on a whole second (isoformat would drop .%f)."""

    def whole_second() -> dt.datetime:
        return dt.datetime.now(dt.UTC).replace(microsecond=0)

    real = timestamps.utcnow
    for module in list(sys.modules.values()):  # every kernelfleet module that took the clock
        if module.__name__.startswith("kernelfleet") and getattr(module, "utcnow", None) is real:
            client_env.setattr(module, "utcnow", whole_second)
    _, km = await side.start()
    assert km.kernel is not None and km.kernel["last_activity"].endswith(".000000Z")
    model = await km.refresh_model()  # strptime("%Y-%m-%dT%H:%M:%S.%fZ") inside
    assert model is not None and model["last_activity"].endswith(".000000Z")
    assert km.last_activity.microsecond == 0
    assert km.last_activity.tzinfo is not None
    listed = await side.mkm.list_kernels()  # refreshes each model the same way
    assert listed[0]["last_activity"].endswith(".000000Z")


async def test_comm_open_with_a_buffer_does_not_kill_the_stream(side: JupyterSide) -> None:
    """legacy_buffers=strip (default): the comm_open arrives as JSON and the tab keeps working.

    With binary frames jupyter_server's ``_read_messages`` dies on ``bytes.decode('utf8')``
    and every later message for the tab is lost (contract.md).
    """
    _, km = await side.start()
    tab = await Tab(km).open()
    reply, iopub = await tab.execute(
        "import comm\n"
        "c = comm.create_comm(target_name='kf-test', data={'n': 1},"
        " buffers=[b'\\x00\\xff\\xfe not utf-8'])"
    )
    assert reply["status"] == "ok"
    opened = [m for m in iopub if m["msg_type"] == "comm_open"]
    assert len(opened) == 1
    assert opened[0]["content"]["target_name"] == "kf-test"
    assert opened[0]["content"]["data"] == {"n": 1}
    assert opened[0]["buffers"] == []
    for n in range(3):
        reply, iopub = await tab.execute(f"print('still here {n}')")
        assert _stdout(iopub) == f"still here {n}\n"
    tab.close()


# -- websocket reconnect --------------------------------------------------------------------


async def test_reconnect_with_same_session_gets_output_produced_while_away(
    side: JupyterSide,
) -> None:
    _, km = await side.start()
    session_id = uuid.uuid4().hex
    first = await Tab(km, session_id).open()
    msg_id = first.send(
        "execute_request", {"code": "import time; time.sleep(1); print('while away')"}
    )
    await first.until(
        lambda m: (
            m["msg_type"] == "status"
            and m["parent_header"].get("msg_id") == msg_id
            and m["content"]["execution_state"] == "busy"
        )
    )
    first.close()
    # Wait (on the gateway's own state) until the cell has finished while nobody listened.
    async with asyncio.timeout(20):
        while (await km.refresh_model())["execution_state"] != "idle":
            await asyncio.sleep(0.05)
    left = []
    while not first.browser.frames.empty():
        left.append(json.loads(first.browser.frames.get_nowait()))
    assert "stream" not in [m["msg_type"] for m in left]  # the first tab really was gone

    second = await Tab(km, session_id).open()
    stream = await second.until(
        lambda m: m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id
    )
    assert stream["content"]["text"] == "while away\n"
    await second.until(lambda m: _is_idle(m) and m["parent_header"].get("msg_id") == msg_id)
    # And the reconnected tab is a normal, working connection.
    _, iopub = await second.execute("print('back')")
    assert _stdout(iopub) == "back\n"
    second.close()


# -- auth -----------------------------------------------------------------------------------


async def test_empty_token_works_when_our_auth_is_off(
    kernelspec_dir: Path, client_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No token configured: jupyter_server still sends ``Authorization: token `` (empty)."""
    async with (
        temp_gateway(Authenticator={"auth_enabled": False, "token": ""}) as gw,
        jupyter_side(gw, tmp_path, token=None) as side,
    ):
        client = JupyterGatewayClient.instance()
        assert client.load_connection_args()["headers"]["Authorization"] == "token "
        specs = await side.ksm.list_kernel_specs()
        assert "python3" in specs["kernelspecs"]
        _, km = await side.start()
        tab = await Tab(km).open()
        _, iopub = await tab.execute("print('no auth')")
        assert _stdout(iopub) == "no auth\n"
        tab.close()


async def test_empty_token_is_refused_with_401_when_our_auth_is_on(
    gw: Gateway, client_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with jupyter_side(gw, tmp_path, token=None) as side:
        with pytest.raises(web.HTTPError) as err:
            await side.ksm.list_kernel_specs()
        assert err.value.status_code == 401
        assert err.value.args[1] == "Unauthorized"  # our JSON "reason", passed through
        with pytest.raises(web.HTTPError) as err:
            await side.start()
        assert err.value.status_code == 401
    assert gw.registry.records == {}
