"""``kernelfleet-ssh``: a jupyter_client kernel provisioner that runs kernels on SSH hosts.

Select it in a kernelspec with ``metadata.kernel_provisioner.provisioner_name =
"kernelfleet-ssh"``; its ``config`` entries set the options of
:class:`~kernelfleet.provisioners.ssh_options.SSHOptions` for that kernelspec. It works under our
gateway and in library mode (plain jupyter_server, nbclient, ``AsyncKernelManager``): options
not set by the kernelspec or the application's config fall back to their ``KF_*`` variables.

How a kernel starts (the hooks of :class:`~kernelfleet.provisioners.remote.RemoteProvisioner`):
placement picks a host (``remote_hosts``, ``load_balancing_algorithm``, ``KERNEL_REMOTE_HOST``
pinning, the same host again on restart) and the first checkpoint names it; the host's agent
— one per host over one persistent SSH connection (see :mod:`kernelfleet.transport`) — starts
the kernelspec's argv detached with the kernel's environment passed as data, and answers once
the kernel listens on its ports; the second checkpoint holds the pid and connection info. The
HMAC key and CurveZMQ keypair are made here and travel only inside the SSH channel and the 0600
connection file on the host (a restart on the same host reuses them and, when free, the same
ports, so connected clients keep working as with local kernels). Poll answers from the state
the agent pushes; signals, kill, cleanup and logs go through the agent. With
``impersonation_enabled`` the kernel runs as the OS user ``KERNEL_USERNAME``.

The SSH :class:`SSHBackend` is this process's fleet of host links (one per event loop, shared by
every SSH kernelspec so that ``least-connection`` counts all their kernels).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncGenerator, Hashable
from typing import Any

from kernelfleet.errors import (
    Forbidden,
    HostsUnavailable,
    LaunchFailed,
    LaunchTimeout,
    NotFound,
)
from kernelfleet.placement.fleet import Fleet, get_fleet, reset_fleets
from kernelfleet.provisioners.base import Backend
from kernelfleet.provisioners.remote import RemoteProvisioner, jsonable_connection_info
from kernelfleet.provisioners.ssh_options import SSHOptions
from kernelfleet.transport.agent_client import AgentClient, AgentRequestError, HostDown, SSHTarget
from kernelfleet.transport.host import HostLink, KernelWatch
from kernelfleet.transport.protocol import (
    PORT_NAMES,
    ConnectionSecrets,
    build_launch_request,
    connection_info,
)

log = logging.getLogger(__name__)

AGENT_CALL_TIMEOUT = 10.0


class SSHBackend(Backend):
    """The hosts of SSH kernelspecs with the same connection settings (see module docstring)."""

    def __init__(self, options: SSHOptions) -> None:
        self.fleet = get_fleet()
        self.hosts = options.hosts
        self.target_for = options.target_for

    async def warm_up(self) -> None:
        """Open the hosts' connections in the background: the first kernel then does not pay
        for the SSH login."""
        self.fleet.prewarm(self.hosts, self.target_for)

    async def close(self) -> None:
        await reset_fleets()

    async def stop_orphan(self, kernel_id: str) -> int:
        """Ask every allowed host's agent to abort *kernel_id*; an unreachable host gets the
        abort when it is reachable again."""

        links = [self.fleet.link(self.target_for(host)) for host in self.hosts]
        return sum(await asyncio.gather(*(ln.abort(kernel_id, AGENT_CALL_TIMEOUT) for ln in links)))


class SSHProvisioner(RemoteProvisioner, SSHOptions):  # type: ignore[misc,metaclass]
    """Runs the kernel on one of ``remote_hosts`` through the kernelfleet host agent."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._refused = False  # the agent refused the launch: nothing to abort there

    # -- backend ----------------------------------------------------------------------------
    def backend_key(self) -> Hashable:
        return (type(self), tuple(self.hosts), self.target_settings())

    def make_backend(self) -> SSHBackend:
        return SSHBackend(self)

    @property
    def fleet(self) -> Fleet:
        backend = self.backend
        assert isinstance(backend, SSHBackend)
        return backend.fleet

    # -- what the checkpoint says -----------------------------------------------------------
    @property
    def host(self) -> str | None:
        host = self.checkpoint.get("host")
        return host if isinstance(host, str) else None

    @property
    def pid(self) -> int | None:
        pid = self.checkpoint.get("pid")
        return pid if isinstance(pid, int) else None

    @property
    def remote(self) -> dict[str, Any]:
        return dict(self.checkpoint.get("remote") or {})

    @property
    def spec_name(self) -> str:
        name = self.kernelspec_name
        return f"kernelspec {name!r}" if name != "?" else "this kernelspec"

    def candidates(self, env: dict[str, str]) -> list[str]:
        return self.allowed_hosts(env, self.kernelspec_name, self.spec_name)

    def check_settings(self) -> None:
        self.ports()  # validate before anything is placed

    def exit_reason(self) -> str | None:
        watch = self.watch
        if not isinstance(watch, KernelWatch) or watch.exit_reason != "oom":
            return None
        limits = self.terms.limits if self.terms is not None else None
        if limits is not None and limits.memory:
            return (
                f"it ran out of memory: its profile '{limits.profile}' allows "
                f"{limits.memory / 1024**2:.0f} MiB, and the kernel was killed on reaching it"
            )
        return "it ran out of memory: its memory limit killed it"

    def _link(self) -> HostLink | None:
        host = self.host
        return self.fleet.link(self.target_for(host)) if host else None

    # -- hooks ------------------------------------------------------------------------------
    async def do_launch(
        self, cmd: list[str], env: dict[str, str], cwd: str | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        kid = str(self.kernel_id)
        candidates = self.candidates(env)
        user = self.kernel_user(env)
        ports = self.ports()
        fleet = self.fleet
        self._refused = False
        host, link, agent = await self._place(fleet, kid, candidates)
        target = link.target
        yield {"host": host, "ssh": {"host": host, "port": target.port, "user": target.user}}

        ip = agent.ip or host
        last = self.previous.get("connection_info") or {}
        if self.previous.get("host") == host and last.get("ip") == ip and last.get("key"):
            # a restart where the kernel ran: same key, Curve keys and (if free) ports, so
            # clients connected to the previous kernel keep working, as with local kernels
            secrets_ = ConnectionSecrets(
                str(last["key"]), last.get("curve_publickey"), last.get("curve_secretkey")
            )
            preferred = {name: int(last[name]) for name in PORT_NAMES if name in last}
        else:
            secrets_, preferred = ConnectionSecrets.fresh(curve=self.transport_encryption), {}
        fields = build_launch_request(
            kernel_id=kid,
            kernel_name=getattr(self.kernel_spec, "name", "") or "",
            argv=cmd,
            env=env,
            connection=secrets_,
            port_range=ports,
            timeout=self.time_left(),
            user=user,
            prohibited_uids=self.prohibited_uids,
            log_dir=self.kernel_log_dir or None,
            cwd=cwd,
            ip=ip,
            ports=preferred or None,
            limits=self.terms.limits.as_request() if self.terms and self.terms.limits else None,
        )
        watch = self.watch = link.watch(kid)
        asked = time.monotonic()
        try:
            reply = await agent.request("launch", **fields)
        except AgentRequestError:
            self._refused = True  # the agent answered: it started nothing
            raise
        pid = int(reply["pid"])
        watch.started(pid)
        info = connection_info(reply, ip, fields["kernel_name"], secrets_)
        yield {
            "pid": pid,
            "pgid": int(reply.get("pgid") or pid),
            "remote": {
                key: reply.get(key)
                for key in ("connection_file", "log_path", "runtime_dir", "user")
            },
            "connection_info": jsonable_connection_info(info),
        }
        spent: dict[str, Any] = reply.get("seconds") or {}
        log.info(
            "kernel %s started on %s (pid %s) in %.0f ms: spawn %.0f, listen %.0f",
            kid,
            host,
            pid,
            (time.monotonic() - asked) * 1000,
            float(spent.get("spawn") or 0) * 1000,
            float(spent.get("listen") or 0) * 1000,
        )
        fleet.prewarm(candidates, self.target_for)

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

        previous = self.previous.get("host")
        if not isinstance(previous, str) or not self.restart_on_same_host:
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

    def launch_error(self, exc: BaseException) -> BaseException:
        what = f"Kernel '{self.kernelspec_name}' not started on host {self.host}"
        if isinstance(exc, TimeoutError):
            return LaunchTimeout(
                f"{what}: it did not listen within its launch timeout. Its log may say why; "
                "raise the kernelspec's launch_timeout if it is just slow."
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

    async def do_abort(self) -> None:
        kid = str(self.kernel_id)
        link = self._link()
        if link is not None:
            link.unwatch(kid)
            if not self._refused:
                await link.abort(kid, AGENT_CALL_TIMEOUT)
        if not self.previous.get("host"):
            self.fleet.release(kid)  # a first launch: this kernel holds no host any more
        self._refused = False

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

    async def do_signal(self, signum: int) -> None:
        await self._call("signal", signum=signum)

    async def do_stop(self, signum: int) -> None:
        try:
            reply = await self._call("signal", signum=int(signum))
        except AgentRequestError:
            reply = {}
        if reply is None and signum == signal.SIGKILL:
            # Unreachable host: the kernel counts as gone; it is stopped when the host is back.
            link = self._link()
            if link is not None:
                link.abort_later(str(self.kernel_id))
            if self.watch is not None:
                self.watch.mark_exited(None)

    async def do_cleanup(self, restart: bool) -> None:
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
        if not restart:
            self.fleet.release(kid)

    async def do_log(self, max_bytes: int) -> str:
        """The end (up to *max_bytes*) of the kernel's stdout/stderr log on its host."""
        try:
            reply = await self._call("log", max_bytes=max_bytes)
        except AgentRequestError as exc:
            raise NotFound(f"no log for kernel {self.kernel_id} on {self.host}: {exc}") from exc
        if reply is None:
            raise HostsUnavailable(f"host {self.host} of kernel {self.kernel_id} is unreachable")
        return str(reply.get("log", ""))

    async def do_reattach(self) -> None:
        host, pid = self.host, self.pid
        if not (host and pid):
            return
        link = self.fleet.link(self.target_for(host))
        watch: KernelWatch = link.watch(str(self.kernel_id), pid)
        self.watch = watch
        self._has_process = True
        self.fleet.assign(str(self.kernel_id), host)
        with contextlib.suppress(HostDown):
            await link.agent()  # its hello tells whether the kernel still runs


__all__ = ["SSHBackend", "SSHProvisioner", "SSHTarget"]
