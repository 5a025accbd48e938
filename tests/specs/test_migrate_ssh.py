"""``kernelfleet spec migrate`` of SSH kernelspecs, end to end on the SSH testbed: Gateway
Provisioners' own ``jupyter ssh-spec install`` (GP installed at test time, see tests/gpspecs.py)
and an Enterprise Gateway ``DistributedProcessProxy`` spec written by hand from EG's documented
format are refused by a real in-process gateway with the fix in the error, migrated by the
command an admin runs, and a kernel of each migrated spec then starts through that same
gateway on one of the spec's hosts, runs code there and leaves nothing behind.

The migrated specs go to a prefix that comes before the originals in the Jupyter path, as
``--sys-prefix`` does on an admin's gateway, so the same names start the migrated specs.

The hosts run kernels with this test's own interpreter (the hosts share the filesystem, as
the "same path on every host" rule wants): SSH kernels speak CurveZMQ by default, which needs
ipykernel >= 7.4, and Debian's python3-ipykernel on the hosts is 6.17 (with it a kernel starts
but never answers, and the launch times out). GP's installer always writes ``python`` as
argv[0], which migrate maps to ``python3``, found on the PATH that kernels inherit from the
gateway (``inherited_envs``, as EG's ``EG_INHERITED_ENVS``): the gateway runs with this
interpreter's bin directory first on its PATH. The EG spec names its interpreter in argv[0], as
EG's docs let an admin do, and migrate carries it (``--python``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.client import GatewayClient, stdout_of
from tests.conftest import client_for, temp_gateway
from tests.contract_backends.helpers import eventually, execute_ok, within
from tests.gpspecs import eg_spec, findings, load, migrate_cli, render
from tests.specs.fleet import gateway_env_for

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(180)]

GP_NAME = "gp_ssh_python"
EG_NAME = "python_distributed"
#: The interpreter of the kernels on the hosts (ipykernel >= 7.4), and a PATH that finds it.
HOST_PYTHON = sys.executable
HOST_PATH = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROBE = "import os, socket; print(socket.gethostname(), os.environ['KERNEL_ID'])"


async def run_on_a_host(client: GatewayClient, bed: Any, name: str, allowed: dict[str, str]) -> str:
    """Start a kernel of spec *name*, check it runs on one of *allowed* (ip → host name) and
    not here, shut it down and wait until its process is gone from that host: the host."""
    kernel = await client.start_kernel(name)
    kid = kernel["id"]
    try:
        ws = await client.connect(kid)
        try:
            _, iopub = await execute_ok(ws, PROBE)
        finally:
            ws.close()
        hostname, got_kid = stdout_of(iopub).split()
        assert got_kid == kid
        assert hostname in allowed.values() and hostname != socket.gethostname(), hostname
        host = next(h for h in bed.hosts if h.name == hostname)
        assert await asyncio.to_thread(bed.processes_matching, host, kid), "no kernel process"
    finally:
        await client.shutdown_kernel(kid)
    await eventually(
        lambda: asyncio.to_thread(bed.processes_matching, host, kid),
        lambda found: not found,
        f"no process of kernel {kid} left on {hostname}",
        15,
    )
    return str(hostname)


async def test_gp_and_eg_ssh_specs_are_refused_then_migrated_and_run_on_their_hosts(
    fleet_bed: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = {h.ip: h.name for h in fleet_bed.hosts}
    ips = list(hosts)
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    kernels = await asyncio.to_thread(
        render,
        "ssh-spec",
        theirs,
        "--kernel-name",
        GP_NAME,
        *(f"--remote-hosts={ip}" for ip in ips[:2]),
    )
    gp_original = load(kernels / GP_NAME)
    gp_stanza = gp_original["metadata"]["kernel_provisioner"]
    assert gp_stanza["provisioner_name"] == "distributed-provisioner"
    assert gp_stanza["config"]["remote_hosts"] == ips[:2]
    # EG's python_distributed as its docs write it, argv[0] the interpreter on the hosts
    eg_dir = eg_spec(
        kernels,
        EG_NAME,
        "distributed.DistributedProcessProxy",
        config={"remote_hosts": ",".join(ips[1:])},
        display_name="Python 3 (distributed)",
    )
    eg_original = load(eg_dir)
    assert eg_original["argv"][0] == "python"  # EG's default: where the admin names another
    eg_original["argv"][0] = HOST_PYTHON
    (eg_dir / "kernel.json").write_text(json.dumps(eg_original, indent=2))

    async with gateway_env_for(fleet_bed, ours / "share" / "jupyter", tmp_path, monkeypatch):
        monkeypatch.setenv(
            "JUPYTER_PATH", f"{ours / 'share' / 'jupyter'}:{theirs / 'share' / 'jupyter'}"
        )
        monkeypatch.setenv("PATH", HOST_PATH)
        # the catalog re-reads the Jupyter path on each request (2 s by default)
        async with temp_gateway(KernelSpecCatalog={"refresh_seconds": 0}) as gw:
            client = client_for(gw)
            # not migrated yet: refused at once, the fix in the error, nothing started (GP's
            # original is hidden by jupyter_client instead, its provisioner not being
            # installed: see tests/gateway/test_not_migrated.py)
            status, body = await client.request("POST", "/api/kernels", {"name": EG_NAME})
            assert status == 500, body
            assert body["reason"] == "Kernelspec Not Migrated", body
            assert f"'kernelfleet spec migrate {EG_NAME}'" in body["message"], body
            assert "DistributedProcessProxy" in body["message"], body
            assert await client.call("GET", "/api/kernels") == []

            report = await asyncio.to_thread(migrate_cli, ours, GP_NAME, EG_NAME)
            gp = findings(report, GP_NAME, "ssh")
            assert gp["kernel_provisioner.config.remote_hosts"] == (
                "mapped",
                f"--remote-hosts={','.join(ips[:2])}",
            )
            assert gp["argv[0]"] == ("mapped", "--python=python3")
            eg = findings(report, EG_NAME, "ssh")
            assert eg["argv[0]"] == ("mapped", f"--python={HOST_PYTHON}")
            assert eg["process_proxy.config.remote_hosts"] == (
                "mapped",
                f"--remote-hosts={','.join(ips[1:])}",
            )
            # the originals are not touched
            assert load(kernels / GP_NAME) == gp_original and load(eg_dir) == eg_original
            for name, python in ((GP_NAME, "python3"), (EG_NAME, HOST_PYTHON)):
                migrated = load(ours / "share" / "jupyter" / "kernels" / name)
                assert migrated["argv"][:3] == [python, "-m", "ipykernel_launcher"], migrated
                stanza = migrated["metadata"]["kernel_provisioner"]
                assert stanza["provisioner_name"] == "kernelfleet-ssh", migrated

            # the same names now start the migrated specs, each on one of its own hosts
            async with within("both kernels of the migrated specs", 90):
                ran = await asyncio.gather(
                    run_on_a_host(client, fleet_bed, GP_NAME, {ip: hosts[ip] for ip in ips[:2]}),
                    run_on_a_host(client, fleet_bed, EG_NAME, {ip: hosts[ip] for ip in ips[1:]}),
                )
            assert all(ran)
            assert await client.call("GET", "/api/kernels") == []
