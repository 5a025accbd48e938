"""The typed kernel record: everything the gateway knows about one kernel, owned by the registry.

Handlers read records and render them with :func:`kernel_model`; only the registry changes them.
Nothing is hung on jupyter_client objects (cf. jupyter_server's monkey-patched
``last_activity``): the kernel manager is one field of the record, not the other way round.

The record sits above the parts it holds, the kernel manager and the gateway's ZMQ channels
(:mod:`~kernelfleet.kernels.channels`, named only for type checking), and none of them
imports it back: the clock and the timestamp format they share are
:mod:`~kernelfleet.kernels.timestamps`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
from typing import TYPE_CHECKING, Any

from kernelfleet.kernels.profiles import SEPARATOR
from kernelfleet.kernels.timestamps import format_timestamp, utcnow
from kernelfleet.provisioners.base import KernelfleetProvisioner

if TYPE_CHECKING:
    from jupyter_client.manager import AsyncKernelManager

    from kernelfleet.kernels.channels import KernelChannels


class Lifecycle(enum.Enum):
    """Where the kernel is in its life, independent of what it is executing."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    DEAD = "dead"


#: ``execution_state`` values JupyterLab accepts in a kernel model and status messages.
EXECUTION_STATES = frozenset({"starting", "idle", "busy", "restarting", "dead"})


@dataclasses.dataclass(eq=False)
class KernelRecord:
    """One kernel, from the moment its start is accepted until it is gone."""

    id: str
    name: str
    owner: str
    env: dict[str, str]
    launch_timeout: float
    created: dt.datetime = dataclasses.field(default_factory=utcnow)
    last_activity: dt.datetime = dataclasses.field(default_factory=utcnow)
    execution_state: str = "starting"
    lifecycle: Lifecycle = Lifecycle.STARTING
    connections: int = 0
    reason: str | None = None
    manager: AsyncKernelManager | None = None
    channels: KernelChannels | None = None
    restart_count: int = 0
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock, repr=False)
    log_path: str | None = None
    spec: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    resource_dir: str = ""
    pooled: bool = False
    log_file: Any = dataclasses.field(default=None, repr=False)
    #: With replicas on a shared store: the replica that owns the kernel ("" = this one).
    replica: str = ""

    def touch(self, state: str | None = None) -> None:
        """Record activity now; *state* updates ``execution_state`` if it is a known value."""
        self.last_activity = utcnow()
        if state is not None and state in EXECUTION_STATES:
            self.execution_state = state

    @property
    def host(self) -> str | None:
        """The host the kernel runs on, when its provisioner tells (remote provisioners do)."""
        prov = self.manager.provisioner if self.manager is not None else None
        return prov.host if isinstance(prov, KernelfleetProvisioner) else None

    @property
    def profile(self) -> str:
        """The kernel's profile: the gateway sets KERNEL_PROFILE when profiles are on."""
        return self.env.get("KERNEL_PROFILE", "")

    @property
    def alive(self) -> bool:
        return self.lifecycle in {Lifecycle.RUNNING, Lifecycle.RESTARTING}


def kernel_model(record: KernelRecord) -> dict[str, Any]:
    """The kernel model of the Kernel Gateway API (see contract.md)."""
    model: dict[str, Any] = {
        "id": record.id,
        # a kernel with a profile is the kernelspec x profile pair clients see and pick
        "name": f"{record.name}{SEPARATOR}{record.profile}" if record.profile else record.name,
        "last_activity": format_timestamp(record.last_activity),
        "execution_state": record.execution_state,
        "connections": record.connections,
    }
    if record.reason:
        model["reason"] = record.reason
    prov = record.manager.provisioner if record.manager is not None else None
    if isinstance(prov, KernelfleetProvisioner):
        model.update(prov.model_extras())
    return model
