"""``kernelfleet image build | import | list``: argument parsing and output only.

The work is done by :mod:`kernelfleet.images.build`. ``build`` prints one line per image,
``REF ARCHIVE``, on stdout (progress goes to stderr), so a script can read it::

    read -r ref archive < <(kernelfleet image build python)
"""

from __future__ import annotations

import sys
from pathlib import Path
from textwrap import dedent

from traitlets import Bool, Unicode

from kernelfleet.cli.base import KernelfleetCommand, table
from kernelfleet.config import option
from kernelfleet.images import build, recipes

#: What ``kernelfleet image build`` builds when no image is named (the gateway image is slow
#: and needs PyPI: name it).
DEFAULT_IMAGES = ("python", "r", "busybox")


def _progress(line: str) -> None:
    print(f"kernelfleet image: {line}", file=sys.stderr, flush=True)


class ImageCommand(KernelfleetCommand):
    cache_dir = option(
        Unicode(
            str(build.DEFAULT_CACHE_DIR),
            help="Directory of the image archives (<image>-<recipe hash>.oci.tar), reused "
            f"while the recipe is unchanged. Default: {build.DEFAULT_CACHE_DIR}.",
        ),
        build.CACHE_ENV,
    )

    def images(self) -> list[str]:
        """The image names of the command line (default :data:`DEFAULT_IMAGES`)."""
        names = list(dict.fromkeys(self.extra_args)) or list(DEFAULT_IMAGES)
        unknown = [n for n in names if n not in recipes.RECIPE_NAMES]
        if unknown:
            self.fail(
                f"no image named {unknown[0]!r}: choose among {', '.join(recipes.RECIPE_NAMES)}",
                code=2,
            )
        return names


class BuildApp(ImageCommand):
    name = "kernelfleet image build"
    description = """Build kernel images (OCI archives for 'ctr images import' and
    'docker load') from Debian packages with mmdebstrap, into the cache directory. An image
    whose recipe is unchanged is reused. Prints 'REF ARCHIVE' per image. Debian images need
    root and the Debian mirror."""
    examples = dedent("""
        kernelfleet image build                      # python, r and busybox
        kernelfleet image build python --cache-dir=/tmp/images
        kernelfleet image build gateway --rebuild
        """)
    rebuild = option(
        Bool(False, help="Build even when the cache holds the image."), "KF_IMAGE_REBUILD"
    )
    aliases = {"cache-dir": "BuildApp.cache_dir"}
    flags = {"rebuild": ({"BuildApp": {"rebuild": True}}, "Build even when cached.")}

    def start(self) -> None:
        cache = Path(self.cache_dir)
        for name in self.images():
            try:
                built = build.build_image(name, cache, rebuild=self.rebuild, log=_progress)
            except build.ImageBuildError as exc:
                self.fail_public(exc)
            print(f"{built.ref} {built.archive}", flush=True)


class ImportApp(ImageCommand):
    name = "kernelfleet image import"
    description = """Import image archives (paths, or image names: built into the cache when
    missing) into a containerd, where the kubelet's CRI finds them (namespace k8s.io), or
    into a Docker daemon with --docker-host."""
    examples = dedent("""
        kernelfleet image import python busybox --containerd-socket=/run/kf/containerd.sock
        kernelfleet image import /var/cache/kernelfleet/images/busybox-….oci.tar \\
            --containerd-socket=/run/kf/containerd.sock --namespace=default
        kernelfleet image import python --docker-host=unix:///run/kf/docker.sock
        """)
    containerd_socket = option(
        Unicode("", help="containerd's socket (ctr -a). One of it and --docker-host is needed."),
        "KF_CONTAINERD_SOCKET",
    )
    namespace = option(
        Unicode("k8s.io", help="containerd namespace. Default: k8s.io (the kubelet's)."),
        "KF_CONTAINERD_NAMESPACE",
    )
    docker_host = option(
        Unicode("", help="A Docker daemon to 'docker load' into instead (docker -H)."),
        "KF_IMAGE_DOCKER_HOST",
    )
    aliases = {
        "cache-dir": "ImportApp.cache_dir",
        "containerd-socket": "ImportApp.containerd_socket",
        "namespace": "ImportApp.namespace",
        "docker-host": "ImportApp.docker_host",
    }

    def start(self) -> None:
        if not self.extra_args:
            self.fail("name at least one archive or image to import", code=2)
        if bool(self.containerd_socket) == bool(self.docker_host):
            self.fail("pass exactly one of --containerd-socket and --docker-host", code=2)
        try:
            if self.containerd_socket:
                build.check_containerd_socket(Path(self.containerd_socket))
            for arg in self.extra_args:
                if arg in recipes.RECIPE_NAMES and not Path(arg).exists():
                    archive, ref = build.build_image(arg, Path(self.cache_dir), log=_progress)
                else:
                    archive, ref = Path(arg), ""
                if self.docker_host:
                    build.load_into_docker(archive, self.docker_host)
                else:
                    build.import_into_containerd(
                        archive, Path(self.containerd_socket), self.namespace
                    )
                print(f"imported {ref or archive}", flush=True)
        except build.ImageBuildError as exc:
            self.fail_public(exc)


class ListApp(ImageCommand):
    name = "kernelfleet image list"
    description = """List the image archives in the cache directory. CURRENT is 'yes' for
    the archive today's recipe would build; others are older builds (safe to delete)."""
    takes_arguments = False
    aliases = {"cache-dir": "ListApp.cache_dir"}

    def start(self) -> None:
        found = build.cached_images(Path(self.cache_dir))
        if not found:
            print(f"no images in {self.cache_dir}; build them with 'kernelfleet image build'")
            return
        rows = [
            [
                img.ref,
                img.recipe,
                f"{img.size / 1e6:.0f} MB",
                "yes" if img.current else "no",
                str(img.archive),
            ]
            for img in found
        ]
        print(table(["REF", "RECIPE", "SIZE", "CURRENT", "ARCHIVE"], rows))


class ImageApp(KernelfleetCommand):
    name = "kernelfleet image"
    description = "Build kernel images without a registry, and load them into a runtime."
    subcommands = {
        "build": (BuildApp, "Build kernel images into the cache."),
        "import": (ImportApp, "Import images into containerd or Docker."),
        "list": (ListApp, "List the images in the cache."),
    }
