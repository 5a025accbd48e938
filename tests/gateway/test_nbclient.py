"""nbclient executes a notebook through our gateway, using jupyter_server's gateway classes.

The kernel manager is jupyter_server's ``GatewayKernelManager`` (REST) and its client
``GatewayKernelClient`` (one websocket, opened with the synchronous ``websocket-client`` library,
read by a thread), i.e. what a server extension such as papermill-in-Jupyter uses in gateway
mode. Two consequences for this test:

- the synchronous websocket handshake blocks the calling event loop, so the gateway runs on its
  own loop in a thread (still in-process, still the real server and real kernels);
- ``GatewayKernelClient`` sends no ``Authorization`` header on that websocket (jupyter_server
  2.21.1 passes only the URL and TLS options), so the gateway runs with auth disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_server.gateway.gateway_client import GatewayClient as JupyterGatewayClient
from jupyter_server.gateway.managers import GatewayKernelClient, GatewayKernelManager
from nbclient import NotebookClient

from kernelfleet.gateway.app import Gateway
from tests.conftest import temp_gateway


@contextlib.contextmanager
def gateway_in_thread(**sections: dict[str, Any]) -> Iterator[Gateway]:
    """``temp_gateway`` running on its own event loop in a background thread."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        async with temp_gateway(**sections) as gw:
            state["stop"] = asyncio.Event()
            state["loop"] = asyncio.get_running_loop()
            state["gw"] = gw
            ready.set()
            await state["stop"].wait()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported to the test below
            state["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    ready.wait(60)
    if "gw" not in state:
        raise RuntimeError(f"the gateway did not start: {state.get('error')!r}")
    try:
        yield state["gw"]
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(60)
        assert not thread.is_alive(), "the gateway thread did not stop"
        if "error" in state:
            raise state["error"]


@pytest.fixture
def jupyter_client_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Isolate jupyter_server's singleton GatewayClient and the env it reads and writes."""
    for name in list(os.environ):
        if name.startswith(("JUPYTER_GATEWAY_", "KERNEL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KERNEL_LAUNCH_TIMEOUT", "40")
    monkeypatch.setattr(JupyterGatewayClient, "KERNEL_LAUNCH_TIMEOUT", 40)
    JupyterGatewayClient.clear_instance()
    yield
    JupyterGatewayClient.clear_instance()


def make_notebook() -> nbformat.NotebookNode:
    v4 = nbformat.v4
    return v4.new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        cells=[
            v4.new_markdown_cell("# A notebook run through kernelfleet"),
            v4.new_code_cell("print('hello from nbclient')"),
            v4.new_code_cell("x = 6 * 7\nx"),
            v4.new_code_cell(
                "from IPython.display import HTML, display\n"
                "display(HTML('<b>bold</b>'), metadata={'kf': True})"
            ),
            v4.new_code_cell("for i in range(3):\n    print(i)"),
            v4.new_code_cell("x + 1"),
        ],
    )


async def test_nbclient_executes_a_notebook_through_the_gateway(
    kernelspec_dir: Path, jupyter_client_env: None
) -> None:
    with gateway_in_thread(Authenticator={"auth_enabled": False}) as gw:
        JupyterGatewayClient.instance(url=gw.url.rstrip("/"), request_timeout=60.0)
        km = GatewayKernelManager()
        nb = make_notebook()
        client = NotebookClient(nb, km=km, timeout=60, startup_timeout=60, kernel_name="python3")
        try:
            await client.async_execute()
            assert isinstance(client.kc, GatewayKernelClient)
            kernel_id = km.kernel_id
            assert kernel_id is not None and kernel_id in gw.registry.records
        finally:
            # nbclient leaves a caller-provided kernel manager and its client running.
            if client.kc is not None:
                client.kc.stop_channels()  # closes the websocket, joins the reader thread
            if km.has_kernel:
                await km.shutdown_kernel(now=True)

        cells = nb.cells
        assert cells[1].outputs == [
            {"output_type": "stream", "name": "stdout", "text": "hello from nbclient\n"}
        ]
        assert [c.execution_count for c in cells[1:]] == [1, 2, 3, 4, 5]
        (result,) = cells[2].outputs
        assert result.output_type == "execute_result"
        assert result.data == {"text/plain": "42"}
        (display,) = cells[3].outputs
        assert display.output_type == "display_data"
        assert display.data["text/html"] == "<b>bold</b>"
        assert display.metadata == {"kf": True}
        assert [(o.name, o.text) for o in cells[4].outputs] == [("stdout", "0\n1\n2\n")]
        assert cells[5].outputs[0].data == {"text/plain": "43"}
        assert not any(o.output_type == "error" for c in cells[1:] for o in c.outputs)

        assert await km.refresh_model() is None  # shut down: our gateway answers 404
        assert kernel_id not in gw.registry.records
