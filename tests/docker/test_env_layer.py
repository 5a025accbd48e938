"""An environment as an image layer, in a real engine: a relocatable venv (``uv venv
--relocatable`` on Debian's /usr/bin/python3.11, plus six and ipykernel from the package index)
is layered on the python kernel image with :func:`kernelfleet.images.layer.add_layer`, loaded
with ``docker load`` and run: its interpreter (a symlink to the image's /usr/bin/python3.11)
imports its packages as the image's unprivileged user, with the layer's Env, and the base
image's own kernel is untouched. dockerd's own containerd imports the same archive with ``ctr
images import`` (what the Kubernetes tier does) and unpacks all its layers.

Needs the session's Docker engine (root), uv, and the package index; the python image is built
once per machine into $KF_IMAGE_CACHE (a minute the first time)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernelfleet.images.build import build_image
from kernelfleet.images.layer import add_layer, env_layer_tar
from kernelfleet.images.oci import read_oci_archive
from tests.docker.engine import DockerEngine
from tests.testbed import skip_or_fail

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

PYTHON = "/usr/bin/python3.11"
NAME = "six"
#: Stands for the first 12 hex digits of the environment archive's sha256 (the gateway's name).
DIGEST12 = "0123456789ab"
CODE = (
    "import os, sys, six, ipykernel, zmq; "
    "print(sys.prefix, six.__file__, ipykernel.__file__, zmq.__file__, os.getuid(), "
    "os.environ['KF_ENV_NAME'], sep='\\n')"
)


def uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(found).exists():
        skip_or_fail("Docker", "uv is missing: pip install uv")
    return found


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A relocatable venv of the host's Debian python3.11 (the image's too) with six and
    ipykernel, as an environment build makes it."""
    if not Path(PYTHON).exists():
        skip_or_fail("Docker", f"{PYTHON} is missing (apt-get install python3.11)")
    env = tmp_path_factory.mktemp("env") / "venv"
    subprocess.run([uv(), "venv", "-q", "--relocatable", "--python", PYTHON, str(env)], check=True)
    done = subprocess.run(
        [uv(), "pip", "install", "-q", "--python", str(env / "bin/python"), "six", "ipykernel"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, (
        f"uv pip install failed (is the package index reachable?)\n{done.stderr}"
    )
    return env


@pytest.fixture
def layered(
    env_dir: Path, docker_engine: DockerEngine, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """(ref, image path) of the python image plus the environment's layer, loaded into the
    engine; removed from it afterwards (the base image's layers stay)."""
    base, _ = build_image("python")
    layer = tmp_path / "layer.tar"
    image_path = f"/opt/kernelfleet/envs/{NAME}/{DIGEST12}"
    env_layer_tar(env_dir, image_path, layer)
    ref = f"kernelfleet.test/kernel-python-env-{NAME}:{DIGEST12}"
    archive = tmp_path / "env.oci.tar"
    add_layer(base, layer, archive, ref, env={"KF_ENV_NAME": NAME})
    docker_engine.load_image(archive)
    try:
        yield ref, image_path
    finally:
        docker_engine.docker("rmi", "-f", ref, check=False)


def test_the_environment_layer_runs_in_a_real_engine(
    layered: tuple[str, str], docker_engine: DockerEngine
) -> None:
    ref, image_path = layered
    assert ref in docker_engine.images()
    run = ["run", "--rm", "--network", "none", "--entrypoint"]
    done = docker_engine.docker(*run, f"{image_path}/bin/python", ref, "-c", CODE)
    prefix, six_file, ipykernel_file, zmq_file, uid, env_name = done.stdout.split()
    assert prefix == image_path
    site = f"{image_path}/lib/python3.11/site-packages/"
    assert six_file == f"{site}six.py"
    assert ipykernel_file.startswith(site) and zmq_file.startswith(site)  # not /opt/kernel's
    assert (uid, env_name) == ("1000", NAME)  # the image's unprivileged user, the layer's Env
    # the interpreter is the image's Debian python, reached through the venv's symlink
    link = docker_engine.docker(*run, "readlink", ref, "-f", f"{image_path}/bin/python")
    assert link.stdout.strip() == PYTHON
    # the base image's own kernel is untouched
    base = docker_engine.docker(
        *run, "python3", ref, "-c", "import sys, ipykernel; print(sys.prefix)"
    )
    assert base.stdout.strip() == "/opt/kernel"


def test_containerd_imports_and_unpacks_every_layer(
    env_dir: Path, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    socket = docker_engine.exec_root / "containerd" / "containerd.sock"
    if not socket.is_socket() or shutil.which("ctr") is None:
        pytest.skip(f"no ctr, or no containerd socket at {socket}")
    base, _ = build_image("python")
    env_layer_tar(env_dir, f"/opt/kernelfleet/envs/{NAME}/{DIGEST12}", tmp_path / "layer.tar")
    ref = f"kernelfleet.test/kernel-python-env-{NAME}:ctr"
    archive = tmp_path / "env.oci.tar"
    add_layer(base, tmp_path / "layer.tar", archive, ref)
    info = read_oci_archive(archive, verify=False)
    ctr = ["ctr", "-a", str(socket), "-n", "kf-env-layer-test"]
    try:
        subprocess.run([*ctr, "images", "import", str(archive)], check=True, capture_output=True)
        listed = subprocess.run(
            [*ctr, "images", "ls"], check=True, capture_output=True, text=True
        ).stdout
        assert ref in listed and info.manifest_digest in listed
        check = subprocess.run(
            [*ctr, "images", "check", f"name=={ref}"], check=True, capture_output=True, text=True
        ).stdout.splitlines()[1]
        # every blob present (config and both layers), and unpacked into snapshots
        blobs = len(info.layers) + 1
        assert f"complete ({blobs}/{blobs})" in check and check.split()[-1] == "true"
    finally:  # --sync: containerd collects the content and snapshots before it answers
        subprocess.run([*ctr, "images", "rm", "--sync", ref], capture_output=True)
        subprocess.run([*ctr[:3], "namespaces", "rm", ctr[4]], capture_output=True)
