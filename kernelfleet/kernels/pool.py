"""Warm kernel pools: kernels started ahead of demand, handed over on ``POST /api/kernels``.

Per kernelspec, ``pool_size`` kernels are kept started and idle, owned by nobody (admins see
them; nobody else does). A start request for that kernelspec takes one — the pick and its
removal from the pool happen with no ``await`` in between, so one pooled kernel never reaches two
users — and the pool refills in the background. A kernel that was handed over never returns to
the pool. Remote kernelspecs spread their pool over hosts through the provisioner's placement.

What an already-running kernel cannot take from a request, and how it is handled:
- the request's ``KERNEL_*`` values (and ``KERNEL_ID``/``KERNEL_USERNAME``) are applied to a
  Python kernel's ``os.environ`` (and ``KERNEL_WORKING_DIR`` with ``os.chdir`` when it exists)
  by a silent execute before the hand-over. Non-Python kernels cannot be changed this way:
  they are pooled only for requests without such values.
- a client-chosen ``KERNEL_ID``, a ``KERNEL_REMOTE_HOST`` pin naming another host, or
  impersonation (the kernel must run as the requesting OS user) cannot apply: such requests
  start a fresh kernel.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from typing import Any

from traitlets import Dict, Float, Int, Unicode
from traitlets.config import LoggingConfigurable

from kernelfleet.config import option
from kernelfleet.errors import PublicError
from kernelfleet.kernels import policy as pol
from kernelfleet.kernels.catalog import SpecEntry
from kernelfleet.kernels.lifecycle import KernelLifecycle
from kernelfleet.kernels.reattach import adopt
from kernelfleet.kernels.record import KernelRecord, Lifecycle
from kernelfleet.provisioners.base import provisioner_config


class TakenElsewhere(Exception):
    """Another replica handed the warm kernel over first (it keeps running, theirs now)."""


#: The owner of pooled kernels: no user has this name.
POOL_OWNER = ""
#: Request values a pool kernel never needs applied (consumed by the gateway itself).
_GATEWAY_ONLY = frozenset({"KERNEL_LAUNCH_TIMEOUT"})


def is_python(spec: Mapping[str, Any]) -> bool:
    return str(spec.get("language", "")).lower().startswith("python")


def can_take(spec: Mapping[str, Any], record: KernelRecord, req_env: Mapping[str, str]) -> bool:
    """Whether pooled *record* can serve a request with *req_env* (module docstring)."""
    if "KERNEL_ID" in req_env:
        return False
    pin = req_env.get("KERNEL_REMOTE_HOST")
    if pin and pin != record.host:
        return False
    if provisioner_config(spec).get("impersonation_enabled"):
        return False
    if not is_python(spec):
        return not any(k.startswith("KERNEL_") and k not in _GATEWAY_ONLY for k in req_env)
    return True


def env_update_code(env: Mapping[str, str]) -> str:
    """Python source that applies *env* to a running kernel. Values travel as one JSON string
    literal (``repr`` of a ``str``), never spliced into code."""
    payload = json.dumps(dict(env))
    return (
        "import json as _kf_json, os as _kf_os\n"
        f"_kf_env = _kf_json.loads({payload!r})\n"
        "_kf_os.environ.update(_kf_env)\n"
        "_kf_wd = _kf_env.get('KERNEL_WORKING_DIR')\n"
        "if _kf_wd and _kf_os.path.isdir(_kf_wd):\n"
        "    _kf_os.chdir(_kf_wd)\n"
        "del _kf_json, _kf_os, _kf_env, _kf_wd\n"
    )


class KernelPool(LoggingConfigurable):
    """Keeps warm kernels per kernelspec (see module docstring)."""

    pool_sizes = option(
        Dict(
            key_trait=Unicode(),
            value_trait=Int(),
            help="""Warm kernels to keep per kernelspec, e.g. {"python3": 2} (a JSON object in
            the environment). A kernelspec can also set pool_size in its provisioner config.
            Pool kernels count against max_kernels. Default: {} (no pools).""",
        ),
        "KF_POOL_SIZES",
    )
    handover_timeout = option(
        Float(
            5.0,
            help="""Seconds a warm kernel may take to apply a request's env before it is
            discarded and a fresh kernel started instead. Default: 5.""",
        ),
        "KF_POOL_HANDOVER_TIMEOUT",
    )
    refill_backoff_max = option(
        Float(60.0, help="Longest wait, in seconds, between failed refill attempts. Default: 60."),
        "KF_POOL_REFILL_BACKOFF_MAX",
    )

    def __init__(self, registry: KernelLifecycle, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registry = registry
        self.members: dict[str, list[KernelRecord]] = {}
        self._filling: dict[str, asyncio.Task[None]] = {}

    async def size_of(self, entry: SpecEntry) -> int:
        meta = entry.spec.get("metadata") or {}
        stanza = meta.get("kernel_provisioner") if isinstance(meta, dict) else None
        config = stanza.get("config") if isinstance(stanza, dict) else None
        if isinstance(config, dict) and isinstance(config.get("pool_size"), int):
            return int(config["pool_size"])
        return int(self.pool_sizes.get(entry.name, 0))

    async def start(self) -> None:
        """Adopt pooled kernels that survived a restart, up to each pool's size now (a pool
        no longer configured, or made smaller, has its extra kernels stopped: a warm kernel
        is never handed out by a gateway that does not offer a pool), then fill every pool."""
        entries = await self.registry.catalog.all()
        for record in list(self.registry.records.values()):
            if not record.pooled:
                continue
            entry = entries.get(record.name)
            size = await self.size_of(entry) if entry is not None else 0
            members = self.members.setdefault(record.name, [])
            if record.lifecycle is Lifecycle.RUNNING and len(members) < size:
                members.append(record)
            else:
                self.log.info(
                    "stopping warm kernel %s: its pool (%s) is full or gone", record.id, record.name
                )
                await self.registry.destroy(record)
        for name, entry in entries.items():
            if await self.size_of(entry) > 0:
                self.refill(name)

    async def resize(self) -> None:
        """Apply changed pool sizes (a config reload): stop the warm kernels beyond each
        pool's size now, newest first, and fill every pool that is short."""
        entries = await self.registry.catalog.all()
        for name, members in list(self.members.items()):
            entry = entries.get(name)
            size = await self.size_of(entry) if entry is not None else 0
            while len(members) > size:
                record = members.pop()
                self.log.info("stopping warm kernel %s: pool %s is now %d", record.id, name, size)
                await self.registry.destroy(record)
        for name, entry in entries.items():
            if await self.size_of(entry) > 0:
                self.refill(name)

    async def stop(self) -> None:
        for task in list(self._filling.values()):
            task.cancel()
        await asyncio.gather(*self._filling.values(), return_exceptions=True)
        self._filling.clear()

    def discard(self, record: KernelRecord) -> None:
        """Drop *record* from its pool without stopping it (another replica took it)."""
        members = self.members.get(record.name) or []
        if record in members:
            members.remove(record)
            record.pooled = False
            self.refill(record.name)

    async def take_from_peers(
        self, entry: SpecEntry, req_env: Mapping[str, str]
    ) -> KernelRecord | None:
        """With replicas on a shared store: a warm kernel another replica started, taken in
        the store (exactly one replica gets each) and adopted here, when this replica's own
        pool has none. One that cannot serve this request joins this replica's pool."""
        registry = self.registry
        store = registry.persist.store
        if store is None or not registry.shared_store or await self.size_of(entry) <= 0:
            return None
        me = registry.persist.gateway_id
        rows = [
            r
            for r in await store.all()
            if r.pooled and r.name == entry.name and r.state == "running" and r.gateway != me
        ]
        for row in rows:
            taken = await store.take_pooled(row.id, me)
            if taken is None:
                continue
            outcome = await adopt(registry, taken, claim=True, answer_within=self.handover_timeout)
            record = registry.records.get(row.id)
            if outcome != "reattached" or record is None:
                continue
            if can_take(entry.spec, record, req_env):
                self.log.info("warm kernel %s taken from replica %s", row.id, row.gateway)
                return record
            record.pooled = True
            await registry.persist.save(record, "running", pooled=True)
            self.members.setdefault(entry.name, []).append(record)
        return None

    def take(self, entry: SpecEntry, req_env: Mapping[str, str]) -> KernelRecord | None:
        """Remove and return a pooled kernel that can serve the request (no await: atomic)."""
        members = self.members.get(entry.name) or []
        for record in members:
            if record.lifecycle is Lifecycle.RUNNING and can_take(entry.spec, record, req_env):
                members.remove(record)
                self.refill(entry.name)
                return record
        return None

    async def hand_over(
        self,
        record: KernelRecord,
        *,
        owner: str,
        env: dict[str, str],
    ) -> KernelRecord:
        """Give pooled *record* to *owner*, applying what of *env* the kernel can take."""
        env = {**env, "KERNEL_ID": record.id}
        store = self.registry.persist.store
        # another replica may take the same warm kernel: the store decides who gets it
        if (
            self.registry.shared_store
            and store is not None
            and record.pooled
            and await store.take_pooled(record.id, self.registry.persist.gateway_id) is None
        ):
            record.pooled = False
            raise TakenElsewhere(f"warm kernel {record.id} was taken by another replica")
        before = (record.owner, record.pooled, dict(record.env))
        record.owner = owner
        record.pooled = False
        record.env.update(env)  # the same dict a restart launches with
        # Recorded as the user's before their values reach it: after a crash it must never
        # return to the pool. On a shared store the user's kernels are counted there too.
        gw = self.registry.policy()
        refused = await self.registry.persist.reserve(
            record, "running", max_total=0, max_per_user=gw.max_kernels_per_user
        )
        if refused:
            record.owner, record.pooled = before[0], before[1]
            record.env.clear()
            record.env.update(before[2])
            self.members.setdefault(record.name, []).insert(0, record)  # untouched: still warm
            if self.registry.shared_store:  # back in the store's pool too
                await self.registry.persist.save(record, "running", pooled=True)
            raise pol.limit_reached(refused, owner, gw, shared=True)
        if is_python(record.spec) and record.channels is not None:
            async with asyncio.timeout(self.handover_timeout):
                reply = await record.channels.request(
                    "shell",
                    "execute_request",
                    {"code": env_update_code(env), "silent": True, "store_history": False},
                )
            if reply.content().get("status") != "ok":
                raise RuntimeError(f"pool kernel {record.id} did not take the request's env")
        record.touch()
        self.log.info(
            "kernel %s (%s) handed over from the pool to %s", record.id, record.name, owner
        )
        return record

    def refill(self, name: str) -> None:
        task = self._filling.get(name)
        if task is None or task.done():
            self._filling[name] = asyncio.create_task(self._fill(name), name=f"pool-{name}")

    async def _fill(self, name: str) -> None:
        delay = 1.0
        while True:
            try:
                entry = await self.registry.catalog.get(name)
            except PublicError:
                return  # the kernelspec was removed
            members = self.members.setdefault(name, [])
            members[:] = [r for r in members if r.lifecycle is Lifecycle.RUNNING]
            missing = await self.size_of(entry) - len(members)
            if missing <= 0:
                return
            gw = self.registry.policy()
            if gw.max_kernels and self.registry.live_count() >= gw.max_kernels:
                return  # pools never take a user's slot
            record = KernelRecord(
                id=str(uuid.uuid4()),
                name=name,
                owner=POOL_OWNER,
                env={},
                launch_timeout=entry.policy.launch_timeout or self.registry.launch_timeout,
                spec=entry.spec,
                resource_dir=entry.resource_dir,
                pooled=True,
            )
            record.env = pol.kernel_env(
                {}, self.registry.process_env(), gw, kernel_id=record.id, username=POOL_OWNER
            )
            try:
                await self.registry.launch_record(record, entry)
            except PublicError as exc:
                self.log.warning("pool %s: could not start a kernel: %s", name, exc.message)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.refill_backoff_max)
                continue
            delay = 1.0
            members.append(record)
