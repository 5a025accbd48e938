"""An environment for container kernels: the base kernel image with one more layer.

The environment (built on the gateway with the same interpreter the image has: the ``python``
recipe is Debian bookworm's ``/usr/bin/python3.11``, and so is the gateway's system Python)
goes into the image at ``/opt/kernelfleet/envs/<name>/<digest12>``, and the image's ``PATH``
starts with its ``bin``: the kind's argv (``python3 -m ipykernel_launcher``) and the launcher
then run the environment's interpreter (the launcher needs the standard library only). The
image is named ``kernelfleet.env/<name>:<digest12>``, written as an OCI archive next to the
environment and loaded into the engine (``docker load``): there is no registry to push to.
For Kubernetes it is imported into the containerd of ``KF_ENV_CONTAINERD_SOCKET`` (a node the
gateway runs on); other nodes need it imported (``kernelfleet image import``) or pushed to the
cluster's registry, which the build's progress says.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

from kernelfleet.envs.model import EnvRecord
from kernelfleet.envs.settings import IMAGE_ROOT
from kernelfleet.errors import PublicError
from kernelfleet.images import build as image_build
from kernelfleet.images.layer import add_layer, env_layer_tar
from kernelfleet.images.oci import read_oci_archive

REGISTRY = "kernelfleet.env"


def image_dir(record: EnvRecord) -> str:
    return f"{IMAGE_ROOT}/{record.name}/{record.digest12}"


def image_ref(record: EnvRecord) -> str:
    return f"{REGISTRY}/{record.name}:{record.digest12}"


def base_archive(base: str) -> Path:
    """The base image's archive: a path, else a recipe built into the image cache."""
    if base.endswith(".tar") or "/" in base:
        path = Path(base)
        if not path.is_file():
            raise PublicError(
                f"KF_ENV_IMAGE_BASE {base!r} is not an image archive. Give the path of one "
                "('kernelfleet image build' writes them) or a recipe name such as python.",
                status=500,
            )
        return path
    return image_build.build_image(base).archive


def make_image(record: EnvRecord, venv: Path, base: str, out_dir: Path) -> tuple[str, Path]:
    """Write the environment's image archive; ``(ref, archive)``. Blocks (seconds)."""
    base_path = base_archive(base)
    config = read_oci_archive(base_path, verify=False).config
    env_list = (config.get("config") or {}).get("Env") or []
    base_env = dict(item.split("=", 1) for item in env_list if "=" in item)
    path = f"{image_dir(record)}/bin:{base_env.get('PATH', '/usr/local/bin:/usr/bin:/bin')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    layer = out_dir / f".layer-{record.digest12}-{os.getpid()}.tar"
    archive = out_dir / f"{record.digest12}.oci.tar"
    try:
        env_layer_tar(venv, image_dir(record), layer)
        add_layer(base_path, layer, archive, image_ref(record), env={"PATH": path})
    finally:
        with contextlib.suppress(OSError):
            layer.unlink()
    return image_ref(record), archive


def load(archive: Path, docker_host: str) -> None:
    image_build.load_into_docker(archive, docker_host or None)


def import_containerd(archive: Path, socket: str) -> None:
    """``ctr images import`` into the ``k8s.io`` namespace of the containerd at *socket*."""
    image_build.import_into_containerd(archive, Path(socket))


def unload(ref: str, docker_host: str) -> None:
    """Remove the image from the engine (best effort: a container may still use it)."""
    argv = ["docker", *(["-H", docker_host] if docker_host else []), "rmi", ref]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(argv, capture_output=True, timeout=60, check=False)
