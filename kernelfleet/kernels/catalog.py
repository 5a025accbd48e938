"""The kernelspecs this gateway offers, found on the Jupyter path (``JUPYTER_PATH`` honoured).

Specs are re-read from disk (in a thread) at most every ``refresh_seconds``, so a kernelspec
installed while the gateway runs appears without a restart, while JupyterLab's frequent polling
costs no disk I/O.

The catalog is the gateway's side of kernelspecs: what it offers, read with each spec's
:class:`~kernelfleet.kernels.policy.SpecPolicy`. Writing kernelspecs (``kernelfleet spec …``) is
:mod:`kernelfleet.specs`, a sibling of the gateway that neither imports the other; both meet
only on disk, through the Jupyter path.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from traitlets import Float, Instance, Unicode
from traitlets import List as TList
from traitlets.config import LoggingConfigurable

from kernelfleet.config import option
from kernelfleet.errors import Forbidden, NotFound
from kernelfleet.foreign import foreign_of
from kernelfleet.kernels.policy import SpecPolicy

RESOURCE_FILES = ("kernel.js", "kernel.css")


@dataclass(frozen=True)
class SpecEntry:
    name: str
    resource_dir: str
    spec: dict[str, Any]
    resources: tuple[str, ...]

    @property
    def policy(self) -> SpecPolicy:
        return SpecPolicy.from_metadata(self.spec.get("metadata"))

    def model(self, base_url: str) -> dict[str, Any]:
        """The kernelspec model of the API; resource URLs contain ``/kernelspecs/``."""
        prefix = f"{base_url.rstrip('/')}/kernelspecs/{quote(self.name)}/"
        resources = {}
        for fname in self.resources:
            stem = fname.rsplit(".", 1)[0] if fname.startswith("logo-") else fname
            resources[stem] = prefix + quote(fname)
        spec = dict(self.spec)
        spec.setdefault("env", {})
        spec.setdefault("metadata", {})
        spec.setdefault("interrupt_mode", "signal")
        spec.setdefault("language", "")
        spec.setdefault("display_name", self.name)
        spec.setdefault("argv", [])
        return {"name": self.name, "spec": spec, "resources": resources}


def _foreign_spec(resource_dir: str) -> dict[str, Any] | None:
    """The kernel.json of a Gateway Provisioners spec that jupyter_client leaves out of its
    list (GP's provisioner is not installed), so that starting it gets the migrate message
    instead of "no such kernelspec"; None for anything else."""
    try:
        with open(os.path.join(resource_dir, "kernel.json"), "rb") as fh:
            spec = json.loads(fh.read(1 << 20))
    except (OSError, ValueError):
        return None
    return spec if isinstance(spec, dict) and foreign_of(spec) is not None else None


def _scan_resources(resource_dir: str) -> tuple[str, ...]:
    try:
        names = sorted(os.listdir(resource_dir))
    except OSError:
        return ()
    return tuple(n for n in names if n.startswith("logo-") or n in RESOURCE_FILES)


def _contained_file(directory: str, path: str) -> str | None:
    if "\x00" in path:
        return None  # no file name holds a NUL (os.path would raise)
    root = os.path.realpath(directory)
    full = os.path.realpath(os.path.join(root, path))
    if full.startswith(root + os.sep) and os.path.isfile(full):
        return full
    return None


class KernelSpecCatalog(LoggingConfigurable):
    """Finds kernelspecs and renders their API models."""

    default_kernel_name = option(
        Unicode(
            "",
            help="""Kernelspec used when a start request names none, and announced as 'default'
            to clients. Empty: 'python3' if installed, else the first spec by name.""",
        ),
        "KF_DEFAULT_KERNEL_NAME",
        "EG_DEFAULT_KERNEL_NAME",
    )
    allowed_kernelspecs = option(
        TList(
            Unicode(),
            help="""Names of the kernelspecs this gateway offers (comma list in the environment).
            Empty (the default): every kernelspec found on the Jupyter path.""",
        ),
        "KF_ALLOWED_KERNELSPECS",
    )
    refresh_seconds = option(
        Float(
            2.0,
            help="""How long, in seconds, the list of kernelspecs read from disk is reused before
            the Jupyter path is scanned again. Default: 2.0.""",
        ),
        "KF_KERNELSPEC_REFRESH_SECONDS",
    )
    kernel_spec_manager = Instance(KernelSpecManager, allow_none=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.kernel_spec_manager is None:
            self.kernel_spec_manager = KernelSpecManager(parent=self)
        self._cache: dict[str, SpecEntry] = {}
        self._cached_at = -1e9
        self._lock = asyncio.Lock()

    def _read_all(self) -> dict[str, SpecEntry]:
        ksm = self.kernel_spec_manager
        assert ksm is not None
        out: dict[str, SpecEntry] = {}
        found_all = ksm.get_all_specs()
        for name, resource_dir in ksm.find_kernel_specs().items():
            if name not in found_all:  # hidden by jupyter_client: its provisioner is missing
                spec = _foreign_spec(resource_dir)
                if spec is not None:
                    found_all[name] = {"resource_dir": resource_dir, "spec": spec}
        for name, found in sorted(found_all.items()):
            if self.allowed_kernelspecs and name not in self.allowed_kernelspecs:
                continue
            resource_dir = found["resource_dir"]
            out[name] = SpecEntry(name, resource_dir, found["spec"], _scan_resources(resource_dir))
        return out

    async def all(self) -> dict[str, SpecEntry]:
        if time.monotonic() - self._cached_at < self.refresh_seconds:
            return self._cache
        async with self._lock:
            if time.monotonic() - self._cached_at >= self.refresh_seconds:
                self._cache = await asyncio.to_thread(self._read_all)
                self._cached_at = time.monotonic()
        return self._cache

    def invalidate(self) -> None:
        self._cached_at = -1e9

    async def default_name(self) -> str:
        specs = await self.all()
        if self.default_kernel_name:
            return self.default_kernel_name
        if "python3" in specs:
            return "python3"
        return min(specs) if specs else ""

    async def get(self, name: str) -> SpecEntry:
        specs = await self.all()
        entry = specs.get(name)
        if entry is None:
            if self.allowed_kernelspecs and name not in self.allowed_kernelspecs:
                raise Forbidden(
                    f"Kernelspec '{name}' is not offered by this gateway.",
                    reason="Kernelspec Not Allowed",
                )
            raise NotFound(
                f"No such kernelspec: '{name}'. GET /api/kernelspecs lists the available ones.",
                reason="No Such Kernelspec",
            )
        return entry

    async def resource_file(self, name: str, path: str) -> str:
        """Absolute path of resource *path* of kernelspec *name*; refuses traversal."""
        entry = await self.get(name)
        full = await asyncio.to_thread(_contained_file, entry.resource_dir, path)
        if full is None:
            raise NotFound(f"Kernelspec '{name}' has no resource {path[:200]!r}.")
        return full

    def kernel_spec_manager_for_launch(self) -> KernelSpecManager:
        ksm = self.kernel_spec_manager
        assert ksm is not None
        return ksm


__all__ = ["KernelSpecCatalog", "NoSuchKernel", "SpecEntry"]
