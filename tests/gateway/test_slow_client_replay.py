"""A client that stops reading is cut off; when it reconnects with its session id it gets the
output it never received, up to the session buffer's bound, and is told how much was dropped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import client_for, temp_gateway

pytestmark = pytest.mark.timeout(120)

LIMITS = {
    "BridgeSettings": {"max_pending_mb": 1, "stall_seconds": 1.0},
    "KernelRegistry": {"iopub_buffer_mb": 4},
}
#: ~48 MB of stdout over a few seconds (the stall rule needs time to pass), far more than the
#: 1 MB a client may fall behind, the socket buffers and the 4 MB a session keeps.
FLOOD = """import sys, time
for i in range(48000):
    sys.stdout.write('%07d' % i + 'x' * 993 + '\\n')
    if i % 2000 == 0:
        sys.stdout.flush()
        time.sleep(0.15)
"""


async def test_a_cut_off_client_gets_its_pending_output_and_hears_what_was_dropped(
    kernelspec_dir: Path,
) -> None:
    async with temp_gateway(**LIMITS) as gw:
        c = client_for(gw)
        kid = (await c.start_kernel())["id"]
        record = gw.registry.records[kid]
        slow = await c.connect(kid, session_id="reader")
        request = slow.make(
            "execute_request",
            {"code": FLOOD, "silent": False, "store_history": False, "allow_stdin": False},
        )
        msg_id = await slow.send(request)
        # the client reads nothing (tornado's client stops reading its socket): it is cut off
        async with asyncio.timeout(60):
            while record.connections:
                await asyncio.sleep(0.1)
        slow.close()

        back = await c.connect(kid, session_id="reader")
        stdout = ""
        notices = ""
        async with asyncio.timeout(60):
            while True:
                msg = await back.recv()
                if msg["msg_type"] == "stream":
                    if msg["content"]["name"] == "stdout":
                        stdout += msg["content"]["text"]
                    elif "[kernelfleet]" in msg["content"]["text"]:
                        notices += msg["content"]["text"]
                done = msg["msg_type"] == "status" and msg["parent_header"].get("msg_id") == msg_id
                if done and msg["content"]["execution_state"] == "idle":
                    break
        assert "MB of output" in notices and "was dropped" in notices, notices
        assert "KF_IOPUB_BUFFER_MB" in notices
        lines = stdout.splitlines()
        # what is replayed is the newest output, in order, and close to the 4 MB kept
        assert lines[-1].startswith("0047999")
        numbers = [int(line[:7]) for line in lines if line[:7].isdigit()]
        assert numbers == sorted(numbers)
        assert 2 * 1024 * 1024 < len(stdout) <= 4 * 1024 * 1024 + 64 * 1024
        _, iopub = await back.execute("print('still here')")
        assert any("still here" in m["content"].get("text", "") for m in iopub)
        back.close()
        await c.shutdown_kernel(kid)
