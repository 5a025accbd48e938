"""A Scala kernel (Apache Toree) from `spec install ssh --language scala`, run through the
gateway on a testbed host, Spark in local mode. Stdin reaches Scala code only through Toree's
own input stream, not ``scala.io.StdIn`` (see the stdin test).

Toree 0.5 is built for Scala 2.12 and needs Spark 3.5 (it crashes with the Spark 4 of the test
extra), so it lives in its own environment, outside ``make test``'s default installs (~410 MB):

    python3 -m venv /opt/kernelfleet-test/toree-venv
    /opt/kernelfleet-test/toree-venv/bin/pip install "pyspark>=3.5,<3.6" apache-toree

(or point KF_TEST_TOREE_VENV at such an environment). Skipped, with this reason, without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.client import result_of, stdout_of
from kernelfleet.specs.builders import SpecOptions
from kernelfleet.specs.installer import install
from tests.conftest import client_for, temp_gateway
from tests.specs.fleet import gateway_env_for

pytestmark = [pytest.mark.ssh, pytest.mark.slow, pytest.mark.timeout(240)]

VENV = Path(os.environ.get("KF_TEST_TOREE_VENV", "/opt/kernelfleet-test/toree-venv"))


def toree_parts() -> tuple[str, str] | None:
    jars = glob.glob(str(VENV / "lib" / "python3*" / "site-packages" / "toree" / "lib" / "*.jar"))
    homes = glob.glob(str(VENV / "lib" / "python3*" / "site-packages" / "pyspark"))
    if not jars or not homes or shutil.which("java") is None:
        return None
    return jars[0], homes[0]


async def execute(ws: Any, code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run *code*; Toree may publish a Spark job's result after its idle status, so a missing
    result is waited for a moment longer."""
    reply, iopub = await ws.execute(code)
    msg_id = iopub[0]["parent_header"].get("msg_id") if iopub else None
    if reply.get("status") == "ok" and not any(m["msg_type"] == "execute_result" for m in iopub):
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while True:
                    msg = await ws.recv()
                    if msg["parent_header"].get("msg_id") == msg_id:
                        iopub.append(msg)
                        if msg["msg_type"] == "execute_result":
                            break
    return reply, iopub


@pytest.fixture
async def scala_spec(
    fleet_bed: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Any]:
    parts = toree_parts()
    if parts is None:
        pytest.skip(f"Apache Toree with Spark 3.5 is not installed in {VENV} (see this module)")
    jar, spark_home = parts
    host = fleet_bed.host(2)
    root = Path(fleet_bed.dir) / "scala-specs" / tmp_path.name  # same path on the hosts
    install(
        SpecOptions(
            kernel_name="kf_scala",
            language="scala",
            toree_jar=jar,
            spark_home=spark_home,
            spark_master="local[1]",
            extra_spark_opts="--conf spark.ui.enabled=false",
            python=sys.executable,
            remote_hosts=(host.ip,),
            launch_timeout=40,
        ),
        root / "kernels",
    )
    async with gateway_env_for(fleet_bed, root, tmp_path, monkeypatch):
        yield host
    shutil.rmtree(root, ignore_errors=True)


async def test_scala_kernel_runs_on_a_host(
    scala_spec: Any, fleet_bed: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    host = scala_spec
    async with temp_gateway() as gw:
        client = client_for(gw)
        started = time.monotonic()
        kernel = await client.start_kernel("kf_scala")
        kid = kernel["id"]
        ws = await client.connect(kid)
        try:
            reply, iopub = await execute(ws, "sc.appName")
            ready = time.monotonic() - started
            assert reply["status"] == "ok", reply
            assert kid in str(result_of(iopub))
            reply, iopub = await execute(
                ws, 'scala.io.Source.fromFile("/proc/sys/kernel/hostname").mkString.trim'
            )
            assert host.name in str(result_of(iopub))
            reply, iopub = await execute(ws, "sc.parallelize(1 to 1000).map(_.toLong).sum.toLong")
            assert "500500" in str(result_of(iopub)), iopub
        finally:
            ws.close()
            await client.shutdown_kernel(kid)
    deadline = time.monotonic() + 15
    while fleet_bed.processes_matching(host, kid) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not fleet_bed.processes_matching(host, kid)
    with capsys.disabled():
        print(f"\n[scala] POST -> first result {ready:.2f} s")


#: Toree's own stdin stream: ``read()`` sends an ``input_request`` when its buffer is empty.
TOREE_INPUT = """val in = kernel.factory.newKernelInputStream("name? ", false)
val first = in.read()
val rest = new Array[Byte](in.available())
in.read(rest)
println("hello " + new String(Array(first.toByte) ++ rest, "UTF-8"))"""


async def test_scala_stdin_only_through_toree_s_input_stream(scala_spec: Any) -> None:
    """Toree (0.5) does not connect ``scala.io.StdIn`` to the stdin channel:
    ``StdIn.readLine("name? ")`` sends no ``input_request`` even with ``allow_stdin``, prints its
    prompt as ordinary stdout and returns null at once (end of input). Input from the client
    works through Toree's own API, ``kernel.factory.newKernelInputStream(prompt, password)``
    (or ``kernel.in``), whose reads send ``input_request``; the gateway carries it both ways."""
    async with temp_gateway() as gw:
        client = client_for(gw)
        kid = (await client.start_kernel("kf_scala"))["id"]
        ws = await client.connect(kid)
        try:
            reply, _ = await execute(ws, "1 + 1")  # Toree is up (the first cell takes long)
            assert reply["status"] == "ok", reply
            # without on_input, execute() fails on any input_request
            reply, iopub = await asyncio.wait_for(
                ws.execute(
                    # flushed before the reply: under load Toree may send buffered stdout
                    # after the cell is idle otherwise
                    'val answer = scala.io.StdIn.readLine("name? ")\nprintln(answer == null)\n'
                    "Console.flush()",
                    allow_stdin=True,
                ),
                60,
            )
            assert reply["status"] == "ok", reply
            assert stdout_of(iopub) == "name? true\n"

            asked: list[dict[str, Any]] = []

            def answer(content: dict[str, Any]) -> str:
                asked.append(content)
                return "Ada"

            reply, iopub = await asyncio.wait_for(ws.execute(TOREE_INPUT, on_input=answer), 60)
            assert reply["status"] == "ok", reply
            assert asked == [{"prompt": "name? ", "password": False}]
            assert stdout_of(iopub) == "hello Ada\n"
        finally:
            ws.close()
            await client.shutdown_kernel(kid)
