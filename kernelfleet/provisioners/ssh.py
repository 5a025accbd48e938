"""``kernelfleet-ssh``: a jupyter_client kernel provisioner that runs kernels on SSH hosts.

Select it in a kernelspec with ``metadata.kernel_provisioner.provisioner_name =
"kernelfleet-ssh"``; its ``config`` entries set the options below for that kernelspec. It works
under our gateway and in library mode (plain jupyter_server, nbclient, ``AsyncKernelManager``):
options not set by the kernelspec or the application's config fall back to their ``KF_*``
environment variables (:func:`kernelfleet.config.with_env_defaults`, the one place that does it).

How a kernel starts: placement picks a host (``remote_hosts``, ``load_balancing_algorithm``,
``KERNEL_REMOTE_HOST`` pinning, the same host again on restart), the host's agent — one per
host over one persistent SSH connection (see :mod:`kernelfleet.transport`) — starts the
kernelspec's argv detached with the kernel's environment passed as data, and answers once the
kernel listens on its ports. The HMAC key and CurveZMQ keypair are made here and travel only
inside the SSH channel and the 0600 connection file on the host (made here rather than on the
host so that the agent needs no pyzmq; a restart on the same host reuses them and, when free,
the same ports, so connected clients keep working as with local kernels). Poll answers from the
state the agent pushes; signals, kill and cleanup go through the agent. With
``impersonation_enabled`` the kernel runs as the OS user ``KERNEL_USERNAME`` (root SSH login:
set directly; other SSH users: through ``sudo -n -u``); privileged users are refused.

Attributes the gateway reads: :attr:`host` (the host the kernel runs on), :meth:`get_kernel_log`,
:meth:`get_provisioner_info` (everything a reattach needs) and the class hook
:meth:`stop_orphans`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Any as TAny
from traitlets import Bool, CaselessStrEnum, Float, Int, List, Unicode

from kernelfleet.config import option, with_env_defaults
from kernelfleet.errors import (
    BadRequest,
    Forbidden,
    HostsUnavailable,
    LaunchFailed,
    LaunchTimeout,
    NotFound,
)
from kernelfleet.placement.fleet import Fleet, get_fleet
from kernelfleet.placement.policies import ALGORITHMS
from kernelfleet.transport.agent_client import (
    AgentClient,
    AgentRequestError,
    HostDown,
    SSHTarget,
)
from kernelfleet.transport.host import HostLink, KernelWatch
from kernelfleet.transport.protocol import (
    PORT_NAMES,
    ConnectionSecrets,
    PortRange,
    build_argv,
    build_launch_request,
    connection_info,
    kernel_env,
    parse_port_range,
)

log = logging.getLogger(__name__)

USERNAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}$")
#: Extra seconds the gateway waits beyond the agent's own launch deadline.
LAUNCH_SLACK = 3.0
AGENT_CALL_TIMEOUT = 10.0


class SSHProvisioner(KernelProvisionerBase):  # type: ignore[misc]
    """Runs the kernel on one of ``remote_hosts`` through the kernelfleet host agent."""

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
    # Kernelspec config keys the gateway itself reads (kernelfleet.kernels.policy and .pool);
    # accepted here so a kernelspec carrying them is not "unrecognized".
    authorized_users = TAny(None, allow_none=True)
    unauthorized_users = TAny(None, allow_none=True)
    pool_size = TAny(None, allow_none=True)

    launch_timeout = option(
        Float(60.0, help="Seconds a kernel may take to listen on its ports."),
        "KF_LAUNCH_TIMEOUT",
        "GP_LAUNCH_TIMEOUT",
    )
    kernel_log_dir = option(
        Unicode(
            "",
            help="Directory on the hosts for kernel logs (kernel-<id>.log, kept after the "
            "kernel ends). Default: the kernel's private runtime directory, removed with it.",
        ),
        "KF_KERNEL_LOG_DIR",
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
    inherited_env = option(
        List(
            Unicode(),
            default_value=["PATH", "LANG", "LANGUAGE", "LC_ALL", "TZ", "PYTHONPATH"],
            help="Gateway environment variables passed to remote kernels besides KERNEL_*, "
            "JPY_* and the kernelspec's env.",
        ),
        "KF_KERNEL_INHERITED_ENV",
    )

    def __init__(self, **kwargs: Any):
        super().__init__(**with_env_defaults(type(self), kwargs))
        self.host: str | None = None
        self.pid: int | None = None
        self.pgid: int | None = None
        self.remote: dict[str, Any] = {}
        self._target: SSHTarget | None = None
        self._watch: KernelWatch | None = None
        self._has_process = False
        # where and how the last run listened: (ip, secrets, ports), reused by a restart
        self._last: tuple[str, ConnectionSecrets, dict[str, int]] | None = None

    # -- settings -----------------------------------------------------------------------
    @property
    def kernelspec_name(self) -> str:
        spec = self.kernel_spec
        name = getattr(spec, "name", "") if spec is not None else ""
        if not name and spec is not None and spec.resource_dir:
            name = os.path.basename(spec.resource_dir)
        return str(name or "?")

    @property
    def spec_name(self) -> str:
        name = self.kernelspec_name
        return f"kernelspec {name!r}" if name != "?" else "this kernelspec"

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

    def candidates(self, env: dict[str, str]) -> list[str]:
        """Allowed hosts for this launch: pinned by KERNEL_REMOTE_HOST, or all of them."""
        hosts = [h.strip() for h in self.remote_hosts if h.strip()]
        pinned = (env.get("KERNEL_REMOTE_HOST") or "").strip()
        if pinned:
            for host in hosts:
                if host.lower() == pinned.lower():
                    return [host]
            if self.allow_any_remote_host and HOSTNAME.match(pinned):
                return [pinned]
            raise Forbidden(
                f"KERNEL_REMOTE_HOST {pinned[:200]!r} is not a host allowed for {self.spec_name}"
                f" (allowed: {', '.join(hosts) or 'none'})"
            )
        if not hosts:
            raise HostsUnavailable(
                f"Kernel '{self.kernelspec_name}' not started: its kernelspec names no host. "
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

    # -- jupyter_client provisioner API -----------------------------------------------------
    @property
    def has_process(self) -> bool:
        return self._has_process

    async def poll(self) -> int | None:
        watch = self._watch
        if watch is None:
            return None if self._has_process else 0
        return watch.exit_code

    async def wait(self) -> int | None:
        watch = self._watch
        if watch is None:
            self._has_process = False
            return 0
        await watch.exited.wait()
        self._has_process = False
        return watch.exit_code

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        kwargs.pop("transport_encryption", None)  # remote kernels follow our own setting
        extra = kwargs.pop("extra_arguments", None) or []
        self.ports()  # validate before anything is placed
        spec = self.kernel_spec
        cmd = build_argv(list(spec.argv), str(self.kernel_id), extra)
        kwargs = await super().pre_launch(cmd=cmd, **kwargs)
        kwargs["env"] = kernel_env(kwargs["env"], spec.env.keys(), self.inherited_env)
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        env: dict[str, str] = dict(kwargs.get("env") or {})
        kid = str(self.kernel_id)
        candidates = self.candidates(env)
        user = self.kernel_user(env)
        ports = self.ports()
        fleet = get_fleet()
        previous = self.host
        host, link, agent = await self._place(fleet, kid, candidates)
        ip = agent.ip or host
        same_place = previous == host and self._last is not None and self._last[0] == ip
        if same_place and self._last is not None:
            # a restart where the kernel ran: same key, Curve keys and (if free) ports, so
            # clients connected to the previous kernel keep working, as with local kernels
            secrets_, preferred = self._last[1], self._last[2]
        else:
            secrets_, preferred = ConnectionSecrets.fresh(curve=self.transport_encryption), None
        fields = build_launch_request(
            kernel_id=kid,
            kernel_name=getattr(self.kernel_spec, "name", "") or "",
            argv=cmd,
            env=env,
            connection=secrets_,
            port_range=ports,
            timeout=self.launch_timeout,
            user=user,
            prohibited_uids=self.prohibited_uids,
            log_dir=self.kernel_log_dir or None,
            cwd=kwargs.get("cwd") if isinstance(kwargs.get("cwd"), str) else None,
            ip=ip,
            ports=preferred,
        )
        watch = link.watch(kid)
        try:
            async with asyncio.timeout(self.launch_timeout + LAUNCH_SLACK):
                reply = await agent.request("launch", **fields)
        except BaseException as exc:
            link.unwatch(kid)
            if not isinstance(exc, AgentRequestError):
                # cancelled, timed out or connection lost after the request went out: the
                # agent may have started a process; stop it whatever happens to us next.
                await asyncio.shield(self._abort(link, kid))
            if self.host is None:
                fleet.release(kid)
            error = self._launch_error(host, exc)
            if error is exc:
                raise
            raise error from exc
        watch.started(int(reply["pid"]))
        self.host, self._target, self._watch = host, link.target, watch
        self.pid, self.pgid = int(reply["pid"]), int(reply.get("pgid") or reply["pid"])
        self.remote = {
            key: reply.get(key) for key in ("connection_file", "log_path", "runtime_dir", "user")
        }
        self._has_process = True
        info = connection_info(reply, ip, fields["kernel_name"], secrets_)
        self._last = (ip, secrets_, {name: int(info[name]) for name in PORT_NAMES})
        self.connection_info = info  # type: ignore[assignment]
        log.info("kernel %s started on %s (pid %s)", kid, host, self.pid)
        fleet.prewarm(candidates, self.target_for)
        return info  # type: ignore[return-value]

    async def _place(
        self, fleet: Fleet, kid: str, candidates: list[str]
    ) -> tuple[str, HostLink, AgentClient]:
        """Place the kernel: a restart goes back to its host while that host is up."""

        async def place(hosts: list[str]) -> tuple[str, HostLink, AgentClient]:
            host, link, agent = await fleet.place(
                kernel_id=kid,
                candidates=hosts,
                algorithm=self.load_balancing_algorithm,
                target_for=self.target_for,
                what=self.kernelspec_name,
            )
            # A stop of this id left for when the host is back must not hit the new kernel.
            await link.settle_abort(kid, agent)
            return host, link, agent

        previous = self.host
        if previous is None or not self.restart_on_same_host:
            return await place(candidates)
        fleet.link(self.target_for(previous)).try_now()  # the user asked for this host
        try:
            return await place([previous])
        except HostsUnavailable as exc:
            cause = exc.hosts.get(previous, exc.message)
            others = [h for h in candidates if h != previous]
            if not (self.move_kernels_off_down_hosts and others):
                raise HostsUnavailable(
                    f"Host {previous} of kernel '{self.kernelspec_name}' is unreachable: "
                    "restart the kernel again once the host is back (its state is lost). "
                    f"Cause: {cause}",
                    hosts=exc.hosts,
                    reason="Kernel Host Unreachable",
                ) from None
            log.warning("kernel %s: restarting elsewhere, its host is down: %s", kid, cause)
            return await place(others)

    def _launch_error(self, host: str, exc: BaseException) -> BaseException:
        what = f"Kernel '{self.kernelspec_name}' not started on host {host}"
        if isinstance(exc, asyncio.CancelledError):
            return exc
        if isinstance(exc, TimeoutError):
            return LaunchTimeout(
                f"{what}: it did not listen within {self.launch_timeout:g} s. Its log may say "
                "why; raise the kernelspec's launch_timeout if it is just slow."
            )
        if isinstance(exc, HostDown):
            return LaunchFailed(f"{what}: the host was lost ({exc.reason}). Try again.")
        if isinstance(exc, AgentRequestError):
            text = f"{what}: {exc.message}"
            if exc.kind == "forbidden":
                return Forbidden(text)
            if exc.kind == "timeout":
                return LaunchTimeout(text)
            return LaunchFailed(text)
        return exc

    async def _abort(self, link: HostLink, kernel_id: str) -> None:
        agent = link.current_agent
        if agent is None:
            link.abort_later(kernel_id)
            return
        try:
            async with asyncio.timeout(AGENT_CALL_TIMEOUT):
                await agent.request("abort", kernel_id=kernel_id)
        except (HostDown, AgentRequestError, TimeoutError) as exc:
            log.warning("could not stop kernel %s on %s: %s", kernel_id, link.host, exc)
            link.abort_later(kernel_id)

    def _link(self) -> HostLink | None:
        if self._target is None:
            return None
        return get_fleet().link(self._target)

    async def _call(self, op: str, **fields: Any) -> dict[str, Any] | None:
        """One agent request about this kernel; None when the host cannot be reached."""
        link = self._link()
        if link is None or not link.available():
            return None  # unknown kernel, or its host is down and in backoff
        try:
            async with asyncio.timeout(AGENT_CALL_TIMEOUT):
                agent = await link.agent()
                return await agent.request(op, kernel_id=self.kernel_id, **fields)
        except (HostDown, TimeoutError) as exc:
            log.warning("kernel %s: %s on %s failed: %s", self.kernel_id, op, self.host, exc)
            return None

    async def send_signal(self, signum: int) -> None:
        if signum == 0 or self._watch is None or not self._watch.alive:
            return
        try:
            await self._call("signal", signum=int(signum))
        except AgentRequestError as exc:
            log.warning("kernel %s: signal %s failed: %s", self.kernel_id, signum, exc)

    async def kill(self, restart: bool = False) -> None:
        await self._stop(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        await self._stop(signal.SIGTERM)

    async def _stop(self, signum: int) -> None:
        watch = self._watch
        if watch is None or not watch.alive:
            return
        try:
            reply = await self._call("signal", signum=int(signum))
        except AgentRequestError:
            reply = {}
        if reply is None and signum == signal.SIGKILL:
            # Unreachable host: the kernel counts as gone; it is stopped when the host is back.
            link = self._link()
            if link is not None:
                link.abort_later(str(self.kernel_id))
            watch.mark_exited(None)

    async def cleanup(self, restart: bool = False) -> None:
        link = self._link()
        kid = str(self.kernel_id)
        if link is not None:
            try:
                reply = await self._call("cleanup", keep_log=restart)
            except AgentRequestError as exc:
                log.warning("kernel %s: cleanup failed: %s", kid, exc)
                reply = {}
            if reply is None:
                link.abort_later(kid)
            link.unwatch(kid)
        self._watch = None
        self._has_process = False
        if not restart:
            get_fleet().release(kid)
            self.host = None
            self._target = None
            self._last = None

    def resolve_path(self, path: str) -> str | None:
        return None  # paths on the gateway say nothing about the kernel's host

    # -- extras the gateway uses ------------------------------------------------------------
    @classmethod
    def _for_spec(cls, kernel_id: str, kernel_spec: dict[str, Any], parent: Any) -> SSHProvisioner:
        metadata = kernel_spec.get("metadata") or {}
        config = (metadata.get("kernel_provisioner") or {}).get("config") or {}
        traits = cls.class_traits(config=True)
        return cls(
            kernel_id=kernel_id,
            parent=parent,
            **{k: v for k, v in config.items() if k in traits},
        )

    @classmethod
    def warm_up(cls, kernel_spec: dict[str, Any], parent: Any = None) -> None:
        """Open the kernelspec's host connections in the background (call at gateway start,
        in its event loop): the first kernel then does not pay for the SSH login."""
        prov = cls._for_spec("warm-up", kernel_spec, parent)
        hosts = [h.strip() for h in prov.remote_hosts if h.strip()]
        get_fleet().prewarm(hosts, prov.target_for)

    @classmethod
    async def stop_orphans(
        cls, kernel_id: str, kernel_spec: dict[str, Any], parent: Any = None
    ) -> int:
        """Stop kernel *kernel_id* wherever it runs among the kernelspec's hosts.

        For a gateway that crashed between "launch requested" and "launch recorded": asks
        every allowed host's agent to abort that id. Returns how many processes were stopped.
        An unreachable host gets the abort when it is reachable again.
        """
        prov = cls._for_spec(kernel_id, kernel_spec, parent)
        fleet = get_fleet()

        async def one(host: str) -> int:
            link = fleet.link(prov.target_for(host))
            try:
                async with asyncio.timeout(AGENT_CALL_TIMEOUT):
                    agent = await link.agent()
                    reply = await agent.request("abort", kernel_id=kernel_id)
            except (HostDown, AgentRequestError, TimeoutError):
                link.abort_later(kernel_id)
                return 0
            return 1 if reply.get("stopped") else 0

        hosts = [h.strip() for h in prov.remote_hosts if h.strip()]
        return sum(await asyncio.gather(*(one(h) for h in hosts)))

    async def get_kernel_log(self, max_bytes: int = 65536) -> str:
        """The end (up to *max_bytes*) of the kernel's stdout/stderr log on its host."""
        if self._target is None:
            raise NotFound(f"kernel {self.kernel_id} has not been started on a host")
        try:
            reply = await self._call("log", max_bytes=int(max_bytes))
        except AgentRequestError as exc:
            raise NotFound(f"no log for kernel {self.kernel_id} on {self.host}: {exc}") from exc
        if reply is None:
            raise HostsUnavailable(f"host {self.host} of kernel {self.kernel_id} is unreachable")
        return str(reply.get("log", ""))

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        conn: dict[str, Any] = dict(self.connection_info)
        key = conn.get("key")
        if isinstance(key, bytes):
            conn["key"] = key.decode()
        target = self._target
        info.update(
            connection_info=conn,
            host=self.host,
            pid=self.pid,
            pgid=self.pgid,
            remote=dict(self.remote),
            ssh=None
            if target is None
            else {"host": target.host, "port": target.port, "user": target.user},
        )
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await super().load_provisioner_info(provisioner_info)
        conn = dict(provisioner_info.get("connection_info") or {})
        if isinstance(conn.get("key"), str):
            conn["key"] = conn["key"].encode()
        self.connection_info = conn  # type: ignore[assignment]
        self.host = provisioner_info.get("host")
        self.pid = provisioner_info.get("pid")
        self.pgid = provisioner_info.get("pgid")
        self.remote = dict(provisioner_info.get("remote") or {})
        key, ip = conn.get("key"), conn.get("ip")
        if isinstance(key, bytes) and isinstance(ip, str):
            self._last = (
                ip,
                ConnectionSecrets(
                    key.decode(), conn.get("curve_publickey"), conn.get("curve_secretkey")
                ),
                {name: int(conn[name]) for name in PORT_NAMES if name in conn},
            )
        if self.host and self.pid:
            self._target = self.target_for(self.host)
            link = get_fleet().link(self._target)
            self._watch = link.watch(str(self.kernel_id), int(self.pid))
            self._has_process = True
            get_fleet().assign(str(self.kernel_id), self.host)
            with contextlib.suppress(HostDown):
                await link.agent()  # its hello tells whether the kernel still runs
