"""The built kernel images run kernels, checked without any container runtime: the image's root
filesystem is unpacked and the image's own entrypoint, command, env, user and working directory
are run under ``chroot`` (host network), where our launcher starts the kernel and reports it to a
real response listener; then a kernel client executes code in it.

Builds (root, mmdebstrap and the Debian mirror) go to the shared cache (``$KF_IMAGE_CACHE``,
default /var/cache/kernelfleet/images), so only the first run on a machine builds: cold about a
minute per image, warm a few seconds (unpacking the rootfs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.connect import KernelConnectionInfo

from kernelfleet.images import build
from kernelfleet.images.oci import read_oci_archive
from kernelfleet.transport.listener import ResponseListener

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot and mmdebstrap --mode=root need root"),
    pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="apt-get install mmdebstrap"),
]

CODE = {
    "python": "import os, sys, ipykernel; print(os.getuid(), os.getcwd(), sys.executable)",
    "r": "cat(Sys.getenv('USER', '?'), getwd(), R.version$major, '\\n')",
}
EXPECTED = {"python": "1000 /tmp /opt/kernel/bin/python3", "r": "/tmp 4"}


Unpacked = Callable[[str], tuple[Path, dict[str, Any]]]


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unpacked]:
    """``unpacked(name)``: (its unpacked rootfs, its runtime config), built on first use.
    The rootfs trees (300 MB each) are removed at the end; the archives stay cached."""
    done: dict[str, tuple[Path, dict[str, Any]]] = {}

    def get(name: str) -> tuple[Path, dict[str, Any]]:
        if name not in done:
            archive, ref = build.build_image(name, build.default_cache_dir())
            info = read_oci_archive(archive, verify=False)
            assert info.ref == ref
            root = tmp_path_factory.mktemp(f"rootfs-{name}")
            build.extract_rootfs(archive, root)
            done[name] = (root, dict(info.config["config"]))
        return done[name]

    yield get
    for root, _ in done.values():
        shutil.rmtree(root, ignore_errors=True)


def chroot_argv(
    root: Path, config: dict[str, Any], argv: list[str], env: dict[str, str] | None = None
) -> list[str]:
    """Run *argv* as the image would: its user, a clean env of its Env (plus *env*), its
    WorkingDir."""
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    return [
        "chroot",
        f"--userspec={config['User']}",
        str(root),
        "/usr/bin/env",
        "-i",
        f"--chdir={config['WorkingDir']}",
        *config["Env"],
        *extra,
        *argv,
    ]


async def run(argv: list[str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_python_image_has_the_kernel_packages_and_the_launcher(unpacked: Unpacked) -> None:
    root, config = unpacked("python")
    assert config["User"] == "1000:1000" and config["WorkingDir"] == "/tmp"
    assert {"HOME=/tmp", "PYTHONDONTWRITEBYTECODE=1"} <= set(config["Env"])
    path = "/opt/kernel/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert f"PATH={path}" in config["Env"]  # the kernel venv's python3 comes first
    code = "import ipykernel as k, zmq as z, debugpy as d; print(k.__version__, z.__version__)"
    rc, out = await run(chroot_argv(root, config, ["python3", "-c", code]))
    assert (rc, out.split()) == (0, ["7.4.0", "27.3.0"])
    # the pinned kernel in the venv, and nothing of Debian's or of pip's besides
    assert not (root / "usr/lib/python3/dist-packages/ipykernel").exists()
    site = root / "opt/kernel/lib/python3.11/site-packages"
    assert (site / "ipykernel-7.4.0.dist-info").is_dir()
    assert not list(site.glob("pip*")) and not list(site.glob("setuptools*"))
    assert not (root / "opt/kernelfleet-wheels").exists()
    launcher = "/opt/kernelfleet/launchers/kernel_launcher.py"
    rc, out = await run(chroot_argv(root, config, ["python3", launcher, "--help"]))
    assert rc == 0 and "usage: kernel_launcher.py" in out
    rc, out = await run(chroot_argv(root, config, ["python3", "-m", "ipykernel_launcher", "-h"]))
    assert rc == 0, out
    assert (root / "opt/kernel/share/jupyter/kernels/python3/kernel.json").is_file()
    # kept small: no apt lists, manuals or translations
    assert not list((root / "var/lib/apt/lists").glob("*_Packages"))
    assert not list((root / "usr/share/man").glob("*/*"))
    assert not (root / "usr/share/locale/de").exists()
    assert "kernel:x:1000:1000:kernel:/tmp:" in (root / "etc/passwd").read_text()


@contextlib.asynccontextmanager
async def listener() -> AsyncIterator[ResponseListener]:
    lst = ResponseListener(ip="127.0.0.1", port=0)
    await lst.start()
    try:
        yield lst
    finally:
        await lst.close()


@pytest.mark.parametrize("name", ["python", "r"])
async def test_the_images_entrypoint_starts_a_kernel_that_runs_code(
    unpacked: Unpacked, name: str
) -> None:
    root, config = unpacked(name)
    async with listener() as lst:
        registration = await lst.expect(f"image-test-{name}")
        # what a container runs: Entrypoint + our options + Cmd ("--", the kernel's argv)
        command = [*config["Entrypoint"], "--ip", "127.0.0.1", *config["Cmd"]]
        argv = chroot_argv(root, config, command, registration.env)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            try:
                info = await asyncio.wait_for(registration.wait(), 60)
            except Exception:
                proc.kill()
                out, _ = await proc.communicate()
                pytest.fail(f"no connection info from the launcher:\n{out.decode()}")
            client = AsyncKernelClient()
            client.load_connection_info(cast(KernelConnectionInfo, dict(info)))
            client.start_channels()
            try:
                await client.wait_for_ready(timeout=60)
                outputs: list[str] = []

                def hook(msg: dict[str, Any]) -> None:
                    if msg["msg_type"] == "stream":
                        outputs.append(msg["content"]["text"])

                reply = await client.execute_interactive(CODE[name], timeout=60, output_hook=hook)
                assert reply["content"]["status"] == "ok"
                assert EXPECTED[name] in "".join(outputs)
                client.shutdown()
            finally:
                client.stop_channels()
            rc = await asyncio.wait_for(proc.wait(), 30)
            assert rc == 0  # the launcher exits with the kernel's status
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()


@pytest.mark.skipif(
    os.environ.get("KF_TEST_GATEWAY_IMAGE") != "1",
    reason="set KF_TEST_GATEWAY_IMAGE=1: the gateway image is rebuilt on every source change "
    "(about 80 s) and needs PyPI",
)
async def test_gateway_image_runs_kernelfleet(unpacked: Unpacked) -> None:
    from kernelfleet import __version__

    root, config = unpacked("gateway")
    assert config["Entrypoint"] == ["/opt/kernelfleet/bin/kernelfleet"]
    rc, out = await run(chroot_argv(root, config, [*config["Entrypoint"], "--version"]))
    assert (rc, out.strip()) == (0, __version__)
    code = "import kernelfleet.gateway.app, kernelfleet.provisioners.ssh"
    rc, out = await run(chroot_argv(root, config, ["/opt/kernelfleet/bin/python", "-c", code]))
    assert (rc, out) == (0, "")
