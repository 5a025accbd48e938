"""The contract between the gateway and a provisioner, and the backends behind provisioners.

Everything the gateway reads from a provisioner is declared here, typed, on
:class:`KernelfleetProvisioner` (a jupyter_client ``KernelProvisionerBase``), instead of being
looked up by ``getattr`` or by provisioner name:

- where the kernel runs (:attr:`~KernelfleetProvisioner.host`) and its log
  (:meth:`~KernelfleetProvisioner.get_kernel_log`);
- whether its kernels outlive the gateway (:attr:`~KernelfleetProvisioner.kernels_outlive_gateway`:
  the ``auto`` stop mode leaves them running for the next gateway) and whether the gateway
  itself keeps their log and working directory (:attr:`~KernelfleetProvisioner.gateway_keeps_log`);
- the kernelspec config keys the gateway reads itself (user lists, pool size, launch timeout),
  declared once here so no provisioner calls them "unrecognized";
- the launch terms the gateway hands down (:meth:`~KernelfleetProvisioner.set_launch_terms`):
  one launch clock (the deadline the gateway enforces; a backend only reads how much time is
  left), the environment already built by the gateway, and where launch checkpoints go;
- the provisioner's :class:`Backend`: one long-lived object per provisioner kind and settings
  per event loop — warm-up, close, stopping an orphan by kernel id, and a *batched* status
  check of many kernels in one call.

Provisioners that are not ours (third-party ``jupyter_client.kernel_provisioners`` entry
points) still run: the module-level helpers below answer for them with jupyter_client's
defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import weakref
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Any as TAny
from traitlets import List, Unicode

from kernelfleet.config import option, with_env_defaults
from kernelfleet.transport.listener import close_listener

#: Names of the launching process's environment variables a kernel inherits by default.
DEFAULT_INHERITED_ENVS = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "TZ")
#: What a KERNEL_USERNAME must look like to become an OS or YARN user (impersonation).
USERNAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
#: Seconds a launch may take when neither the gateway, the kernelspec nor KF_LAUNCH_TIMEOUT says.
DEFAULT_LAUNCH_TIMEOUT = 60.0


@dataclass(frozen=True)
class LaunchTerms:
    """What the gateway hands a provisioner before each launch (and each restart).

    *timeout*: seconds from now until the kernel must be ready; the gateway enforces it, the
    provisioner only passes what is left to whoever needs a number (a host agent's kill
    deadline, a YARN submission's own timeout). *on_checkpoint*: awaited after each launch
    checkpoint, before the launch goes on, so the gateway persists it first.
    """

    timeout: float
    on_checkpoint: Callable[[], Awaitable[None]] | None = None
    #: The kernel profile's limits, for a backend that enforces them itself (SSH: a cgroup
    #: per kernel); container backends get them as KERNEL_MEMORY / KERNEL_CPUS too.
    limits: ResourceLimits | None = None


@dataclass(frozen=True)
class ResourceLimits:
    """What a kernel profile allows one kernel: bytes of memory, CPUs (None: no limit)."""

    profile: str
    memory: int | None = None
    cpus: float | None = None

    def as_request(self) -> dict[str, Any]:
        return {"profile": self.profile, "memory": self.memory, "cpus": self.cpus}


class Backend:
    """One long-lived object per provisioner kind and settings, per event loop.

    Built by :func:`get_backend` (never directly by the gateway) from a provisioner's
    :meth:`KernelfleetProvisioner.backend_key`. Every method must be safe to call concurrently
    and idempotent; none may raise for an unreachable resource manager (log, and report what
    is known).
    """

    async def warm_up(self) -> None:
        """Get ready before the first kernel (open connections); return quickly, continuing
        in the background. Called by the gateway at start for every kernelspec."""

    async def close(self) -> None:
        """Release connections and background tasks; kernels keep running. Called once at
        gateway stop (and by tests)."""

    async def stop_orphan(self, kernel_id: str) -> int:
        """Stop whatever runs for *kernel_id* although no checkpoint names it (a gateway that
        died before the launch's first checkpoint). Returns how many processes or resources
        were stopped; an unreachable place gets the stop when it is back."""
        return 0

    async def check(self, provisioners: Sequence[KernelfleetProvisioner]) -> dict[str, int | None]:
        """Status of many kernels in one call: kernel id → ``None`` while it runs, else its
        exit code. Called by the gateway's monitor every tick with all running kernels of this
        backend. The default asks each provisioner's :meth:`poll` (right for backends whose
        kernels' exits are pushed as events); a backend that must ask a resource manager
        overrides it with one query for all of them."""
        out: dict[str, int | None] = {}
        for prov in provisioners:
            out[str(prov.kernel_id)] = await prov.poll()
        return out


B = TypeVar("B", bound=Backend)
_BACKENDS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, Backend]] = (
    weakref.WeakKeyDictionary()
)


def get_backend(key: Hashable, factory: Callable[[], B]) -> B:
    """The running loop's backend for *key* (made by *factory* on first use)."""
    backends = _BACKENDS.setdefault(asyncio.get_running_loop(), {})
    backend = backends.get(key)
    if backend is None:
        backend = backends[key] = factory()
    return backend  # type: ignore[return-value]


def backends() -> list[Backend]:
    """Every backend of the running loop."""
    return list(_BACKENDS.get(asyncio.get_running_loop(), {}).values())


async def close_backends() -> None:
    """Close and forget every backend of the running loop and its response listener (gateway
    stop; test seam)."""
    found = _BACKENDS.pop(asyncio.get_running_loop(), {})
    for backend in found.values():
        with contextlib.suppress(Exception):
            await backend.close()
    await close_listener()  # the response listener of this loop's launches


class NullBackend(Backend):
    """A backend with nothing to share (each kernel is on its own)."""


class KernelfleetProvisioner(KernelProvisionerBase):  # type: ignore[misc]
    """What every kernelfleet provisioner declares; see the module docstring."""

    #: The ``auto`` stop mode leaves these kernels running for the next gateway.
    kernels_outlive_gateway: ClassVar[bool] = True
    #: The gateway gives these kernels a working directory and a log file of its own (kernels
    #: that run as processes on the gateway's machine).
    gateway_keeps_log: ClassVar[bool] = False

    # Kernelspec config keys the gateway reads itself (kernelfleet.kernels.policy and .pool):
    # declared once here, so that a kernelspec carrying them is valid for every provisioner.
    authorized_users = TAny(None, allow_none=True, help="Read by the gateway (SpecPolicy).")
    unauthorized_users = TAny(None, allow_none=True, help="Read by the gateway (SpecPolicy).")
    authorized_groups = TAny(None, allow_none=True, help="Read by the gateway (SpecPolicy).")
    pool_size = TAny(None, allow_none=True, help="Read by the gateway (warm pool).")
    launch_timeout = option(
        TAny(
            None,
            allow_none=True,
            help="Seconds a kernel of this kernelspec may take until it answers kernel_info. "
            "Under the gateway, the gateway reads it (a request's KERNEL_LAUNCH_TIMEOUT wins "
            "up to max_launch_timeout); in library mode the provisioner applies it itself. "
            "Default: the gateway's launch_timeout, else 60.",
        ),
        "KF_LAUNCH_TIMEOUT",
        "GP_LAUNCH_TIMEOUT",
    )
    inherited_envs = option(
        List(
            Unicode(),
            default_value=list(DEFAULT_INHERITED_ENVS),
            help="Library mode only (under the gateway its own inherited_envs applied): names "
            "of the launching process's environment variables a kernel gets besides KERNEL_*, "
            "JPY_* and the kernelspec's env. Default: PATH,LANG,LANGUAGE,LC_ALL,TZ.",
        ),
        "KF_INHERITED_ENVS",
        "EG_INHERITED_ENVS",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**with_env_defaults(type(self), kwargs))
        self.terms: LaunchTerms | None = None
        self._deadline: float | None = None
        #: What the current launch is doing, in words ("" when it tells nothing): the
        #: gateway names it when the launch runs out of time. "answered" once the kernel sent
        #: its connection info.
        self.phase = ""

    # -- launch terms -----------------------------------------------------------------------
    def set_launch_terms(self, terms: LaunchTerms) -> None:
        """Called by the gateway before each launch and restart (see :class:`LaunchTerms`)."""
        self.terms = terms
        self._deadline = asyncio.get_running_loop().time() + terms.timeout

    @property
    def under_gateway(self) -> bool:
        return self.terms is not None

    def start_own_clock(self) -> float:
        """Library mode: start the launch clock from the kernelspec's ``launch_timeout`` (else
        60 s) unless the gateway gave one; returns the deadline (loop time)."""
        if self.terms is None:
            timeout = _positive(self.launch_timeout) or DEFAULT_LAUNCH_TIMEOUT
            self._deadline = asyncio.get_running_loop().time() + timeout
        assert self._deadline is not None
        return self._deadline

    def launch_deadline(self) -> float:
        """The current launch's deadline (loop time): the gateway's, else the one
        :meth:`start_own_clock` started for this launch (started now if none was)."""
        return self._deadline if self._deadline is not None else self.start_own_clock()

    def time_left(self) -> float:
        """Seconds until the launch deadline (never negative)."""
        return max(0.0, self.launch_deadline() - asyncio.get_running_loop().time())

    async def checkpoint_reached(self) -> None:
        """Let the gateway persist the provisioner's state before the launch goes on."""
        if self.terms is not None and self.terms.on_checkpoint is not None:
            await self.terms.on_checkpoint()

    # -- what the gateway reads -------------------------------------------------------------
    @property
    def host(self) -> str | None:
        """The machine the kernel runs on, when known (shown in logs and errors)."""
        return None

    def exit_reason(self) -> str | None:
        """Why the kernel ended, in words, when its backend knows more than an exit code
        (an out-of-memory kill); None otherwise. Read once the kernel is found dead."""
        return None

    async def get_kernel_log(self, max_bytes: int = 65536) -> str | None:
        """The end (up to *max_bytes*) of the kernel's stdout/stderr, or None when this
        provisioner keeps no log (the gateway's own log file is used, if any)."""
        return None

    def model_extras(self) -> dict[str, Any]:
        """Entries this backend adds to the kernel's model (``GET /api/kernels/{id}``), e.g.
        ``{"yarn": {"application_id": ..., "tracking_url": ...}}``; JSON only."""
        return {}

    # -- backend ----------------------------------------------------------------------------
    def backend_key(self) -> Hashable:
        """What identifies this provisioner's backend: its kind and the settings that make
        two backends differ. Default: one backend per class."""
        return (type(self),)

    def make_backend(self) -> Backend:
        """Build the backend for :meth:`backend_key` (called once per key and event loop)."""
        return NullBackend()

    @property
    def backend(self) -> Backend:
        return get_backend(self.backend_key(), self.make_backend)

    @classmethod
    def for_spec(
        cls, kernel_id: str, kernel_spec: dict[str, Any], parent: Any = None
    ) -> KernelfleetProvisioner:
        """A provisioner of *kernel_spec*'s settings, not launched (warm-up, orphan stops)."""
        config = provisioner_config(kernel_spec)
        traits = cls.class_traits(config=True)
        settings = {k: v for k, v in config.items() if k in traits}
        return cls(kernel_id=kernel_id, parent=parent, **settings)

    @classmethod
    async def warm_up(cls, kernel_spec: dict[str, Any], parent: Any = None) -> Backend:
        """Warm up the backend of *kernel_spec* (gateway start); returns it."""
        backend = cls.for_spec("warm-up", kernel_spec, parent).backend
        await backend.warm_up()
        return backend

    @classmethod
    async def stop_orphans(
        cls, kernel_id: str, kernel_spec: dict[str, Any], parent: Any = None
    ) -> int:
        """Stop what a launch of *kernel_id* left without a checkpoint (see
        :meth:`Backend.stop_orphan`)."""
        return await cls.for_spec(kernel_id, kernel_spec, parent).backend.stop_orphan(kernel_id)

    async def stop_launch(self) -> None:
        """Stop whatever the loaded checkpoint of an unfinished launch names (a gateway that
        died mid-launch). Default: the kernel's kill and cleanup."""
        await self.kill()
        await self.cleanup(restart=False)


def _positive(value: Any) -> float | None:
    try:
        num = float(value)
    except (TypeError, ValueError):
        return None
    return num if num > 0 and num != float("inf") else None


# -- kernelspecs → provisioner classes --------------------------------------------------------

#: What a kernelspec without a ``kernel_provisioner`` stanza (or naming jupyter_client's local
#: provisioner) runs with: our local provisioner, able to reattach.
LOCAL_NAMES = frozenset({"", "local-provisioner", "kernelfleet-local"})


def provisioner_name(spec: Mapping[str, Any]) -> str:
    meta = spec.get("metadata") or {}
    stanza = meta.get("kernel_provisioner") if isinstance(meta, Mapping) else None
    if isinstance(stanza, Mapping) and isinstance(stanza.get("provisioner_name"), str):
        return str(stanza["provisioner_name"])
    return ""


def provisioner_config(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The ``metadata.kernel_provisioner.config`` of kernel.json dict *spec* (a copy)."""
    meta = spec.get("metadata") or {}
    stanza = meta.get("kernel_provisioner") if isinstance(meta, Mapping) else None
    if isinstance(stanza, Mapping) and isinstance(stanza.get("config"), Mapping):
        return dict(stanza["config"])
    return {}


def kernels_outlive_gateway(prov: type[KernelProvisionerBase] | None) -> bool:
    """Whether the ``auto`` stop mode leaves kernels of *prov* running (third-party
    provisioners: yes, they reattach through ``load_provisioner_info``)."""
    if prov is not None and issubclass(prov, KernelfleetProvisioner):
        return prov.kernels_outlive_gateway
    return True


def gateway_keeps_log(prov: type[KernelProvisionerBase] | None) -> bool:
    return prov is not None and issubclass(prov, KernelfleetProvisioner) and prov.gateway_keeps_log
