"""Library mode against real hosts: a kernelspec naming ``kernelfleet-ssh`` used by a plain
jupyter_client ``AsyncKernelManager`` runs code on a testbed host."""

from __future__ import annotations

import logging
import stat

import pytest
from jupyter_client.manager import AsyncKernelManager
from ssh_helpers import Specs, execute, kernel_env, running, wait_until
from testbed import Testbed

from kernelfleet.placement.fleet import get_fleet, reset_fleets
from kernelfleet.provisioners.ssh import SSHProvisioner

pytestmark = pytest.mark.timeout(60)


async def test_library_mode_runs_code_on_a_remote_host(testbed: Testbed, specs: Specs) -> None:
    specs.write("remote")
    km = specs.manager("remote")
    async with running(km):
        prov = km.provisioner
        host = testbed.by_ip(prov.host)
        out, reply = await execute(km, "import socket; print(socket.gethostname())")
        assert reply["status"] == "ok"
        assert out.strip() == host.name
        info = km.get_connection_info()
        assert info["ip"] == host.ip
        assert info["curve_publickey"] and info["curve_secretkey"]
        # the connection file on the host is private, and no secret is on any command line
        path = prov.remote["connection_file"]
        mode = testbed.run_in(host, "stat", "-c", "%a", path).stdout.strip()
        assert stat.S_IMODE(int(mode, 8)) == 0o600
        key = info["key"].decode()
        for cmd in testbed.processes(host).values():
            assert key not in cmd
            assert info["curve_secretkey"] not in cmd
        assert await prov.poll() is None


async def test_no_secret_in_any_log_record(
    testbed: Testbed, specs: Specs, caplog: pytest.LogCaptureFixture
) -> None:
    specs.write("quiet")
    km = specs.manager("quiet")
    with caplog.at_level(logging.DEBUG):
        async with running(km):
            info = km.get_connection_info()
            await execute(km, "1")
            await km.restart_kernel(now=True)
            restarted = km.get_connection_info()
    text = caplog.text
    assert "kernelfleet" in text  # something was logged at all
    for secret in (info["key"].decode(), info["curve_secretkey"], restarted["curve_secretkey"]):
        assert secret not in text


async def test_kernel_survives_the_gateway_and_is_reattached(
    testbed: Testbed, specs: Specs
) -> None:
    specs.write("detached")
    km = specs.manager("detached")
    await km.start_kernel(env=kernel_env())
    kid = km.kernel_id
    saved = await km.provisioner.get_provisioner_info()
    host = testbed.by_ip(saved["host"])
    assert isinstance(saved["connection_info"]["key"], str)
    # "gateway restart": the manager goes away, every SSH connection closes, the agents exit
    km.context.destroy(linger=0)
    await reset_fleets()
    assert testbed.processes_matching(host, kid), "the kernel outlived its SSH connection"
    assert await wait_until(lambda: not testbed.processes_matching(host, "kernelfleet_agent"), 5)

    again = AsyncKernelManager(kernel_name="detached", kernel_spec_manager=specs.ksm)
    again.kernel_id = kid
    again.provisioner = km.provisioner.__class__(
        kernel_id=kid, kernel_spec=again.kernel_spec, parent=again
    )
    await again.provisioner.load_provisioner_info(saved)
    again.load_connection_info(again.provisioner.connection_info)
    assert await again.provisioner.poll() is None
    out, _ = await execute(again, "import socket; print(socket.gethostname())")
    assert out.strip() == host.name
    await again.shutdown_kernel(now=True)
    assert not testbed.processes_matching(host, kid)


async def test_stop_orphans_finds_an_unrecorded_kernel_by_id(
    testbed: Testbed, specs: Specs
) -> None:
    # What the gateway calls at start for a launch it never recorded (it crashed).
    specs.write("orphan")
    km = specs.manager("orphan")
    await km.start_kernel(env=kernel_env())
    kid = km.kernel_id
    host = testbed.by_ip(km.provisioner.host)
    km.context.destroy(linger=0)
    await reset_fleets()
    spec = specs.ksm.get_kernel_spec("orphan").to_dict()
    stopped = await km.provisioner.__class__.stop_orphans(kid, spec)
    assert stopped == 1
    assert not testbed.processes_matching(host, kid)
    assert await km.provisioner.__class__.stop_orphans(kid, spec) == 0


async def test_warm_up_opens_every_host_connection(testbed: Testbed, specs: Specs) -> None:
    specs.write("warm")
    spec = specs.ksm.get_kernel_spec("warm").to_dict()
    await SSHProvisioner.warm_up(spec)
    fleet = get_fleet()
    assert await wait_until(
        lambda: [h["state"] for h in fleet.host_status()] == ["up"] * len(testbed.hosts), 10
    )
    status = {h["host"]: h for h in fleet.host_status()}
    for host in testbed.hosts:
        assert status[host.ip]["hostname"] == host.name
        assert status[host.ip]["kernels"] == 0
