"""End to end on a real host (a network namespace with its own sshd): the kernel launcher runs
there over SSH with a registration's environment, its kernel's connection info reaches the
listener on the gateway side, and a Jupyter client gets a kernel_info_reply from the host.
Forged, replayed and malformed frames sent from the host are refused (each logged once, with
the host's address) and the real launch still succeeds."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import sys
from collections.abc import AsyncIterator

import asyncssh
import pytest

from kernelfleet.launchers import respond
from kernelfleet.transport.listener import Registration, ResponseListener
from tests.listener.launch import KERNEL_ENV, kernel_info_and_shutdown, launcher_argv, wait_exit
from tests.testbed import Testbed, TestHost
from tests.transport.helpers import frame, info, wrong_key

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(180)]

#: Runs argv with an environment read from stdin: the key stays off every command line (the
#: testbed's sshd accepts no environment; a real backend passes it as the container's env).
EXEC_WITH_ENV = (
    "import json,os,sys;d=json.loads(sys.stdin.readline());"
    "os.execve(d['argv'][0],d['argv'],d['env'])"
)
#: Sends each hex-encoded frame of stdin on its own connection and prints each reply line.
SEND_FRAMES = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
for line in sys.stdin:
    with socket.create_connection((host, port), timeout=20) as s:
        s.sendall(bytes.fromhex(line.strip()))
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(100):
            reply += chunk
    print(reply.decode().strip() or "-", flush=True)
"""


@pytest.fixture
async def listener(bed: Testbed) -> AsyncIterator[ResponseListener]:
    lst = ResponseListener(ip=bed.gateway_ip, port=0)
    await lst.start()
    try:
        yield lst
    finally:
        await lst.close()


@pytest.fixture
async def ssh(bed: Testbed) -> AsyncIterator[asyncssh.SSHClientConnection]:
    conn = await asyncssh.connect(
        bed.host(1).ip,
        username="root",
        client_keys=[str(bed.key)],
        known_hosts=str(bed.known_hosts),
        agent_path=None,
    )
    try:
        yield conn
    finally:
        conn.close()
        await conn.wait_closed()


async def launch_on_host(
    ssh: asyncssh.SSHClientConnection, reg: Registration, address: str | None = None
) -> asyncssh.SSHClientProcess[str]:
    """Start the kernel launcher on the host with *reg*'s environment (its address replaced
    by *address* when given)."""
    env = {**KERNEL_ENV, "HOME": "/tmp", **reg.env}
    if address is not None:
        env["KF_RESPONSE_ADDRESS"] = address
    argv = launcher_argv("--curve", "--kernel-name", "python3", "--port-range", "45000..45099")
    proc = await ssh.create_process(
        f"exec {shlex.quote(sys.executable)} -c {shlex.quote(EXEC_WITH_ENV)}"
    )
    proc.stdin.write(json.dumps({"argv": argv, "env": env}) + "\n")
    proc.stdin.write_eof()
    return proc


async def send_from_host(
    ssh: asyncssh.SSHClientConnection, listener: ResponseListener, frames: list[bytes]
) -> list[str]:
    """The listener's answer to each of *frames*, each sent on its own connection from the
    host."""
    host, port = listener.bound_address
    done = await ssh.run(
        f"{shlex.quote(sys.executable)} -c {shlex.quote(SEND_FRAMES)} {host} {port}",
        input="".join(data.hex() + "\n" for data in frames),
        check=True,
        timeout=60,
    )
    return str(done.stdout).split()


async def finish(
    bed: Testbed,
    host: TestHost,
    reg: Registration,
    proc: asyncssh.SSHClientProcess[str],
    peer: str | None = None,
) -> None:
    """The launch succeeded: the kernel answers from the host; shut down, nothing is left.
    *peer*: where the frame came from, when not from the host itself."""
    got = await reg.wait()
    assert got["ip"] == host.ip and reg.peer == (peer or host.ip)
    assert 45000 <= got["shell_port"] <= 45099 and got.get("curve_publickey")
    content = await kernel_info_and_shutdown(got)
    assert content["status"] == "ok" and content["implementation"] == "ipython"
    assert await wait_exit(proc) == 0, proc.collect_output()
    assert not bed.processes_matching(host, "kernel_launcher.py")
    assert not bed.processes_matching(host, "ipykernel_launcher")
    leftovers = bed.run_in(host, "sh", "-c", "ls -d /tmp/kernelfleet-* 2>/dev/null || true")
    assert leftovers.stdout.strip() == ""


def rejections(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refused a frame" in r.getMessage()]


async def test_the_launcher_on_a_host_reports_its_kernel_which_answers(
    bed: Testbed, listener: ResponseListener, ssh: asyncssh.SSHClientConnection
) -> None:
    deadline = asyncio.get_running_loop().time() + 90
    with await listener.expect("e2e-basic", deadline) as reg:
        proc = await launch_on_host(ssh, reg)
        await finish(bed, bed.host(1), reg, proc)


async def test_forged_and_malformed_frames_from_the_host_are_refused_and_the_launch_succeeds(
    bed: Testbed,
    listener: ResponseListener,
    ssh: asyncssh.SSHClientConnection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    host = bed.host(1)
    with await listener.expect("e2e-hostile", asyncio.get_running_loop().time() + 90) as reg:
        stale = frame("e2e-hostile", reg.key, info(timestamp=1.0))
        hostile = {
            "auth_failed": frame("e2e-hostile", wrong_key()),
            "unknown_kernel": frame("not-launching", wrong_key()),
            "stale": stale,
            "invalid": frame("e2e-hostile", reg.key, info(hb_port=0)),
            "bad_magic": b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n",
            "bad_version": b"KFR\x09" + frame("e2e-hostile", wrong_key())[4:],
            "too_large": b"KFR\x01\xff\xff" + os.urandom(200),
            "truncated": frame("e2e-hostile", wrong_key())[:-7],
            "malformed": b"KFR\x01\x00\x20\x02a/" + bytes(30),  # a '/' in the kernel id
        }
        answers = await send_from_host(ssh, listener, list(hostile.values()))
        assert answers == list(hostile)
        assert not reg.done
        logged = rejections(caplog)
        assert len(logged) == len(hostile)
        for reason, message in zip(hostile, logged, strict=True):
            assert f"from {host.ip}: {reason} " in message
        assert reg.env["KF_RESPONSE_KEY"] not in caplog.text

        proc = await launch_on_host(ssh, reg)
        await finish(bed, host, reg, proc)


async def test_a_replayed_frame_of_a_real_launch_is_refused(
    bed: Testbed, listener: ResponseListener, ssh: asyncssh.SSHClientConnection
) -> None:
    """The launcher's own frame is captured on its way (a proxy on the gateway side), and
    sent again from the host after the launch: refused as a replay, to that registration and
    to the next launch of the same kernel, which succeeds with its own frame."""
    captured: list[bytes] = []

    async def recording_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        captured.append(data)
        up_reader, up_writer = await asyncio.open_connection(*listener.bound_address)
        up_writer.write(data)
        up_writer.write_eof()
        writer.write(await up_reader.read())
        up_writer.close()
        await writer.drain()
        writer.close()

    proxy = await asyncio.start_server(recording_proxy, bed.gateway_ip, 0)
    try:
        proxy_address = respond_address(proxy)
        with await listener.expect("e2e-replay") as reg:
            proc = await launch_on_host(ssh, reg, address=proxy_address)
            await finish(bed, bed.host(1), reg, proc, peer=bed.gateway_ip)
            (real,) = captured
            assert await send_from_host(ssh, listener, [real, real]) == ["replayed"] * 2
        with await listener.expect("e2e-replay") as again:
            tampered = bytearray(real)
            tampered[6 + 1 + len("e2e-replay")] ^= 1  # another nonce: no replay, not authentic
            answers = await send_from_host(ssh, listener, [real, bytes(tampered)])
            assert answers == ["replayed", "auth_failed"]
            proc = await launch_on_host(ssh, again)
            await finish(bed, bed.host(1), again, proc)
    finally:
        proxy.close()
        await proxy.wait_closed()


def respond_address(server: asyncio.Server) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    assert respond.split_address(f"{host}:{port}") == (host, port)
    return f"{host}:{port}"
