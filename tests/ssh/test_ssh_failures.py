"""Failed launches name the host and the cause and leave nothing running; unreachable hosts
are skipped, and with none left the request fails fast."""

from __future__ import annotations

import sys
import time

import pytest
from ssh_helpers import Specs, kernel_env, running
from testbed import Testbed

from kernelfleet.errors import BadRequest, HostsUnavailable, LaunchFailed, LaunchTimeout

pytestmark = pytest.mark.timeout(60)


def no_kernel_processes(testbed: Testbed, kernel_id: str) -> bool:
    return not any(testbed.processes_matching(h, kernel_id) for h in testbed.hosts)


async def test_bad_python_path_is_reported_with_host(testbed: Testbed, specs: Specs) -> None:
    host = testbed.host(1)
    specs.write(
        "badpy",
        {"remote_hosts": [host.ip]},
        argv=["/nonexistent/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    )
    km = specs.manager("badpy")
    with pytest.raises(LaunchFailed) as info:
        await km.start_kernel(env=kernel_env())
    assert host.ip in info.value.message
    assert "/nonexistent/bin/python" in info.value.message
    await km.cleanup_resources()
    assert no_kernel_processes(testbed, km.kernel_id)


async def test_missing_ipykernel_is_reported_with_the_log(testbed: Testbed, specs: Specs) -> None:
    host = testbed.host(2)
    specs.write(
        "nokernel",
        {"remote_hosts": [host.ip]},
        argv=[sys.executable, "-m", "no_such_kernel_module", "-f", "{connection_file}"],
    )
    km = specs.manager("nokernel")
    with pytest.raises(LaunchFailed) as info:
        await km.start_kernel(env=kernel_env())
    assert host.ip in info.value.message
    assert "No module named no_such_kernel_module" in info.value.message
    await km.cleanup_resources()
    assert no_kernel_processes(testbed, km.kernel_id)


async def test_port_range_is_honoured_and_exhaustion_reported(
    testbed: Testbed, specs: Specs
) -> None:
    host = testbed.host(3)
    specs.write(
        "ports",
        {"remote_hosts": [host.ip], "port_range": "41000..41004", "min_port_range_size": 5},
    )
    first = specs.manager("ports")
    async with running(first):
        info = first.get_connection_info()
        ports = {
            info[k] for k in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
        }
        assert ports == set(range(41000, 41005))
        second = specs.manager("ports")
        with pytest.raises(LaunchFailed) as err:
            await second.start_kernel(env=kernel_env())
        assert host.ip in err.value.message
        assert "41000..41004 is exhausted" in err.value.message
        await second.cleanup_resources()
        assert no_kernel_processes(testbed, second.kernel_id)


@pytest.mark.parametrize("bad", ["100..200", "50000..50002", "9000", "a..b", "60000..59000"])
async def test_invalid_port_range_is_a_bad_request(specs: Specs, bad: str) -> None:
    specs.write("badrange", {"port_range": bad})
    km = specs.manager("badrange")
    with pytest.raises(BadRequest, match="port_range"):
        await km.start_kernel(env=kernel_env())
    await km.cleanup_resources()


async def test_all_hosts_down_fails_fast_naming_them(testbed: Testbed, specs: Specs) -> None:
    # Nothing listens on port 2222 of any host: every allowed host refuses the connection.
    specs.write("down", {"ssh_port": 2222})
    for attempt in range(2):  # the second answer comes from the backoff state
        km = specs.manager("down")
        started = time.monotonic()
        with pytest.raises(HostsUnavailable) as err:
            await km.start_kernel(env=kernel_env())
        assert time.monotonic() - started < 10, attempt  # not the 60 s launch timeout
        for host in testbed.hosts:
            assert host.ip in err.value.message
        assert err.value.status == 503
        await km.cleanup_resources()


@pytest.mark.parametrize("case", ["unknown", "changed"])
async def test_unknown_or_changed_host_key_is_a_clear_error(
    testbed: Testbed, specs: Specs, tmp_path_factory: pytest.TempPathFactory, case: str
) -> None:
    empty = tmp_path_factory.mktemp("kh") / "known_hosts"
    host = testbed.host(1)
    if case == "unknown":
        empty.write_text("")
    else:  # host1's address with host2's key
        other = testbed.known_hosts.read_text().splitlines()[1].split()
        empty.write_text(f"{host.ip} {other[1]} {other[2]}\n")
    specs.write("hostkey", {"remote_hosts": [host.ip], "ssh_known_hosts": str(empty)})
    km = specs.manager("hostkey")
    with pytest.raises(HostsUnavailable) as err:
        await km.start_kernel(env=kernel_env())
    message = err.value.message
    assert host.ip in message
    assert "host key" in message
    assert f"ssh-keyscan -p 22 {host.ip} >> {empty}" in message
    await km.cleanup_resources()


async def test_an_unreachable_host_is_skipped(testbed: Testbed, specs: Specs) -> None:
    # Nothing serves SSH on the gateway side of the bridge (and its key is not known either):
    # that host is marked down and skipped; the kernel lands on the live host.
    live = testbed.host(2)
    specs.write("skip", {"remote_hosts": ["10.89.0.1", live.ip]})
    km = specs.manager("skip")
    async with running(km, ready=False):
        assert km.provisioner.host == live.ip


async def test_launch_timeout_names_the_host_and_leaves_nothing(
    testbed: Testbed, specs: Specs
) -> None:
    host = testbed.host(1)
    specs.write(
        "slow",
        {"remote_hosts": [host.ip], "launch_timeout": 1.5},
        argv=[sys.executable, "-c", "import time; time.sleep(120)", "{connection_file}"],
    )
    km = specs.manager("slow")
    started = time.monotonic()
    with pytest.raises(LaunchTimeout) as err:
        await km.start_kernel(env=kernel_env())
    assert time.monotonic() - started < 6
    assert host.ip in err.value.message
    await km.cleanup_resources()
    assert no_kernel_processes(testbed, km.kernel_id)
    assert not testbed.processes_matching(host, "time.sleep(120)")
