"""Hostile request values never reach a shell; impersonation runs kernels as real users."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Iterator

import pytest
from ssh_helpers import (
    IMPERSONATED_USER,
    SERVICE_USER,
    SYSTEM_PYTHON,
    Specs,
    execute,
    kernel_env,
    running,
    wait_until,
)
from testbed import Testbed

from kernelfleet.errors import BadRequest, Forbidden

pytestmark = pytest.mark.timeout(60)

HOSTILE = {
    "KERNEL_USERNAME": "bob'; touch /tmp/pwned-u; echo '",
    "KERNEL_SUBST": "$(touch /tmp/pwned-s)",
    "KERNEL_TICKS": "`touch /tmp/pwned-t`",
    "KERNEL_NEWLINE": "a\ntouch /tmp/pwned-n\nb",
    "KERNEL_QUOTES": '"\'"; touch /tmp/pwned-q #',
    "KERNEL_BIG": "x" * 100_000,
}


def pwned_anywhere(testbed: Testbed) -> list[str]:
    found = []
    for host in testbed.hosts:
        out = testbed.run_in(host, "sh", "-c", "ls /tmp | grep pwned || true").stdout.split()
        found += [f"{host.name}:{name}" for name in out]
    found += [f"gateway:{n}" for n in os.listdir("/tmp") if n.startswith("pwned")]
    return found


async def test_hostile_kernel_values_start_nothing_and_arrive_verbatim(
    testbed: Testbed, specs: Specs
) -> None:
    host = testbed.host(1)
    specs.write("hostile", {"remote_hosts": [host.ip]})
    km = specs.manager("hostile")
    before = set(testbed.processes(host))
    async with running(km, env=kernel_env(**HOSTILE)):
        out, _ = await execute(
            km,
            "import os, json; print(json.dumps({k: v for k, v in os.environ.items()"
            " if k.startswith('KERNEL_')}))",
        )
        seen = json.loads(out)
        for name, value in HOSTILE.items():
            assert seen[name] == value, name
        new = {
            pid: cmd
            for pid, cmd in testbed.processes(host).items()
            if pid not in before and not cmd.startswith("sshd:") and "kernelfleet_agent" not in cmd
        }
        kernel = testbed.processes_matching(host, km.kernel_id)
        assert new == kernel, "only the kernel itself (besides the SSH session) was started"
    assert pwned_anywhere(testbed) == []


async def test_hostile_pinned_host_is_refused(testbed: Testbed, specs: Specs) -> None:
    specs.write("pin")
    km = specs.manager("pin")
    with pytest.raises(Forbidden):
        await km.start_kernel(env=kernel_env(KERNEL_REMOTE_HOST="h; touch /tmp/pwned-h"))
    await km.cleanup_resources()
    assert pwned_anywhere(testbed) == []


def write_impersonation_spec(specs: Specs, testbed: Testbed) -> None:
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import ipykernel"], check=False)
    if probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} has no ipykernel (Debian package python3-ipykernel)")
    specs.write(
        "imp",
        {
            "remote_hosts": [testbed.host(2).ip],
            "impersonation_enabled": True,
            # Debian's ipykernel 6 has no CurveZMQ support
            "transport_encryption": False,
        },
        argv=[SYSTEM_PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    )


async def test_impersonation_runs_the_kernel_as_the_user(testbed: Testbed, specs: Specs) -> None:
    write_impersonation_spec(specs, testbed)
    km = specs.manager("imp")
    async with running(km, env=kernel_env(KERNEL_USERNAME=IMPERSONATED_USER)):
        out, _ = await execute(
            km,
            "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_name, os.environ['HOME'],"
            " os.getcwd())",
        )
        user, home, cwd = out.split()
        assert user == IMPERSONATED_USER
        assert home == cwd == f"/home/{IMPERSONATED_USER}"
        host = testbed.by_ip(km.provisioner.host)
        path = km.provisioner.remote["connection_file"]
        owner = testbed.run_in(host, "stat", "-c", "%U %a", path).stdout.split()
        assert owner == [IMPERSONATED_USER, "600"]


@pytest.mark.parametrize(
    ("username", "error"),
    [("root", Forbidden), ("no-such-user-kft", Exception), ("Bad User;", BadRequest)],
)
async def test_impersonation_refuses_privileged_missing_and_invalid_users(
    testbed: Testbed, specs: Specs, username: str, error: type[Exception]
) -> None:
    write_impersonation_spec(specs, testbed)
    km = specs.manager("imp")
    with pytest.raises(error) as info:
        await km.start_kernel(env=kernel_env(KERNEL_USERNAME=username))
    if username == "no-such-user-kft":
        assert "does not exist" in str(info.value)
    await km.cleanup_resources()
    assert not testbed.processes_matching(testbed.host(2), km.kernel_id)


@pytest.fixture
def uid_zero_alias() -> Iterator[str]:
    """A second user name for uid 0 (shared by all hosts), removed afterwards."""
    name = "kfttoor"
    subprocess.run(
        ["useradd", "-o", "-u", "0", "-g", "0", "-M", "-s", "/bin/false", name], check=True
    )
    try:
        yield name
    finally:
        subprocess.run(["userdel", "-f", name], check=False)


async def test_uid_zero_alias_is_refused_by_the_agent(
    testbed: Testbed, specs: Specs, uid_zero_alias: str
) -> None:
    # Another name for uid 0 gets past the name check; the agent's uid check stops it.
    write_impersonation_spec(specs, testbed)
    km = specs.manager("imp")
    with pytest.raises(Forbidden, match="privileged"):
        await km.start_kernel(env=kernel_env(KERNEL_USERNAME=uid_zero_alias))
    await km.cleanup_resources()


async def test_impersonation_through_sudo_for_a_non_root_ssh_user(
    testbed: Testbed, specs: Specs
) -> None:
    if not testbed.sudoers.exists():
        pytest.skip("sudo is not installed (Debian package sudo)")
    write_impersonation_spec(specs, testbed)  # skips without Debian's ipykernel
    host = testbed.host(3)
    specs.write(
        "sudo",
        {
            "remote_hosts": [host.ip],
            "ssh_user": SERVICE_USER,
            "impersonation_enabled": True,
            "transport_encryption": False,
        },
        argv=[SYSTEM_PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    )
    km = specs.manager("sudo")
    async with running(km, env=kernel_env(KERNEL_USERNAME=IMPERSONATED_USER)):
        kid = km.kernel_id
        out, _ = await execute(
            km,
            "import os, pwd, sys; print(pwd.getpwuid(os.getuid()).pw_name); "
            "print('sudo-log-marker', file=sys.__stderr__, flush=True)",
        )
        assert out.split()[0] == IMPERSONATED_USER
        agents = testbed.processes_matching(host, "kernelfleet_agent")
        assert [uid_of(pid) for pid in agents] == [pwd.getpwnam(SERVICE_USER).pw_uid]
        # the log stays readable by the agent, and interrupts are relayed by sudo
        assert "sudo-log-marker" in await km.provisioner.get_kernel_log()
        kc = km.client()
        kc.start_channels()
        try:
            msg_id = kc.execute("import time; print('sleeping', flush=True); time.sleep(60)")
            while True:
                msg = await kc.get_iopub_msg(timeout=30)
                if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                    break
            await km.interrupt_kernel()
            reply = await kc.get_shell_msg(timeout=20)
            assert reply["content"]["ename"] == "KeyboardInterrupt"
        finally:
            kc.stop_channels()
        runtime_dir = km.provisioner.remote["runtime_dir"]
        await km.shutdown_kernel(now=True)
    assert await wait_until(lambda: not testbed.processes_matching(host, kid), 5)
    assert testbed.run_in(host, "test", "-e", runtime_dir).returncode != 0
    assert pwned_anywhere(testbed) == []


def uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise LookupError(pid)
