"""The remote-provisioner base: jupyter_client's provisioner surface once, over a few hooks.

A backend for kernels that run elsewhere (an SSH host, a YARN container, a pod, a container)
subclasses :class:`RemoteProvisioner` and implements the ``do_*`` hooks; this class does the
rest the same way for all of them:

- **launch** — :meth:`RemoteProvisioner.do_launch` is an async iterator of JSON
  **checkpoints**. The first names what was (or is about to be) created — a host, an
  application id, a pod name, a container id — and the last carries ``connection_info``. Each
  checkpoint is merged into :attr:`RemoteProvisioner.checkpoint` and handed to the gateway,
  which persists it *before* the iterator resumes: a gateway that dies mid-launch finds the
  resource by its id on restart and stops it (:meth:`RemoteProvisioner.stop_launch`).
- **the clock** — under the gateway, the gateway enforces the launch deadline; hooks read
  :meth:`time_left` when they need a number. In library mode this base enforces the
  kernelspec's ``launch_timeout`` itself. No hook keeps a clock of its own.
- **failure and cancellation** — whatever the checkpoints name is stopped through
  :meth:`RemoteProvisioner.do_abort` (shielded from cancellation), and the exception is mapped
  to the gateway's JSON errors by :meth:`RemoteProvisioner.launch_error`.
- **poll / wait** read a :class:`Watch` fed by the backend (pushed exit events, or the
  backend's batched check); **signal, terminate, kill, cleanup, logs** go to their hooks;
  **restart in place** is jupyter_client's (shutdown with ``restart=True``, then a launch on
  the same provisioner, which still holds the previous checkpoint in :attr:`previous`);
  **get/load_provisioner_info** persist the checkpoint, flat, so a restarted gateway reattaches
  through :meth:`RemoteProvisioner.do_reattach`.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any, Protocol

from jupyter_client.connect import KernelConnectionInfo

from kernelfleet.errors import LaunchTimeout, NotFound
from kernelfleet.provisioners.base import KernelfleetProvisioner
from kernelfleet.transport.protocol import build_argv, kernel_env

log = logging.getLogger(__name__)


class Watch(Protocol):
    """Liveness of one kernel, fed by its backend (no I/O to read it)."""

    exit_code: int | None
    exited: asyncio.Event

    @property
    def alive(self) -> bool: ...

    def mark_exited(self, code: int | None) -> None: ...


class RemoteProvisioner(KernelfleetProvisioner):
    """Base of provisioners whose kernels run elsewhere; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: Everything the current (or last) launch's checkpoints said, merged; JSON only.
        self.checkpoint: dict[str, Any] = {}
        #: The checkpoint of the run before a restart (where it ran, how it listened).
        self.previous: dict[str, Any] = {}
        self.watch: Watch | None = None
        self._has_process = False

    # -- hooks ------------------------------------------------------------------------------
    def check_settings(self) -> None:
        """Validate settings before anything is placed or created (raise a PublicError)."""

    def build_cmd(self, argv: list[str], extra: list[str]) -> list[str]:
        """The kernel's command; ``{kernel_id}`` filled in, ``{connection_file}`` left for
        whoever writes the connection file where the kernel runs."""
        return build_argv(argv, str(self.kernel_id), extra)

    @abc.abstractmethod
    def do_launch(
        self, cmd: list[str], env: dict[str, str], cwd: str | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Start the kernel; yield JSON checkpoints (see the module docstring).

        Called from ``launch_kernel`` (first start and each restart). Must set :attr:`watch`
        before yielding the last checkpoint, whose ``connection_info`` is the gateway-side
        connection info (``key`` as str). If an error occurs at any time, :meth:`do_abort` is
        called with everything yielded so far in :attr:`checkpoint`.
        """

    @abc.abstractmethod
    async def do_signal(self, signum: int) -> None:
        """Send *signum* to the running kernel (interrupts in signal mode). Errors are logged
        by the caller, never raised to the user."""

    @abc.abstractmethod
    async def do_stop(self, signum: int) -> None:
        """Stop the running kernel with SIGTERM or SIGKILL. When the kernel's place cannot be
        reached on SIGKILL, arrange the stop for later and mark :attr:`watch` exited."""

    @abc.abstractmethod
    async def do_abort(self) -> None:
        """Stop whatever :attr:`checkpoint` names, however far the launch got (a failed or
        cancelled launch, or one found unfinished after a gateway restart). Must not raise."""

    @abc.abstractmethod
    async def do_cleanup(self, restart: bool) -> None:
        """Release what the kernel left (runtime files; its log unless *restart*)."""

    async def do_log(self, max_bytes: int) -> str | None:
        """The end of the kernel's log, or None when none is kept."""
        return None

    async def do_reattach(self) -> None:
        """After :meth:`load_provisioner_info` in a new gateway process: set :attr:`watch`
        (and ``has_process``) from :attr:`checkpoint` if the kernel may still run."""

    def launch_error(self, exc: BaseException) -> BaseException:
        """The error a failed launch raises (a PublicError for the user); *exc* is returned
        unchanged when it needs no translation."""
        if isinstance(exc, TimeoutError):
            return LaunchTimeout(
                f"Kernel '{self.kernelspec_name}' was not ready within its launch timeout: "
                "raise the kernelspec's launch_timeout if it is just slow."
            )
        return exc

    # -- helpers for hooks ------------------------------------------------------------------
    def launcher_command(self, cmd: list[str], python: str, launcher: str) -> list[str]:
        """The command of a container or pod that runs kernelfleet's launcher (*launcher*,
        run by *python*, inside the image) for the kernel command *cmd*: the argv travels as
        base64 JSON, never through a shell; the launcher gets what is left of the clock."""
        argv = base64.b64encode(json.dumps(cmd).encode()).decode("ascii")
        out = [python, launcher, "--kernel-name", self.kernelspec_name]
        out += ["--ready-timeout", f"{max(5.0, self.time_left()):.0f}"]
        return [*out, "--argv-b64", argv]

    async def log_tail(self, max_bytes: int = 8192, lines: int = 8) -> str:
        """' — log: …' with the last non-blank *lines* of the kernel's log, for a launch
        error ('' when there is no log or it cannot be read)."""
        text = ""
        with contextlib.suppress(Exception):
            text = await self.do_log(max_bytes) or ""
        kept = [ln for ln in text.splitlines() if ln.strip()][-lines:]
        return f" — log: {' | '.join(kept)[-900:]}" if kept else ""

    def interrupt_by_message(self) -> bool:
        """Send an ``interrupt_request`` on the kernel's control channel (which ipykernel
        answers by signalling itself): how a SIGINT reaches a kernel no signal can reach
        (a YARN container, a pod). False when the parent is no jupyter_client KernelManager."""
        km: Any = self.parent
        if not hasattr(km, "_connect_control_socket"):
            return False
        km._connect_control_socket()  # jupyter_client 8: the socket its interrupts use
        km.session.send(km._control_socket, km.session.msg("interrupt_request", content={}))
        return True

    @property
    def kernelspec_name(self) -> str:
        spec = self.kernel_spec
        name = getattr(spec, "name", "") if spec is not None else ""
        if not name and spec is not None and spec.resource_dir:
            name = str(spec.resource_dir).rstrip("/").rsplit("/", 1)[-1]
        return str(name or "?")

    # -- jupyter_client provisioner API -----------------------------------------------------
    @property
    def has_process(self) -> bool:
        return self._has_process

    async def poll(self) -> int | None:
        watch = self.watch
        if watch is None:
            return None if self._has_process else 0
        return watch.exit_code

    async def wait(self) -> int | None:
        watch = self.watch
        if watch is None:
            self._has_process = False
            return 0
        await watch.exited.wait()
        self._has_process = False
        return watch.exit_code

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        kwargs.pop("transport_encryption", None)  # remote kernels follow our own setting
        extra = kwargs.pop("extra_arguments", None) or []
        self.check_settings()
        self.start_own_clock()
        spec = self.kernel_spec
        cmd = self.build_cmd(list(spec.argv), list(extra))
        kwargs = await super().pre_launch(cmd=cmd, **kwargs)
        env: dict[str, str] = kwargs["env"]
        # Under the gateway, the environment it built (only invalid names dropped); in library
        # mode, where jupyter_client hands over the whole process environment, only KERNEL_*,
        # JPY_*, the kernelspec's env and inherited_envs.
        keep = env.keys() if self.under_gateway else [*spec.env.keys(), *self.inherited_envs]
        kwargs["env"] = kernel_env(env, keep, ())
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        env: dict[str, str] = dict(kwargs.get("env") or {})
        cwd = kwargs.get("cwd") if isinstance(kwargs.get("cwd"), str) else None
        if self.checkpoint:
            self.previous = self.checkpoint
        self.checkpoint = {}
        steps = self.do_launch(cmd, env, cwd)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if not self.under_gateway:
                    await stack.enter_async_context(asyncio.timeout_at(self.launch_deadline()))
                async for step in steps:
                    self.checkpoint.update(step)
                    await self.checkpoint_reached()
        except BaseException as exc:
            error = self.launch_error(exc)  # while the checkpoint still says where
            with contextlib.suppress(Exception):
                await steps.aclose()
            if self.checkpoint:
                await asyncio.shield(self._abort_quietly())
            self.checkpoint = dict(self.previous)  # a failed restart: still where it was
            if error is exc:
                raise
            raise error from exc
        conn = self.checkpoint.get("connection_info")
        if not isinstance(conn, dict):
            await asyncio.shield(self._abort_quietly())
            self.checkpoint = dict(self.previous)
            raise RuntimeError(f"{type(self).__name__}.do_launch yielded no connection_info")
        self._has_process = True
        self.phase = "answered"
        info = _connection_info(conn)
        self.connection_info = info
        return info

    async def _abort_quietly(self) -> None:
        try:
            await self.do_abort()
        except Exception:
            log.exception("kernel %s: could not stop an unfinished launch", self.kernel_id)
        self.watch = None
        self._has_process = False

    async def send_signal(self, signum: int) -> None:
        if signum == 0 or self.watch is None or not self.watch.alive:
            return
        try:
            await self.do_signal(int(signum))
        except Exception as exc:
            log.warning("kernel %s: signal %s failed: %s", self.kernel_id, signum, exc)

    async def kill(self, restart: bool = False) -> None:
        if self.watch is not None and self.watch.alive:
            await self.do_stop(9)

    async def terminate(self, restart: bool = False) -> None:
        if self.watch is not None and self.watch.alive:
            await self.do_stop(15)

    async def cleanup(self, restart: bool = False) -> None:
        await self.do_cleanup(restart)
        self.watch = None
        self._has_process = False
        if not restart:
            self.previous = {}
            self.checkpoint = {}

    async def stop_launch(self) -> None:
        await self._abort_quietly()

    def resolve_path(self, path: str) -> str | None:
        return None  # paths on the gateway say nothing about the kernel's machine

    async def get_kernel_log(self, max_bytes: int = 65536) -> str | None:
        if not self.checkpoint:
            raise NotFound(f"kernel {self.kernel_id} has not been started")
        return await self.do_log(int(max_bytes))

    async def get_provisioner_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await super().get_provisioner_info()
        info.update(self.checkpoint)
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await super().load_provisioner_info(provisioner_info)
        self.checkpoint = {k: v for k, v in provisioner_info.items() if k != "kernel_id"}
        conn = provisioner_info.get("connection_info")
        if isinstance(conn, dict) and conn:
            self.connection_info = _connection_info(conn)
        await self.do_reattach()


def _connection_info(conn: dict[str, Any]) -> KernelConnectionInfo:
    """Connection info as jupyter_client's KernelManager wants it (``key`` as bytes)."""
    info = dict(conn)
    if isinstance(info.get("key"), str):
        info["key"] = info["key"].encode()
    return info  # type: ignore[return-value]


def jsonable_connection_info(info: dict[str, Any]) -> dict[str, Any]:
    """Connection info for a checkpoint (``key`` as str)."""
    out = dict(info)
    if isinstance(out.get("key"), bytes):
        out["key"] = out["key"].decode()
    return out
