"""The settings of the ``kernelfleet-docker`` provisioner, and the decisions made from them.

Each option is a kernelspec ``config`` key, a ``--DockerProvisioner.<name>`` flag and a
``KF_DOCKER_*`` variable (impersonation shares ``KF_IMPERSONATION_ENABLED`` with the other
backends; the engine's address falls back to Docker's own ``DOCKER_HOST``).

**Users**: kernel containers run as ``kernel_uid``:``kernel_gid``; with impersonation on, as
the requesting user's: ``user_ids`` maps a ``KERNEL_USERNAME`` to a uid (and gid), else, with
``host_users``, the gateway machine's account of that name decides. uid and gid 0 are refused.
"""

from __future__ import annotations

import pwd
from collections.abc import Mapping

from traitlets import Bool, Dict, Float, Int, List, Unicode
from traitlets.config import Configurable

from kernelfleet.config import option
from kernelfleet.errors import LaunchFailed
from kernelfleet.provisioners.docker_spec import (
    Limits,
    Mount,
    check_constraints,
    check_network,
    parse_mounts,
)
from kernelfleet.provisioners.k8s_options import DEFAULT_LAUNCHER, kernel_user
from kernelfleet.provisioners.k8s_pod import quantity
from kernelfleet.transport.docker_api import Endpoint, parse_host


class DockerOptions(Configurable):
    """The options of Docker kernelspecs (a mixin of
    :class:`~kernelfleet.provisioners.docker.DockerProvisioner`)."""

    docker_host = option(
        Unicode(
            "",
            help="The Docker engine: unix:///path/docker.sock or tcp://host:port. Default: "
            "$DOCKER_HOST, else unix:///var/run/docker.sock.",
        ),
        "KF_DOCKER_HOST",
        "DOCKER_HOST",
    )
    tls_ca = option(
        Unicode("", help="CA certificates (PEM) of a TCP engine's TLS. Default: none."),
        "KF_DOCKER_TLS_CA",
    )
    tls_cert = option(
        Unicode("", help="Client certificate (PEM) for a TCP engine's TLS. Default: none."),
        "KF_DOCKER_TLS_CERT",
    )
    tls_key = option(
        Unicode("", help="Client key (PEM) for a TCP engine's TLS. Default: none."),
        "KF_DOCKER_TLS_KEY",
    )
    swarm = option(
        Bool(
            False,
            help="Run each kernel as a Swarm service (one replica, never restarted by Swarm) "
            "instead of a container; the engine must be a Swarm manager. Default: false.",
        ),
        "KF_DOCKER_SWARM",
    )
    placement = option(
        List(
            Unicode(),
            help='Swarm placement constraints of every kernel service, e.g. ["node.role=='
            'worker", "node.labels.gpu==yes"]. Default: none.',
        ),
        "KF_DOCKER_PLACEMENT",
    )
    image = option(
        Unicode(
            "",
            help="The kernel image, with an explicit tag (kernelfleet image build; loaded into "
            "the engine: kernelfleet never pulls).",
        ),
        "KF_DOCKER_IMAGE",
    )
    allowed_images = option(
        List(Unicode(), help="Images a request may choose with KERNEL_IMAGE. Default: none."),
        "KF_DOCKER_ALLOWED_IMAGES",
    )
    network = option(
        Unicode(
            "bridge",
            help="The Docker network kernels join; the gateway must reach its addresses "
            "directly. Default: bridge.",
        ),
        "KF_DOCKER_NETWORK",
    )
    launcher = option(
        Unicode(
            DEFAULT_LAUNCHER,
            help=f"Path of kernel_launcher.py inside the image. Default: {DEFAULT_LAUNCHER}.",
        ),
        "KF_DOCKER_LAUNCHER",
    )
    launcher_python = option(
        Unicode("python3", help="The Python that runs the launcher in the image."),
        "KF_DOCKER_LAUNCHER_PYTHON",
    )
    kernel_uid = option(
        Int(1000, help="The uid kernels run as without impersonation. Default: 1000."),
        "KF_DOCKER_KERNEL_UID",
    )
    kernel_gid = option(
        Int(1000, help="The gid kernels run as without impersonation. Default: 1000."),
        "KF_DOCKER_KERNEL_GID",
    )
    impersonation_enabled = option(
        Bool(
            False,
            help="Run each kernel as the requesting user's uid and gid (user_ids, else the "
            "gateway machine's account with host_users); unknown users are refused.",
        ),
        "KF_IMPERSONATION_ENABLED",
        "EG_IMPERSONATION_ENABLED",
    )
    user_ids = option(
        Dict(
            per_key_traits=None,
            help='User name → "uid" or "uid:gid" for impersonation, as a JSON object, e.g. '
            '{"alice": "2001:2001"}. uid 0 is refused.',
        ),
        "KF_DOCKER_USER_IDS",
    )
    host_users = option(
        Bool(
            True,
            help="With impersonation, a user missing from user_ids gets the uid and gid of "
            "the gateway machine's account of that name. Default: true.",
        ),
        "KF_DOCKER_HOST_USERS",
    )
    cpus = option(Unicode("", help="Default CPU limit (e.g. 1). Default: none."), "KF_DOCKER_CPUS")
    memory = option(
        Unicode("", help="Default memory limit (e.g. 1Gi). Default: none."), "KF_DOCKER_MEMORY"
    )
    pids = option(
        Int(0, help="Default limit of processes and threads (0: none). Default: 0."),
        "KF_DOCKER_PIDS",
    )
    max_cpus = option(
        Float(8.0, help="Most CPUs a request may ask (KERNEL_CPUS). Default: 8."),
        "KF_DOCKER_MAX_CPUS",
    )
    max_memory = option(
        Unicode("16Gi", help="Most memory a request may ask (KERNEL_MEMORY). Default: 16Gi."),
        "KF_DOCKER_MAX_MEMORY",
    )
    max_pids = option(
        Int(4096, help="Most processes a request may ask (KERNEL_PIDS). Default: 4096."),
        "KF_DOCKER_MAX_PIDS",
    )
    volumes = option(
        List(
            Dict(per_key_traits=None),
            help='Mounts of every kernel, as a JSON list: {"source": "/srv/home/{username}", '
            '"target": "/home/{username}", "read_only": false}; a source without a leading / '
            "is a named volume. {username} is the requesting user's validated name.",
        ),
        "KF_DOCKER_VOLUMES",
    )
    stop_grace = option(
        Int(5, help="Seconds a kernel gets between SIGTERM and SIGKILL. Default: 5."),
        "KF_DOCKER_STOP_GRACE",
    )

    # -- decisions --------------------------------------------------------------------------
    def endpoint(self) -> Endpoint:
        return Endpoint(self.docker_host, self.tls_ca, self.tls_cert, self.tls_key)

    def check_options(self, kernel: str) -> None:
        """Raise LaunchFailed (the admin's to fix) for settings no launch can use."""
        if not self.image:
            raise LaunchFailed(
                f"Kernel '{kernel}' not started: its kernelspec names no image. Set image "
                "(KF_DOCKER_IMAGE) to a kernel image with an explicit tag."
            )
        problems = [
            check_network(self.network),
            check_constraints(self.placement) if self.swarm else None,
        ]
        try:
            parse_host(self.endpoint().url)
        except ValueError as exc:
            problems.append(f"docker_host {exc}")
        for option_name, text in (
            ("max_memory", self.max_memory),
            ("memory", self.memory),
            ("cpus", self.cpus),
        ):
            try:
                if text or option_name == "max_memory":
                    quantity(text)
            except ValueError:
                problems.append(f"{option_name} {text[:40]!r} is not an amount (e.g. 2Gi, 0.5)")
        if self.pids and not 16 <= self.pids <= self.max_pids:
            problems.append(f"pids {self.pids} is outside 16..max_pids ({self.max_pids})")
        if self.kernel_uid <= 0 or self.kernel_gid <= 0:
            problems.append("kernel_uid and kernel_gid must not be 0 (root) or negative")
        for why in problems:
            if why:
                raise LaunchFailed(f"Kernel '{kernel}' not started: {why}. Fix the kernelspec.")
        self.mounts()

    def limits(self) -> Limits:
        return Limits(
            cpus=self.cpus,
            memory=self.memory,
            pids=self.pids,
            max_cpus=self.max_cpus,
            max_memory=self.max_memory,
            max_pids=self.max_pids,
        )

    def mounts(self) -> tuple[Mount, ...]:
        try:
            return parse_mounts(self.volumes)
        except ValueError as exc:
            raise LaunchFailed(
                f"the kernelspec's volumes option is invalid: {exc}. The admin should fix it."
            ) from None

    def user(self, env: Mapping[str, str]) -> tuple[str, int, int]:
        """(user name, uid, gid) the kernel's container runs as."""
        return kernel_user(
            env,
            impersonation=self.impersonation_enabled,
            user_ids=self.user_ids,
            uid=self.kernel_uid,
            gid=self.kernel_gid,
            variable="KF_DOCKER_USER_IDS",
            account=host_account if self.host_users else None,
        )


def host_account(name: str) -> tuple[int, int] | None:
    """uid and gid of this machine's account *name* (None when there is none)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


__all__ = ["DockerOptions"]
