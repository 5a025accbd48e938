"""The options of kernel environments (``c.EnvSettings.…``, ``KF_ENV_*``), read by the gateway
(admin API, dashboard) and by ``kernelfleet env``."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from urllib.parse import urlsplit

from traitlets import Bool, Float, Int, Unicode
from traitlets import List as TList
from traitlets.config import LoggingConfigurable

from kernelfleet.config import option
from kernelfleet.envs.model import Quota

DEFAULT_INDEX = "https://pypi.org/simple"
#: Where PyPI serves its files (the simple index links there).
PYPI_FILES = "files.pythonhosted.org"
DEFAULT_HOST_ROOT = "/opt/kernelfleet/envs"
IMAGE_ROOT = "/opt/kernelfleet/envs"


def bundled_uv() -> str:
    """The ``uv`` installed with kernelfleet (the ``uv`` package), else one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "uv")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("uv") or "uv"


class EnvSettings(LoggingConfigurable):
    """Kernel environments: where they are built and kept, who may build them, how much."""

    root = option(
        Unicode(
            "",
            help="""Directory of the built environments on the gateway (one directory each,
            with env.json, the environment and its archive). Default: <data_dir>/envs.""",
        ),
        "KF_ENV_ROOT",
    )
    kernels_dir = option(
        Unicode(
            "",
            help="""Directory the environments' kernelspecs are written to (the gateway must
            serve kernelspecs from it). Default: the system-wide Jupyter kernels directory.""",
        ),
        "KF_ENV_KERNELS_DIR",
    )
    build_dir = option(
        Unicode(
            "",
            help="""Scratch directory of builds in progress and of uv's cache, which the build
            user must be able to reach (mode 0711, each build's own directory is the build
            user's). Default: <system temp dir>/kernelfleet-env-builds.""",
        ),
        "KF_ENV_BUILD_DIR",
    )
    host_root = option(
        Unicode(
            DEFAULT_HOST_ROOT,
            help=f"""Directory on the SSH hosts the environments are shipped into
            (<host_root>/<name>/<digest>). Default: {DEFAULT_HOST_ROOT}.""",
        ),
        "KF_ENV_HOST_ROOT",
    )
    index_url = option(
        Unicode(
            DEFAULT_INDEX,
            help=f"""The package index (PEP 503 simple API) environments are built from; the
            only one a build may reach. Default: {DEFAULT_INDEX}.""",
        ),
        "KF_ENV_INDEX_URL",
    )
    allowed_hosts = option(
        TList(
            Unicode(),
            help=f"""Hosts (name or name:port) a build may connect to, besides the index's own
            host (comma list). Default: {PYPI_FILES} when the index is PyPI, else none.""",
        ),
        "KF_ENV_ALLOWED_HOSTS",
    )
    allow_source_builds = option(
        Bool(
            False,
            help="""Let environments build packages from source (sdists run their own code
            while building, in the sandbox). Off: wheels only (--only-binary :all:), and a
            package without a wheel is an error naming it. Admins may ask for a source build
            per environment when this is on. Default: false.""",
        ),
        "KF_ENV_ALLOW_SOURCE_BUILDS",
    )
    build_user = option(
        Unicode(
            "nobody",
            help="""Unprivileged user the builds run as when the gateway runs as root (an
            existing account). Default: nobody.""",
        ),
        "KF_ENV_BUILD_USER",
    )
    sandbox = option(
        Unicode(
            "auto",
            help="""How builds are isolated. 'required': as build_user, in a network namespace
            whose only way out is a proxy to the index hosts, else refuse to build. 'auto': the
            same when the gateway can (root, unshare), else as the gateway's user with a
            scrubbed environment (logged as a warning). 'off': no sandbox (trusted package
            lists only). Default: auto.""",
        ),
        "KF_ENV_SANDBOX",
    )
    compile_bytecode = option(
        Bool(
            True,
            help="""Compile every module to bytecode while building (a few seconds more): the
            environment is read-only to kernels, which could not write .pyc files, so without
            it every kernel start compiles what it imports again. Default: true.""",
        ),
        "KF_ENV_COMPILE_BYTECODE",
    )
    build_timeout = option(
        Float(
            900.0,
            help="Seconds one build (resolve and install) may take. Default: 900.",
        ),
        "KF_ENV_BUILD_TIMEOUT",
    )
    pythons = option(
        TList(
            Unicode(),
            help="""Interpreters environments may be built on (absolute paths, comma list).
            Default: the python3.X executables in /usr/bin and /usr/local/bin.""",
        ),
        "KF_ENV_PYTHONS",
    )
    uv = option(
        Unicode(
            "",
            help="Path of the uv executable that builds environments. Default: kernelfleet's.",
        ),
        "KF_ENV_UV",
    )
    creators = option(
        TList(
            Unicode(),
            help="""Users who may create environments, besides admins (comma list).
            Default: admins only.""",
        ),
        "KF_ENV_CREATORS",
    )
    creator_groups = option(
        TList(
            Unicode(),
            help="""Groups whose members may create environments (comma list). Default:
            none.""",
        ),
        "KF_ENV_CREATOR_GROUPS",
    )
    max_per_user = option(
        Int(5, help="Environments one user may own. Default: 5."),
        "KF_ENV_MAX_PER_USER",
    )
    max_disk_mb = option(
        Float(
            10240.0,
            help="Megabytes of environments (as built, on the gateway) one user may own. "
            "Default: 10240.",
        ),
        "KF_ENV_MAX_DISK_MB",
    )
    yarn_archive_dir = option(
        Unicode(
            "",
            help="""Directory, on a filesystem every YARN node reads at the same path (or the
            cluster's file:// default filesystem), that holds environment archives for YARN
            kernels, named by content hash: the same environment is copied there once.
            Default: <root>/archives.""",
        ),
        "KF_ENV_YARN_ARCHIVE_DIR",
    )
    containerd_socket = option(
        Unicode(
            "",
            help="""containerd socket of a Kubernetes node the gateway can reach, where a
            Kubernetes environment's image is imported (namespace k8s.io). Default: none (the
            image archive is left for the admin to import or push).""",
        ),
        "KF_ENV_CONTAINERD_SOCKET",
    )
    image_base = option(
        Unicode(
            "python",
            help="""Base image of container environments: a recipe name of 'kernelfleet image
            build' or the path of an OCI archive; the environment is one more layer on it.
            Default: python.""",
        ),
        "KF_ENV_IMAGE_BASE",
    )

    def root_dir(self, data_dir: str) -> str:
        return self.root or os.path.join(data_dir, "envs")

    def scratch_dir(self) -> str:
        return self.build_dir or os.path.join(tempfile.gettempdir(), "kernelfleet-env-builds")

    def index_hosts(self) -> tuple[str, ...]:
        parts = urlsplit(self.index_url)
        host = parts.hostname or ""
        port = parts.port
        hosts = [f"{host}:{port}" if port else host]
        if not self.allowed_hosts and host == "pypi.org":
            hosts.append(PYPI_FILES)
        hosts.extend(h.strip() for h in self.allowed_hosts if h.strip())
        return tuple(dict.fromkeys(hosts))

    def quota(self) -> Quota:
        return Quota(
            creators=frozenset(self.creators),
            creator_groups=frozenset(self.creator_groups),
            max_per_user=self.max_per_user,
            max_disk_mb_per_user=self.max_disk_mb,
        )

    def uv_path(self) -> str:
        return self.uv or bundled_uv()
