"""A cgroup per kernel, for a kernel profile's memory and CPU limits (host side, stdlib only).

The agent ships this file with itself (as the module ``kernelfleet_cgroups``). For a launch
with limits it makes the kernel's cgroups before the process starts, moves the process in as
soon as it exists (before it has loaded anything: a new Python takes tens of milliseconds to
start), tells from the cgroup whether the kernel was killed for memory when it exits, and
removes the cgroups with the kernel.

Both layouts are handled:
- cgroup v1 (one hierarchy per controller, e.g. Debian 10 or a host booted with
  ``systemd.unified_cgroup_hierarchy=0``): ``memory/kernelfleet/<id>`` with
  ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes`` when swap is accounted, so
  swap is no way round the limit), ``cpu/kernelfleet/<id>`` with a CFS quota;
- cgroup v2 (one hierarchy): ``kernelfleet/<id>`` with ``memory.max``, ``memory.swap.max``
  0 and ``cpu.max``; the agent enables the memory and cpu controllers on the way down.

A memory limit is a cgroup limit, never an address-space rlimit (which breaks JVMs and numpy
that reserve far more address space than they use). Creating cgroups needs root (or a
delegated subtree): an agent that cannot is refused the launch with the reason.
"""

from __future__ import annotations

import contextlib
import os
import time

ROOT = "/sys/fs/cgroup"
GROUP = "kernelfleet"
CFS_PERIOD_US = 100000


class CgroupError(Exception):
    """The limits cannot be set on this host; the message says why and what to do."""


def layout(root: str = ROOT) -> str:
    """'v2' (unified), 'v1' (per-controller hierarchies) or '' (no cgroup filesystem)."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return "v2"
    if os.path.isdir(os.path.join(root, "memory")):
        return "v1"
    return ""


def plan(
    kernel_id: str, memory: int | None, cpus: float | None, root: str = ROOT
) -> list[tuple[str, dict[str, str]]]:
    """[(directory, {file: value})] to create for a kernel's limits (pure)."""
    kind = layout(root)
    steps: list[tuple[str, dict[str, str]]] = []
    if kind == "v2":
        values: dict[str, str] = {}
        if memory:
            values["memory.max"] = str(int(memory))
            values["memory.swap.max"] = "0"
        if cpus:
            values["cpu.max"] = f"{max(1000, int(cpus * CFS_PERIOD_US))} {CFS_PERIOD_US}"
        steps.append((os.path.join(root, GROUP, kernel_id), values))
    elif kind == "v1":
        if memory:
            steps.append(
                (
                    os.path.join(root, "memory", GROUP, kernel_id),
                    {
                        "memory.limit_in_bytes": str(int(memory)),
                        "memory.memsw.limit_in_bytes": str(int(memory)),
                    },
                )
            )
        if cpus:
            steps.append(
                (
                    os.path.join(root, "cpu", GROUP, kernel_id),
                    {
                        "cpu.cfs_period_us": str(CFS_PERIOD_US),
                        "cpu.cfs_quota_us": str(max(1000, int(cpus * CFS_PERIOD_US))),
                    },
                )
            )
    else:
        raise CgroupError(f"no cgroup filesystem at {root}")
    return steps


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _enable_controllers(root: str, directory: str, wanted: list[str]) -> None:
    """v2: turn the controllers on in every cgroup from the root down to *directory*'s parent."""
    parent = os.path.dirname(directory)
    chain = []
    while len(parent) >= len(root):
        chain.append(parent)
        if parent == root:
            break
        parent = os.path.dirname(parent)
    for cg in reversed(chain):
        with open(os.path.join(cg, "cgroup.subtree_control")) as f:
            enabled = set(f.read().split())
        missing = [c for c in wanted if c not in enabled]
        if missing:
            _write(os.path.join(cg, "cgroup.subtree_control"), " ".join("+" + c for c in missing))


def create(kernel_id: str, memory: int | None, cpus: float | None, root: str = ROOT) -> list[str]:
    """Make the kernel's cgroups with their limits; returns their directories."""
    made: list[str] = []
    try:
        steps = plan(kernel_id, memory, cpus, root)
        for directory, values in steps:
            if layout(root) == "v2":
                os.makedirs(os.path.dirname(directory), exist_ok=True)
                wanted = [c for c, on in (("memory", memory), ("cpu", cpus)) if on]
                _enable_controllers(root, directory, wanted)
            os.makedirs(directory, exist_ok=True)
            made.append(directory)
            for name, value in values.items():
                path = os.path.join(directory, name)
                if name.startswith("memory.memsw") and not os.path.exists(path):
                    continue  # swap is not accounted on this host (or there is no swap)
                if name == "memory.swap.max" and not os.path.exists(path):
                    continue
                _write(path, value)
    except OSError as exc:
        remove(made)
        raise CgroupError(
            f"cannot make a cgroup for the kernel's limits ({exc.strerror}: "
            f"{exc.filename}); the agent must run as root, or be given a delegated cgroup"
        ) from None
    return made


def join(directories: list[str], pid: int) -> None:
    """Move process *pid* into the kernel's cgroups."""
    for directory in directories:
        _write(os.path.join(directory, "cgroup.procs"), str(pid))


def oom_killed(directories: list[str]) -> bool:
    """Whether the kernel's memory cgroup killed a process for lack of memory."""
    for directory in directories:
        for name in ("memory.events", "memory.oom_control"):
            with contextlib.suppress(OSError), open(os.path.join(directory, name)) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                        return True
    return False


def remove(directories: list[str], wait: float = 2.0) -> None:
    """Remove the kernel's cgroups (once their processes are gone: retried for *wait* s)."""
    deadline = time.monotonic() + wait
    for directory in directories:
        while True:
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
