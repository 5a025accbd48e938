"""What a crowd of clients sending the largest legal messages costs a real gateway process.

20 clients at once each send maximal legal websocket messages (just under
``KF_WS_MAX_MESSAGE_MB``; half on the v1 subprotocol with a binary buffer, half as legacy JSON
text) to one kernel, while 20 more send maximal request bodies (``KF_MAX_BODY_KB``). The
gateway's peak resident memory stays under its baseline plus 2 x (20 x the message limit),
and once the crowd is gone its memory comes back within 50 MB of the baseline. Memory is read
from ``/proc`` (``VmHWM`` after resetting it through ``clear_refs``), not from the test.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from pathlib import Path

import pytest
from jupyter_server.services.kernels.connection.base import serialize_msg_to_ws_v1
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.conftest import message_header as header
from tests.gatewayproc import GatewayProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CLIENTS = 20
MESSAGES_EACH = 3
MESSAGE_MB = 10
BODY_KB = 1024
MB = 1024 * 1024


def vm(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def v1_message(size: int) -> bytes:
    parts = [header("comm_msg"), {}, {}, {"comm_id": "nowhere", "data": {}}]
    encoded = [json.dumps(p).encode() for p in parts]
    room = size - sum(len(p) for p in encoded) - 8 * 8 - len("shell")
    return serialize_msg_to_ws_v1([*encoded, b"\x00" * room], "shell")  # type: ignore[no-any-return]


def legacy_message(size: int) -> str:
    shell = {
        "header": header("comm_msg"),
        "parent_header": {},
        "metadata": {},
        "content": {"comm_id": "nowhere", "data": {"blob": ""}},
        "channel": "shell",
    }
    room = size - len(json.dumps(shell))
    shell["content"]["data"]["blob"] = "x" * room  # type: ignore[index]
    return json.dumps(shell)


async def one_websocket(gw: GatewayProcess, kernel_id: str, index: int) -> None:
    v1 = index % 2 == 0
    url = f"ws://127.0.0.1:{gw.port}/api/kernels/{kernel_id}/channels?session_id=c{index}"
    conn = await websocket_connect(
        HTTPRequest(url, headers={"Authorization": f"token {gw.token}"}),
        subprotocols=["v1.kernel.websocket.jupyter.org"] if v1 else None,
        max_message_size=64 * MB,
    )
    size = MESSAGE_MB * MB - 4096
    payload: bytes | str = v1_message(size) if v1 else legacy_message(size)
    for _ in range(MESSAGES_EACH):
        await conn.write_message(payload, binary=v1)
    conn.close()


async def one_body(gw: GatewayProcess) -> int:
    body = json.dumps({"path": "p" * (BODY_KB * 1024 - 200), "type": "notebook", "name": "x"})
    status, _ = await gw.client.request("POST", "/api/sessions", json.loads(body))
    return status


async def test_a_crowd_of_maximal_messages_and_bodies_stays_within_the_memory_bound(
    kernelspec_dir: Path, tmp_path: Path
) -> None:
    env = {
        "JUPYTER_PATH": str(kernelspec_dir),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "KF_DATA_DIR": str(tmp_path / "gwdata"),
        "KF_CONFIG_DIR": str(tmp_path / "cfg"),
        "KF_WS_MAX_MESSAGE_MB": str(MESSAGE_MB),
        "KF_MAX_BODY_KB": str(BODY_KB),
        # 20 sessions start 20 kernels at once beside the crowd: on 2 loaded cores that can take
        # longer than the default 60 s, which is not what this test is about
        "KF_LAUNCH_TIMEOUT": "180",
    }
    gw = GatewayProcess(env)
    try:
        kid = (await gw.client.start_kernel())["id"]
        ws = await gw.client.connect(kid)
        await ws.execute("1")  # everything on the path is warm
        ws.close()
        pid = gw.proc.pid
        await asyncio.sleep(1)
        baseline = vm(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := current RSS
        statuses = await asyncio.gather(
            *(one_websocket(gw, kid, i) for i in range(CLIENTS)),
            *(one_body(gw) for _ in range(CLIENTS)),
        )
        peak = vm(pid, "VmHWM")
        bound = baseline + 2 * CLIENTS * MESSAGE_MB * MB
        print(f"gateway RSS baseline {baseline / MB:.0f} MB, peak {peak / MB:.0f} MB")
        assert all(s in (201, 400) for s in statuses[CLIENTS:]), Counter(statuses[CLIENTS:])
        assert peak < bound, f"peak {peak / MB:.0f} MB over {bound / MB:.0f} MB"
        ws = await gw.client.connect(kid)  # the gateway and the kernel still serve
        reply, _ = await ws.execute("2 + 2")
        assert reply["status"] == "ok"
        ws.close()
        after = vm(pid, "VmRSS")
        async with asyncio.timeout(60):  # freed memory goes back (kernelfleet.cli.memory)
            while (after := vm(pid, "VmRSS")) > baseline + 50 * MB:
                await asyncio.sleep(0.5)
        print(f"gateway RSS after {after / MB:.0f} MB")
    finally:
        assert gw.stop() == 0, gw.output()
    assert os.path.exists(gw.log_path)
