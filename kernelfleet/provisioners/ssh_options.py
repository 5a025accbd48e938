"""The settings of the ``kernelfleet-ssh`` provisioner, and the pure decisions made from them.

Kept apart from the provisioner's lifecycle (:mod:`kernelfleet.provisioners.ssh`): the options
(each a kernelspec ``config`` key, a ``--SSHProvisioner.<name>`` flag, and a ``KF_*``
variable), how an SSH target is built, which hosts a launch may use, which OS user a kernel
runs as. No I/O here.
"""

from __future__ import annotations

import os
import re

from traitlets import Bool, CaselessStrEnum, Float, Int, List, Unicode
from traitlets.config import Configurable

from kernelfleet.config import option
from kernelfleet.errors import BadRequest, Forbidden, HostsUnavailable
from kernelfleet.placement.policies import ALGORITHMS
from kernelfleet.provisioners.base import USERNAME
from kernelfleet.transport.agent_client import SSHTarget
from kernelfleet.transport.protocol import PortRange, parse_port_range

HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}$")


class SSHOptions(Configurable):
    """The options of SSH kernelspecs (a mixin of
    :class:`~kernelfleet.provisioners.ssh.SSHProvisioner`)."""

    remote_hosts = option(
        List(Unicode(), help="Hosts this kernelspec's kernels may run on."),
        "KF_REMOTE_HOSTS",
        "EG_REMOTE_HOSTS",
        "GP_REMOTE_HOSTS",
    )
    load_balancing_algorithm = option(
        CaselessStrEnum(
            list(ALGORITHMS),
            default_value="round-robin",
            help="How a host is chosen: round-robin, least-connection (fewest kernels of this "
            "gateway, all kernelspecs) or load (load average per CPU and memory in use).",
        ),
        "KF_LOAD_BALANCING_ALGORITHM",
        "EG_LOAD_BALANCING_ALGORITHM",
        "GP_LOAD_BALANCING_ALGORITHM",
    )
    allow_any_remote_host = option(
        Bool(False, help="Accept a KERNEL_REMOTE_HOST that is not in remote_hosts."),
        "KF_ALLOW_ANY_REMOTE_HOST",
    )
    restart_on_same_host = option(
        Bool(True, help="Restart a kernel on the host it ran on (else place it anew)."),
        "KF_RESTART_ON_SAME_HOST",
    )
    move_kernels_off_down_hosts = option(
        Bool(
            False,
            help="When a kernel's host is unreachable at a restart (or when the kernel died "
            "with its host), start it on another allowed host and tell the user on the "
            "kernel's output that its state is gone. Default false: the restart answers 503 "
            "naming the host, and the kernel stays listed until the host is back.",
        ),
        "KF_MOVE_KERNELS_OFF_DOWN_HOSTS",
    )
    ssh_user = option(
        Unicode("", help="SSH login user (default: the gateway's user or ~/.ssh/config)."),
        "KF_SSH_USER",
        "EG_REMOTE_USER",
        "GP_REMOTE_USER",
    )
    ssh_port = option(Int(22, help="SSH port of the hosts."), "KF_SSH_PORT", "EG_SSH_PORT")
    ssh_key = option(
        Unicode("", help="Identity file for the SSH login (default: ~/.ssh keys and agent)."),
        "KF_SSH_KEY",
    )
    ssh_known_hosts = option(
        Unicode(
            "",
            help="known_hosts file used to verify host keys (default ~/.ssh/known_hosts). "
            "Host keys are always verified.",
        ),
        "KF_SSH_KNOWN_HOSTS",
    )
    ssh_connect_timeout = option(
        Float(5.0, help="Seconds to wait for an SSH connection and login."),
        "KF_SSH_CONNECT_TIMEOUT",
    )
    ssh_keepalive_interval = option(
        Float(
            2.0,
            help="Seconds between SSH keepalives; a host missing two in a row is down and its "
            "kernels are reported dead.",
        ),
        "KF_SSH_KEEPALIVE_INTERVAL",
    )
    agent_python = option(
        Unicode("python3", help="Python 3.9+ on the hosts that runs the kernelfleet agent."),
        "KF_AGENT_PYTHON",
    )
    port_range = option(
        Unicode("", help="Ports kernels may listen on, 'lo..hi' (empty or 0..0: any)."),
        "KF_PORT_RANGE",
        "EG_PORT_RANGE",
        "GP_PORT_RANGE",
    )
    min_port_range_size = option(
        Int(50, help="Smallest accepted port_range size, in ports."),
        "KF_MIN_PORT_RANGE_SIZE",
        "EG_MIN_PORT_RANGE_SIZE",
    )
    kernel_log_dir = option(
        Unicode(
            "",
            help="Directory on the hosts for kernel logs (kernel-<id>.log, kept after the "
            "kernel ends). Default: the kernel's private runtime directory, removed with it.",
        ),
        "KF_HOST_KERNEL_LOG_DIR",
        "EG_KERNEL_LOG_DIR",
        "GP_KERNEL_LOG_DIR",
    )
    impersonation_enabled = option(
        Bool(
            False,
            help="Run each kernel as the OS user KERNEL_USERNAME on its host: directly when "
            "the SSH user is root, otherwise through 'sudo -n -u USER <agent python>' (allow it "
            "in sudoers, e.g. 'svc ALL=(ALL,!root) NOPASSWD: /usr/bin/python3').",
        ),
        "KF_IMPERSONATION_ENABLED",
        "EG_IMPERSONATION_ENABLED",
        "GP_IMPERSONATION_ENABLED",
    )
    prohibited_uids = option(
        List(Int(), default_value=[0], help="Uids a kernel may never run as (impersonation)."),
        "KF_PROHIBITED_UIDS",
        "EG_PROHIBITED_UIDS",
        "GP_PROHIBITED_UIDS",
    )
    transport_encryption = option(
        Bool(True, help="Encrypt kernel traffic with CurveZMQ (needs ipykernel >= 7.4)."),
        "KF_TRANSPORT_ENCRYPTION",
    )

    # -- decisions --------------------------------------------------------------------------
    @property
    def hosts(self) -> list[str]:
        return [h.strip() for h in self.remote_hosts if h.strip()]

    def target_for(self, host: str) -> SSHTarget:
        return SSHTarget(
            host=host,
            port=self.ssh_port,
            user=self.ssh_user or None,
            key_file=os.path.expanduser(self.ssh_key) if self.ssh_key else None,
            known_hosts=os.path.expanduser(self.ssh_known_hosts) if self.ssh_known_hosts else None,
            agent_python=self.agent_python,
            connect_timeout=self.ssh_connect_timeout,
            keepalive_interval=self.ssh_keepalive_interval,
            keepalive_count_max=2,
        )

    def target_settings(self) -> tuple[object, ...]:
        """What makes two kernelspecs' SSH connections differ (hosts aside)."""
        t = self.target_for("")
        return (
            t.port,
            t.user,
            t.key_file,
            t.known_hosts,
            t.agent_python,
            t.connect_timeout,
            t.keepalive_interval,
        )

    def allowed_hosts(self, env: dict[str, str], spec_name: str, what: str) -> list[str]:
        """Allowed hosts for this launch: pinned by KERNEL_REMOTE_HOST, or all of them.
        *spec_name* is the kernelspec's name, *what* how an error names it."""
        hosts = self.hosts
        pinned = (env.get("KERNEL_REMOTE_HOST") or "").strip()
        if pinned:
            for host in hosts:
                if host.lower() == pinned.lower():
                    return [host]
            if self.allow_any_remote_host and HOSTNAME.match(pinned):
                return [pinned]
            raise Forbidden(
                f"KERNEL_REMOTE_HOST {pinned[:200]!r} is not a host allowed for {what}"
                f" (allowed: {', '.join(hosts) or 'none'})"
            )
        if not hosts:
            raise HostsUnavailable(
                f"Kernel '{spec_name}' not started: its kernelspec names no host. "
                "An admin sets remote_hosts in its kernel_provisioner config or KF_REMOTE_HOSTS."
            )
        return hosts

    def kernel_user(self, env: dict[str, str]) -> str | None:
        if not self.impersonation_enabled:
            return None
        name = env.get("KERNEL_USERNAME", "")
        if not USERNAME.match(name):
            raise BadRequest(
                "impersonation is enabled: KERNEL_USERNAME must name an OS user "
                f"(got {name[:64]!r})"
            )
        if name == "root":
            raise Forbidden("kernels may not run as a privileged user ('root')")
        return name

    def ports(self) -> PortRange:
        return parse_port_range(self.port_range, self.min_port_range_size)
