"""A kernel on a real SSH host whose host goes down, in stock JupyterLab 4 and Notebook 7.

The kernelspec ``nearby`` runs its kernels on the one host of a netns SSH testbed
(``tests/testbed.py``) under names of its own (:data:`KFB`: bridge ``kfbbr0``, host
``kfb-host1`` = 10.94.0.11), so it runs beside the testbeds of tests/ssh and tests/specs. The
host "goes down" as in tests/ssh/test_ssh_host_down.py: every process in it is killed (sshd,
agent, kernel), so connecting to it is refused; ``start_sshd`` brings it back.

Network design: the gateway must reach the host, and Chromium must not see the host's
addresses change (it aborts in-flight requests on ``ERR_NETWORK_CHANGED``; the testbeds of
other sessions add and remove interfaces all the time). So everything stays in the tests'
private namespace (harness.PrivateNetwork: both servers, their kernels' clients and Chromium)
and that namespace gets one more link, made before anything starts and never changed after:
a veth pair whose outer end ``kfbgw`` joins the testbed's bridge and whose inner end is
``eth0`` = 10.94.0.2/24 (the testbed's own gateway side 10.94.0.1 stays in the root namespace,
unused here). Both servers still listen on 127.0.0.1 of the private namespace; killing the
host's processes changes no address anywhere.

What the user sees (JupyterLab 4.6 and Notebook 7.6):

- when the host dies, the gateway's automatic restart is announced ("restarting" on iopub):
  both show "The kernel for remote.ipynb appears to have died. It will restart automatically."
  It fails (host unreachable). The gateway then sends no "dead" status: on "dead" both clients
  dispose the kernel connection and their Restart sends nothing. It keeps the kernel listed
  (``execution_state`` dead, with the reason) and answers the client's reconnect
  (``kernel_info``) itself, so the kernel counts as connected.
- a cell run meanwhile shows the reason as its error output: the host and the cause. A Restart
  while the host is down is refused (503); both clients only log that to the console, so the
  cell is where the user reads why.
- once the host is back, Restart brings the kernel up again on the same host, same kernel id.
- opening the notebook again (a reload) shows the gateway's ``reason`` from the kernel model in
  an "Error Starting Kernel" dialog, and keeps the same kernel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import (
    BROWSER,
    STEP_MS,
    Browser,
    Frontend,
    PrivateNetwork,
    Servers,
    add_ssh_kernelspec,
    running_servers,
    write_notebook,
)
from tests.browser.ui import NotebookUI, check_shown, what_is_shown
from tests.specs.fleet import ssh_env
from tests.testbed import Network, Testbed, TestHost, running_testbed

pytestmark = [*BROWSER, pytest.mark.ssh]

KFB = Network("kfbbr0", "10.94.0", "kfb-host", "kfbv", Path("/run/kfb-testbed"))
PRIVATE_SIDE = f"{KFB.net}.2/24"  # the private namespace's address on the testbed's bridge
LINK = "kfbgw"  # the outer end of its veth pair
NAME = "nearby"
DISPLAY = "Python on kfb-host1 (SSH)"
WITHIN = 110
HOSTNAME = "import socket; x = 42; print(socket.gethostname())"

# The state jupyter_server (and so the gateway: GET /api/kernels is forwarded) reports for a
# kernel, fetched by the page as its own code would.
KERNEL_STATE = """
async (id) => {
  const kernels = await (await fetch('/api/kernels')).json();
  const kernel = kernels.find(k => k.id === id);
  return kernel ? kernel.execution_state : 'gone';
}
"""
SESSION_KERNEL = """
async () => {
  const sessions = await (await fetch('/api/sessions')).json();
  return sessions.map(s => s.kernel && s.kernel.id);
}
"""


@pytest.fixture(scope="module")
def testbed() -> Iterator[Testbed]:
    with running_testbed(1, network=KFB) as bed:
        yield bed


@pytest.fixture
def host(testbed: Testbed) -> Iterator[TestHost]:
    """The testbed's host, up again after the test whatever happened."""
    victim = testbed.host(1)
    yield victim
    testbed.revive(victim)


@pytest.fixture
async def servers(
    frontend: Frontend,
    world: dict[str, str],
    network: PrivateNetwork,
    testbed: Testbed,
    host: TestHost,
    tmp_path: Path,
) -> AsyncIterator[Servers]:
    if not network.private:
        pytest.skip("the private network namespace needs root and util-linux")
    network.attach(KFB.bridge, PRIVATE_SIDE, LINK)
    add_ssh_kernelspec(Path(world["JUPYTER_PATH"]), NAME, DISPLAY, {"remote_hosts": [host.ip]})
    gateway_env = ssh_env(testbed)
    async with running_servers(frontend, world, network, tmp_path, gateway_env) as both:
        yield both


async def kernel_on_host(ui: NotebookUI, servers: Servers, host: TestHost) -> str:
    """Open a notebook of ``nearby``, run a cell on the host; return the session's kernel id."""
    path = write_notebook(servers.root, "remote.ipynb", NAME, DISPLAY)
    await ui.opened_and_settled(servers, path, DISPLAY)
    cell = await ui.run(0, HOSTNAME)
    await ui.expect(cell.locator(".jp-OutputArea-output")).to_have_text(host.name)
    (kernel_id,) = await session_kernels(ui.page)
    return kernel_id


async def session_kernels(page: Any) -> list[str]:
    ids: list[str] = await page.evaluate(SESSION_KERNEL)
    return ids


async def gateway_reports(page: Any, kernel_id: str, state: str) -> None:
    """Wait until the kernel's model says *state* (the model has no event to wait on)."""
    deadline = time.monotonic() + STEP_MS / 1000
    while (seen := await page.evaluate(KERNEL_STATE, kernel_id)) != state:
        assert time.monotonic() < deadline, f"kernel {kernel_id} is {seen}, not {state}"
        await asyncio.sleep(0.25)


async def test_a_cell_on_a_down_host_says_why_and_restart_works_once_the_host_is_back(
    frontend: Frontend,
    servers: Servers,
    chromium: Browser,
    testbed: Testbed,
    host: TestHost,
) -> None:
    ui = NotebookUI(chromium, frontend)
    page, expect = ui.page, ui.expect
    kernel_id = await kernel_on_host(ui, servers, host)

    testbed.kill_host(host)  # sshd, agent and kernel: the host is down
    died = ui.dialog.filter(has_text="appears to have died")
    await expect(died).to_be_visible()  # the gateway's automatic restart is announced
    await gateway_reports(page, kernel_id, "dead")  # ... and it failed: the host is down
    await died.locator("button.jp-mod-accept").click()
    await expect(ui.dialog).to_have_count(0)

    # A cell run now shows why, under the cell: the host and the cause.
    cell = await ui.run(1, "print('hello')")
    output = cell.locator(".jp-OutputArea-output")
    await expect(output).to_contain_text(host.ip)
    text = await output.inner_text()
    await what_is_shown(chromium, f"host-down-cell-{frontend.id}")
    check_shown(text, host.ip, NAME, within=WITHIN)
    # Restart while the host is still down: refused (503), the kernel stays the session's.
    await ui.restart_from_toolbar()
    assert await session_kernels(page) == [kernel_id]
    await expect(page.locator(".jp-Dialog", has_text="Select Kernel")).to_have_count(0)
    assert await page.evaluate(KERNEL_STATE, kernel_id) != "gone"  # the gateway lists it
    await what_is_shown(chromium, f"restart-host-down-{frontend.id}")

    testbed.start_sshd(host)
    since = len(await ui.statuses())
    await ui.restart_from_toolbar()
    await ui.settled(DISPLAY, since)
    cell = await ui.run(2, "import socket; print('x' in globals(), socket.gethostname())")
    await expect(cell.locator(".jp-OutputArea-output")).to_have_text(f"False {host.name}")
    assert await session_kernels(page) == [kernel_id]


async def test_a_notebook_whose_host_is_down_says_why_when_opened_again(
    frontend: Frontend, servers: Servers, chromium: Browser, testbed: Testbed, host: TestHost
) -> None:
    ui = NotebookUI(chromium, frontend)
    page, expect = ui.page, ui.expect
    kernel_id = await kernel_on_host(ui, servers, host)

    testbed.kill_host(host)
    await gateway_reports(page, kernel_id, "dead")  # automatic restarts gave up
    await page.reload()  # the user opens the notebook again
    header = ui.dialog.locator(".jp-Dialog-header")
    await expect(header).to_have_text("Error Starting Kernel")
    text = await ui.dialog.locator(".jp-Dialog-body").inner_text()
    await what_is_shown(chromium, f"reopen-host-down-{frontend.id}")
    check_shown(text, host.ip, NAME, within=WITHIN)
    assert await session_kernels(page) == [kernel_id]  # kept, not replaced
    await expect(page.locator(".jp-Dialog", has_text="Select Kernel")).to_have_count(0)
