"""The admin dashboard with a real SSH host (a netns testbed host with its own sshd): create a
kernelspec with the form (a validation error first), watch it sync to the host, and see the
host go unhealthy on the overview when its sshd is stopped.

The testbed has names of its own (:data:`KFA`: bridge ``kfabr0``, host ``kfa-host1`` =
10.93.0.11, SFTP on for the sync), so it runs beside the other testbeds. As in
tests/browser/test_host_down.py, the tests' private network namespace (gateway, its kernels'
clients, Chromium) gets one more link onto the testbed's bridge before anything starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.browser.harness import BROWSER, Browser, PrivateNetwork, Server, add_ssh_kernelspec
from tests.dashboard.harness import USER_TOKEN, Api, log_in, running_gateway, shot
from tests.specs.fleet import ssh_env
from tests.testbed import Network, Testbed, TestHost, running_testbed

pytestmark = [*BROWSER, pytest.mark.ssh]

KFA = Network("kfabr0", "10.93.0", "kfa-host", "kfav", Path("/run/kfa-testbed"), sftp=True)
PRIVATE_SIDE = f"{KFA.net}.2/24"
LINK = "kfagw"
NEARBY = "nearby"


@pytest.fixture(scope="module")
def testbed() -> Iterator[Testbed]:
    with running_testbed(1, network=KFA) as bed:
        yield bed


@pytest.fixture
def host(testbed: Testbed) -> Iterator[TestHost]:
    """The testbed's host, its sshd running again after the test whatever happened."""
    victim = testbed.host(1)
    yield victim
    testbed.revive(victim)


@pytest.fixture
async def gateway(
    world: dict[str, str],
    network: PrivateNetwork,
    testbed: Testbed,
    host: TestHost,
    tmp_path: Path,
) -> AsyncIterator[Server]:
    if not network.private:
        pytest.skip("the private network namespace needs root and util-linux")
    network.attach(KFA.bridge, PRIVATE_SIDE, LINK)
    jupyter_path = Path(world["JUPYTER_PATH"])
    add_ssh_kernelspec(jupyter_path, NEARBY, "Python on kfa-host1", {"remote_hosts": [host.ip]})
    extra = {**ssh_env(testbed), "KF_DASHBOARD_SPEC_DIR": str(jupyter_path / "kernels")}
    async with running_gateway(world, network, tmp_path, extra) as server:
        yield server


async def test_create_a_kernelspec_with_the_form_and_watch_it_sync_to_the_host(
    gateway: Server, chromium: Browser, testbed: Testbed, host: TestHost, world: dict[str, str]
) -> None:
    page, expect = chromium.page, chromium.expect
    await log_in(page, expect, gateway)
    await page.click("nav >> text=Kernelspecs")
    await expect(page.locator(f'tr[data-spec="{NEARBY}"]')).to_contain_text(host.ip)
    await page.click("#new-spec")
    await page.select_option("#f-kind", "ssh")
    await expect(page.locator('fieldset[data-kind="ssh"]')).to_be_visible()
    await expect(page.locator('fieldset[data-kind="yarn"]')).to_be_hidden()

    await page.fill("#f-kernel_name", "fleet python!")
    await page.fill("#f-display_name", "Python on the fleet")
    await page.fill("#f-authorized_users", "carol, alice")
    await page.fill("#f-ssh__remote_hosts", host.ip)
    await page.click("#spec-submit")
    error = page.locator("#err-kernel_name")
    await expect(error).to_contain_text("'Kernel name' 'fleet python!' is not valid")
    await expect(error).to_contain_text("use letters, digits")
    await expect(page.locator("#form-errors")).to_contain_text("The kernelspec was not written")
    await expect(page.locator("#f-display_name")).to_have_value("Python on the fleet")  # kept
    await shot(page, "07-spec-form-validation-error")

    await page.fill("#f-kernel_name", "fleet_python")
    await page.click("#spec-submit")
    status = page.locator("#job-status")
    await expect(status).to_have_text("Done.")
    lines = page.locator("#job-lines")
    await expect(lines).to_contain_text("installed kernelspec fleet_python")
    await expect(lines).to_contain_text(f"{host.ip}: copied")
    await expect(lines).to_contain_text("1 of 1 host(s) up to date")
    await shot(page, "08-spec-synced")

    spec_dir = Path(world["JUPYTER_PATH"]) / "kernels" / "fleet_python"
    assert (spec_dir / "kernel.json").is_file()
    # /tmp is private to each testbed host: the spec is there only because the sync copied it
    there = testbed.run_in(host, "test", "-f", str(spec_dir / "kernel.json"))
    assert there.returncode == 0, there.stderr

    await page.click("#job-spec-link")
    await expect(page.locator("#kernel-json")).to_contain_text('"remote_hosts"')
    await expect(page.locator("#kernel-json")).to_contain_text(host.ip)
    await page.goto(f"{gateway.url}/admin/specs/fleet_python/edit")
    await expect(page.locator("#f-ssh__remote_hosts")).to_have_value(host.ip)
    await expect(page.locator("#f-authorized_users")).to_have_value("carol\nalice")


async def test_a_host_goes_unhealthy_on_the_overview_when_its_sshd_is_stopped(
    gateway: Server, chromium: Browser, testbed: Testbed, host: TestHost
) -> None:
    page, expect = chromium.page, chromium.expect
    await log_in(page, expect, gateway)
    api = await Api.open(chromium.context, gateway)
    await api.start_kernel(USER_TOKEN, NEARBY)  # a kernel there: the host matters

    await expect(page.locator("#live-status")).to_have_text("live")
    host_row = page.locator(f'#hosts tr[data-host="{host.ip}"]')
    await expect(host_row.locator("td.health")).to_have_text("healthy")
    await expect(host_row.locator("td").nth(2)).not_to_have_text("—")  # the agent's version
    await expect(host_row.locator("td").nth(3)).to_contain_text("CPUs")  # its load
    await expect(host_row.locator("td").nth(5)).to_have_text("1")
    await page.evaluate("window.__samePage = 'yes'")
    await shot(page, "09-host-healthy")

    stopped = stop_sshd(testbed, host)
    assert stopped, f"no sshd ran in {host.name}"
    await expect(host_row.locator("td.health")).to_contain_text("down")
    await expect(host_row).to_have_class("health-down")
    assert await page.evaluate("window.__samePage") == "yes"  # pushed, not reloaded
    await shot(page, "10-host-down")


def stop_sshd(testbed: Testbed, host: TestHost) -> list[int]:
    """Kill the host's sshd: the listener and the session processes that carry the gateway's
    connection (the agent and the kernel keep running)."""
    pids = list(testbed.processes_matching(host, "sshd"))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids
