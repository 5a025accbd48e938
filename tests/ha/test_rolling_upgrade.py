"""A rolling upgrade of gateway replicas on one PostgreSQL store, from the previous release.

The previous release (:data:`tests.ha.previous.PREVIOUS`, unpacked from this repository's git
history) has neither schema versions nor replica leases: it creates ``kf_kernels`` with
``CREATE TABLE IF NOT EXISTS`` and nothing else. The scenario, behind HAProxy
(``tests/ha/harness.py``; ``gw1``…``gw3`` are the proxy's servers for replicas 1…3):

1. replicas 1 and 2 run the previous release on a fresh database (replica 1 creates the
   version 1 schema before replica 2 starts), with ``KF_STOP_MODE=leave``; ``gw3`` waits in
   maintenance. Kernels are started through the proxy, and a client keeps a websocket open on
   each through the proxy (a notebook tab) and sets a variable in it;
2. replica 3 starts with this checkout's gateway and migrates the store to the current schema
   (``kf_schema``, ``kf_replicas``, the ``kf_kernels`` NOTIFY trigger) under the running
   previous replicas. Replica 3 serves their kernels; they still start, list, execute and shut
   down kernels (replica 3's too), and their writes notify through the new trigger. Both
   versions then run side by side for longer than replica 3 needs to act on the rows of
   replicas that hold no lease (``replica_timeout``), and the previous replicas still work;
3. each previous replica in turn is stopped (SIGTERM, its kernels left running) and replaced by
   this checkout's gateway in the same proxy slot: the kernels keep their ids and processes,
   the websockets the stopped replica carried are closed and reconnect through the proxy with
   the same session while the others stay open, and the variable is still there;
4. only this checkout's replicas run: no kernel is lost, none runs twice, no other kernel
   process runs, and shutting them down through the proxy leaves no process and no row.

A separate test checks the end of step 4 that depends on take-overs: every kernel is owned by
a live replica (``kf_kernels.gateway`` names a running replica whose ``kf_replicas`` heartbeat
is fresh) within a bounded time, here with the replacements done before replica 3 acts on rows
without a lease (in the first test it acts while the previous replicas still run).

Both tests run twice: the replacing replicas keep the replaced ones' gateway ids
(``KF_GATEWAY_ID`` from a StatefulSet's pod name), or get new ones (a Deployment's new pods, or
the default ``<hostname>:<pid>``).

That replicas 1 and 2 really run the previous release, not the editable install, is checked
three ways: an interpreter started as they are imports ``kernelfleet`` from the unpacked tree
and has no ``kernelfleet.kernels.replicas`` (:func:`tests.ha.previous.check_runs_previous`);
their processes have that tree as ``PYTHONPATH`` and working directory (``/proc``); and what
they do to the store is the previous release's: two of them serving kernels leave no
``kf_schema`` table (this checkout's gateway creates it on open, before serving anything), and
once replica 3 has migrated, ``kf_replicas`` never holds a row of theirs (the previous release
writes no heartbeat).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kernelfleet.client import KernelSocket, stdout_of
from kernelfleet.kernels.replicas import ReplicaSettings
from kernelfleet.kernels.stores.migrations import SCHEMA_VERSION
from tests.gatewayproc import kernel_pids
from tests.ha.harness import SERVED_BY, ReplicaSet, marked_pids
from tests.ha.previous import Unavailable, check_runs_previous, previous_tree

pytestmark = [pytest.mark.ha]

log = logging.getLogger(__name__)

#: Replicas that start on the previous release, and the one added on this checkout's gateway.
OLD = (1, 2)
NEW = 3
#: The previous release's replicas leave their kernels running when they stop.
LEAVE = {"KF_STOP_MODE": "leave"}
_REPLICA_DEFAULTS = ReplicaSettings.class_traits()
#: This checkout's replica timing (its defaults: the test does not tune them).
HEARTBEAT = float(_REPLICA_DEFAULTS["replica_heartbeat"].default_value)
REPLICA_TIMEOUT = float(_REPLICA_DEFAULTS["replica_timeout"].default_value)
#: How long a kernel may stay owned by a replica that is gone: a replica of the previous
#: release holds no lease whose loss would tell at once, so its rows are taken over within
#: replica_timeout (and a heartbeat round); plus a heartbeat and 5 s for a loaded machine.
OWNED_WITHIN = REPLICA_TIMEOUT + 2 * HEARTBEAT + 5.0
#: How long the replicas may take to see another replica's change (the trigger's
#: notification, or the previous release's 2 s sync) on a loaded machine.
SEEN_WITHIN = 15.0
SERVER_TABLES = {"kf_kernels", "kf_schema", "kf_replicas"}
NOTIFY_TRIGGERS = {"kf_kernels_notify", "kf_kernels_notify_update"}


class NotOwnedByALiveReplica(AssertionError):
    """Some kernel's row names no live replica (running, its heartbeat fresh)."""


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def previous() -> Path:
    """The previous release's source tree (unpacked once, cached), proven to be what an
    interpreter started like the replicas imports."""
    try:
        tree = previous_tree()
    except Unavailable as exc:
        pytest.skip(str(exc))
    check_runs_previous(tree)
    return tree


@pytest.fixture
async def replica_set(
    postgres_url: str, previous: Path, tmp_path: Path
) -> AsyncIterator[ReplicaSet]:
    """Replicas 1 and 2 on the previous release, ``gw3`` parked for replica 3.

    Replica 2 starts once replica 1 has created the table: the previous release creates it with
    a bare ``CREATE TABLE IF NOT EXISTS``, which can fail in one of two sessions running it at
    once (``duplicate key value violates unique constraint "pg_type_typname_nsp_index"``, and
    that replica exits: seen here in 2 of about 30 starts side by side). This checkout's
    gateway migrates under an advisory lock.

    Named like the conftest's fixture, which it replaces here, so that a failed test reports
    HAProxy's states and every replica's log (the replaced ones' too)."""
    with ReplicaSet(
        tmp_path / "ha",
        postgres_url,
        n=3,
        started=OLD[:1],
        sources={OLD[0]: previous},
        replica_env={OLD[0]: LEAVE},
    ) as replicas:
        for i in OLD[1:]:
            replicas.start(i, source=previous, env=LEAVE)
            await replicas.wait_for_state(i, "UP")
        yield replicas


# -- what a client sees ----------------------------------------------------------------------


@dataclasses.dataclass
class Kernel:
    """A kernel under test: its process, and the state the test put in it."""

    id: str
    pids: list[int]
    #: How many times :data:`RUN` ran in it (its ``runs`` variable).
    runs: int = 0

    def marker(self) -> str:
        return f"set before the upgrade in {self.id}"


SETUP = "before_upgrade = {marker!r}; runs = 0"
#: Proves the state set before the upgrade, and counts runs (each must run exactly once).
RUN = "runs += 1; print(before_upgrade, runs)"


async def setup(ws: KernelSocket, kernel: Kernel) -> None:
    """Set *kernel*'s variables (:data:`SETUP`) over *ws*."""
    reply, _ = await asyncio.wait_for(ws.execute(SETUP.format(marker=kernel.marker())), 60)
    assert reply["status"] == "ok", reply


async def run(ws: KernelSocket, kernel: Kernel) -> None:
    """Run :data:`RUN` in *kernel* over *ws*; check its variable and its run count."""
    reply, iopub = await asyncio.wait_for(ws.execute(RUN), 60)
    assert reply["status"] == "ok", reply
    kernel.runs += 1
    assert stdout_of(iopub) == f"{kernel.marker()} {kernel.runs}\n", iopub


def served_by(ws: KernelSocket) -> str:
    """The replica that accepted this websocket (HAProxy's header on the 101 answer)."""
    headers = ws.conn.headers
    return "" if headers is None else str(headers.get(SERVED_BY, ""))


@dataclasses.dataclass
class Notebook:
    """A client holding one websocket (one session) on a kernel, through the proxy."""

    kernel: Kernel
    session_id: str
    ws: KernelSocket
    served_by: str
    reconnects: int = 0

    @classmethod
    async def open(cls, rs: ReplicaSet, kernel: Kernel) -> Notebook:
        sid = uuid.uuid4().hex
        ws = await rs.client.connect(kernel.id, session_id=sid)
        return cls(kernel, sid, ws, served_by(ws))

    async def reconnect(self, rs: ReplicaSet) -> None:
        """The same session again through the proxy (where a notebook's client goes)."""
        self.ws.close()
        self.ws = await rs.client.connect(self.kernel.id, session_id=self.session_id)
        self.served_by = served_by(self.ws)
        self.reconnects += 1

    async def closed_by_the_gateway(self, within: float) -> bool:
        """Whether the websocket is closed from the other end within *within* seconds
        (messages still arriving, such as status broadcasts, are dropped)."""
        try:
            async with asyncio.timeout(within):
                while await self.ws.conn.read_message() is not None:
                    pass
        except TimeoutError:
            return False
        return True


# -- what the store holds --------------------------------------------------------------------


def query(rs: ReplicaSet, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(rs.store_url) as conn:
        return conn.execute(sql).fetchall()  # the test's own SQL, no input


def tables(rs: ReplicaSet) -> set[str]:
    found = query(rs, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {str(t) for (t,) in found} & SERVER_TABLES


def owners(rs: ReplicaSet) -> dict[str, str]:
    """kf_kernels: kernel id → the replica that owns it (``gateway``)."""
    return {str(k): str(g) for k, g in query(rs, "SELECT id, gateway FROM kf_kernels")}


def heartbeats(rs: ReplicaSet) -> dict[str, tuple[int, float]]:
    """kf_replicas: replica id → (schema version, seconds since its heartbeat)."""
    found = query(
        rs,
        "SELECT id, schema_version, extract(epoch FROM now() - heartbeat)::float8 FROM kf_replicas",
    )
    return {str(r): (int(v), float(age)) for r, v, age in found}


class Notifications:
    """What the store's trigger sent on channel ``kf_kernels`` (JSON payloads, decoded)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self.seen: list[dict[str, Any]] = []

    async def collect(self, seconds: float = 1.0) -> list[dict[str, Any]]:
        """Read what arrived since the last call, waiting *seconds* for more."""
        async for note in self.conn.notifies(timeout=seconds):
            self.seen.append(json.loads(note.payload))
        return self.seen

    def first(self, op: str, kernel_id: str) -> dict[str, Any]:
        return next((n for n in self.seen if n["op"] == op and n["id"] == kernel_id), {})


@asynccontextmanager
async def listening(rs: ReplicaSet) -> AsyncIterator[Notifications]:
    """``LISTEN kf_kernels`` for the block (the notifications wait in the socket until
    :meth:`Notifications.collect` reads them)."""
    async with await psycopg.AsyncConnection.connect(rs.store_url, autocommit=True) as conn:
        await conn.execute("LISTEN kf_kernels")
        yield Notifications(conn)


# -- replicas ---------------------------------------------------------------------------------


def process_of(rs: ReplicaSet, i: int) -> tuple[list[str], str]:
    """Replica *i*'s process: its PYTHONPATH entries and its working directory."""
    pid = rs.replicas[i].proc.pid
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pythonpath = next(
        (e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"PYTHONPATH=")), ""
    )
    return [p for p in pythonpath.split(os.pathsep) if p], os.readlink(f"/proc/{pid}/cwd")


def runs_previous(rs: ReplicaSet, i: int, tree: Path) -> bool:
    """Whether replica *i*'s process imports the previous release (see the module docstring:
    the interpreter was checked to import from the first PYTHONPATH entry)."""
    path, cwd = process_of(rs, i)
    return bool(path) and Path(path[0]) == tree and Path(cwd) == tree


async def listed(rs: ReplicaSet, i: int) -> list[str]:
    """The kernel ids replica *i* lists, as listed (a duplicate would show)."""
    return sorted(k["id"] for k in await rs.replica_client(i).call("GET", "/api/kernels"))


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Await ``check()`` every 100 ms until true; returns the seconds it took."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def all_list(rs: ReplicaSet, ids: set[str], within: float = SEEN_WITHIN) -> float:
    """Wait until every running replica lists exactly *ids*, each once."""

    async def check() -> bool:
        for i in rs.replicas:
            if rs.running(i) and await listed(rs, i) != sorted(ids):
                return False
        return True

    return await until(check, within, f"every replica lists exactly {sorted(ids)}")


async def start_kernel(rs: ReplicaSet, via: int | None = None) -> tuple[Kernel, str]:
    """A kernel started through the proxy, or on replica *via*; and the replica (HAProxy's
    name) that started it. Its variables are not set yet (:func:`setup`)."""
    if via is None:
        status, model, by = await rs.request("POST", "/api/kernels", {"name": "python3", "env": {}})
        assert status == 201, (by, model)
    else:
        model, by = await rs.replica_client(via).start_kernel("python3"), rs.name(via)
    kid = str(model["id"])
    pids = kernel_pids(kid)
    assert len(pids) == 1, pids
    return Kernel(kid, pids), by


async def kernel_on(rs: ReplicaSet, i: int) -> Kernel:
    """A kernel started on replica *i*, its variables set there."""
    kernel, _ = await start_kernel(rs, via=i)
    ws = await rs.replica_client(i).connect(kernel.id)
    try:
        await setup(ws, kernel)
    finally:
        ws.close()
    return kernel


async def run_on(rs: ReplicaSet, i: int, kernel: Kernel) -> None:
    """Run :data:`RUN` over a new session on replica *i* itself (not through the proxy)."""
    ws = await rs.replica_client(i).connect(kernel.id)
    try:
        await run(ws, kernel)
    finally:
        ws.close()


def new_gateway_id(i: int, keep_ids: bool) -> str:
    """The gateway id of the replica that replaces previous replica *i*: the same (a
    StatefulSet's pod name) or a new one (a Deployment's new pod)."""
    return f"ha-{i}" if keep_ids else f"ha-{i}-upgraded"


async def add_new_replica(rs: ReplicaSet) -> None:
    """Replica 3, this checkout's gateway, into its parked proxy slot."""
    rs.start(NEW)
    await rs.wait_for_state(NEW, "UP")


async def replace(rs: ReplicaSet, i: int, keep_ids: bool) -> None:
    """Stop previous replica *i* (SIGTERM; it leaves its kernels running) and start this
    checkout's gateway in its proxy slot."""
    assert rs.stop(i) == 0, rs.replicas[i].output()[-3000:]
    await rs.wait_for_state(i, "DOWN")
    rs.start(i, env={"KF_GATEWAY_ID": new_gateway_id(i, keep_ids)})
    await rs.wait_for_state(i, "UP")


def live_replicas(rs: ReplicaSet) -> set[str]:
    """Gateway ids of the replicas that run and whose heartbeat is fresh."""
    running = {rs.gateway_ids[i] for i in rs.replicas if rs.running(i)}
    fresh = {r for r, (_, age) in heartbeats(rs).items() if age < REPLICA_TIMEOUT}
    return running & fresh


async def owned_by_live_replicas(rs: ReplicaSet, ids: set[str]) -> float:
    """Wait until every kernel row names a live replica (:func:`live_replicas`); returns the
    seconds it took. Raises :class:`NotOwnedByALiveReplica` (with the rows) if not within
    :data:`OWNED_WITHIN`."""

    start = time.monotonic()
    while True:
        rows = owners(rs)
        assert set(rows) == ids, f"the store holds {sorted(rows)}, not {sorted(ids)}"
        live = live_replicas(rs)
        if set(rows.values()) <= live:
            return time.monotonic() - start
        if time.monotonic() - start > OWNED_WITHIN:
            raise NotOwnedByALiveReplica(
                f"after {OWNED_WITHIN} s, kernel owners {rows}; live replicas {sorted(live)}; "
                f"heartbeats (schema version, age) {heartbeats(rs)}"
            )
        await asyncio.sleep(0.1)


async def _no(pids: list[int]) -> bool:
    return not pids


class Upgrade:
    """The steps of the module docstring, each checking what it promises."""

    def __init__(self, rs: ReplicaSet, previous: Path, keep_ids: bool) -> None:
        self.rs = rs
        self.previous = previous
        self.keep_ids = keep_ids
        #: The kernels that must survive, and a client's websocket on each.
        self.kernels: dict[str, Kernel] = {}
        self.notebooks: dict[str, Notebook] = {}
        self.t0 = time.monotonic()

    def log(self, step: str, *args: Any) -> None:
        log.info("%.1f s: " + step, time.monotonic() - self.t0, *args)

    @property
    def ids(self) -> set[str]:
        return set(self.kernels)

    async def keep(self, kernel: Kernel) -> None:
        """Watch *kernel* to the end, through a notebook on the proxy."""
        self.kernels[kernel.id] = kernel
        self.notebooks[kernel.id] = await Notebook.open(self.rs, kernel)
        await run(self.notebooks[kernel.id].ws, kernel)

    async def shut_down(self, kernel: Kernel, via: int) -> None:
        """Shut *kernel* down on replica *via*; every replica forgets it, its process ends."""
        if kernel.id in self.notebooks:
            self.notebooks.pop(kernel.id).ws.close()
        self.kernels.pop(kernel.id, None)
        await self.rs.replica_client(via).shutdown_kernel(kernel.id)
        await all_list(self.rs, self.ids)
        await until(lambda: _no(kernel_pids(kernel.id)), 15, f"kernel {kernel.id} ends")
        assert kernel.id not in owners(self.rs)

    def same_processes(self, when: str) -> None:
        """Every kept kernel has its first process, and no other kernel process runs."""
        for k in self.kernels.values():
            assert kernel_pids(k.id) == k.pids, f"kernel {k.id} lost its process {when}"
        expected = sorted(p for k in self.kernels.values() for p in k.pids)
        assert sorted(marked_pids(self.rs.id)) == expected, f"stray kernel processes {when}"

    async def previous_release_only(self) -> None:
        """(1) Two replicas of the previous release, kernels started through the proxy."""
        rs = self.rs
        for i in OLD:
            assert runs_previous(rs, i, self.previous), process_of(rs, i)
        started = [await start_kernel(rs) for _ in range(4)]  # round robin: two on each
        assert sorted(by for _, by in started) == ["gw1", "gw1", "gw2", "gw2"], started
        for kernel, _ in started:
            self.kernels[kernel.id] = kernel
            nb = self.notebooks[kernel.id] = await Notebook.open(rs, kernel)
            await setup(nb.ws, kernel)
            await run(nb.ws, kernel)
        # round robin again: notebooks on both replicas
        assert {nb.served_by for nb in self.notebooks.values()} == {"gw1", "gw2"}
        assert tables(rs) == {"kf_kernels"}, "a replica of this checkout ran: it makes kf_schema"
        assert sorted(owners(rs).values()) == ["ha-1", "ha-1", "ha-2", "ha-2"]
        self.log("(1) the previous release serves %d kernels", len(self.kernels))

    async def migrated_under_the_previous_release(self) -> None:
        """(2) Replica 3 joins, migrates the store; the previous replicas keep working on it
        and replica 3 serves their kernels."""
        rs = self.rs
        await add_new_replica(rs)
        assert not runs_previous(rs, NEW, self.previous)
        assert tables(rs) == SERVER_TABLES
        versions = query(rs, "SELECT version FROM kf_schema ORDER BY version")
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        found = query(rs, "SELECT tgname FROM pg_trigger WHERE tgrelid = 'kf_kernels'::regclass")
        assert {t for (t,) in found} >= NOTIFY_TRIGGERS
        await all_list(rs, self.ids)
        for k in self.kernels.values():  # the previous replicas' kernels, state and all
            await run_on(rs, NEW, k)

        async with listening(rs) as notes:
            on_old = {i: await kernel_on(rs, i) for i in OLD}
            on_new = await kernel_on(rs, NEW)
            for k in (*on_old.values(), on_new):
                await self.keep(k)
            await all_list(rs, self.ids)
            for i in OLD:  # the previous release runs the other replicas' kernels
                for k in (on_new, on_old[1 if i == 2 else 2]):
                    await run_on(rs, i, k)
            await self.shut_down(on_old[1], via=2)  # not the replica that started it
            await notes.collect()
        for i in OLD:  # the previous release's writes, notified by the new trigger
            assert notes.first("insert", on_old[i].id).get("gateway") == f"ha-{i}", notes.seen
        assert notes.first("delete", on_old[1].id), notes.seen
        self.log("(2) store migrated under the previous release; owners %s", owners(rs))

    async def side_by_side(self) -> None:
        """(2, continued) Both versions serve the store for longer than replica 3 needs to act
        on rows of replicas without a lease; the previous replicas keep working."""
        rs = self.rs
        await asyncio.sleep(REPLICA_TIMEOUT + 2 * HEARTBEAT)
        self.log("(2) after %.0f s side by side, owners %s", REPLICA_TIMEOUT, owners(rs))
        assert set(heartbeats(rs)) == {rs.gateway_ids[NEW]}, "the previous release heartbeats"
        await all_list(rs, self.ids)
        for i in OLD:
            for k in self.kernels.values():
                await run_on(rs, i, k)
        await self.keep(await kernel_on(rs, 1))
        oldest = next(iter(self.kernels.values()))
        await self.shut_down(oldest, via=2)  # whoever owns its row now
        self.same_processes("with both versions running")

    async def replaced(self, i: int) -> None:
        """(3) Previous replica *i* stopped, its kernels left running, and replaced."""
        rs = self.rs
        victim = rs.name(i)
        notebooks = list(self.notebooks.values())
        dropped = [nb for nb in notebooks if nb.served_by == victim]
        carried_on = [nb for nb in notebooks if nb.served_by != victim]
        assert dropped, f"no websocket on {victim}: {[nb.served_by for nb in notebooks]}"
        assert rs.stop(i) == 0, rs.replicas[i].output()[-3000:]
        await rs.wait_for_state(i, "DOWN")
        self.same_processes(f"when {victim} stopped")
        for nb in dropped:
            assert await nb.closed_by_the_gateway(10), f"{nb.kernel.id}'s websocket stays open"
        for nb in carried_on:  # the websockets of the other replicas are not disturbed
            await run(nb.ws, nb.kernel)
        for nb in dropped:
            await nb.reconnect(rs)
            assert nb.served_by not in {victim, ""}, nb.served_by
            await run(nb.ws, nb.kernel)
        rs.start(i, env={"KF_GATEWAY_ID": new_gateway_id(i, self.keep_ids)})
        await rs.wait_for_state(i, "UP")
        assert not runs_previous(rs, i, self.previous)
        await all_list(rs, self.ids)
        for k in self.kernels.values():
            await run_on(rs, i, k)
        self.same_processes(f"when {victim} was replaced")
        self.log("(3) %s replaced (%d websockets reconnected)", victim, len(dropped))

    async def upgraded(self) -> None:
        """(4) Only this checkout's replicas: nothing lost, nothing twice, nothing left over."""
        rs = self.rs
        assert all(rs.sources[i] is None for i in rs.replicas)
        assert set(owners(rs)) == self.ids
        await all_list(rs, self.ids)
        self.same_processes("after the upgrade")
        for nb in self.notebooks.values():
            await run(nb.ws, nb.kernel)
        assert heartbeats(rs).keys() == {rs.gateway_ids[i] for i in rs.replicas}
        assert {version for version, _ in heartbeats(rs).values()} == {SCHEMA_VERSION}
        for nb in self.notebooks.values():
            nb.ws.close()
        for kid in self.ids:
            status, body, by = await rs.request("DELETE", f"/api/kernels/{kid}")
            assert status == 204, (by, body)
        await all_list(rs, set())
        assert owners(rs) == {}
        await until(lambda: _no(marked_pids(rs.id)), 15, "every kernel process ends")
        self.log("(4) upgraded; %d kernels shut down, no process left", len(self.kernels))


# -- the tests ---------------------------------------------------------------------------------

KEEP_IDS = pytest.mark.parametrize(
    "keep_ids", [True, False], ids=["same-gateway-ids", "new-gateway-ids"]
)


@pytest.mark.timeout(300)
@KEEP_IDS
async def test_kernels_keep_their_processes_and_state_through_a_rolling_upgrade(
    replica_set: ReplicaSet, previous: Path, keep_ids: bool
) -> None:
    upgrade = Upgrade(replica_set, previous, keep_ids)
    await upgrade.previous_release_only()
    await upgrade.migrated_under_the_previous_release()
    await upgrade.side_by_side()
    for i in OLD:
        await upgrade.replaced(i)
    await upgrade.upgraded()


@pytest.mark.timeout(240)
@KEEP_IDS
async def test_every_kernel_is_owned_by_a_live_replica_once_only_upgraded_replicas_run(
    replica_set: ReplicaSet, keep_ids: bool
) -> None:
    rs = replica_set
    kernels = [(await start_kernel(rs))[0] for _ in range(4)]
    await add_new_replica(rs)
    kernels += [(await start_kernel(rs, via=i))[0] for i in (*OLD, NEW)]
    for i in OLD:
        await replace(rs, i, keep_ids)
    replaced_at = time.monotonic()
    ids = {k.id for k in kernels}
    await all_list(rs, ids)
    await owned_by_live_replicas(rs, ids)
    log.info(
        "every kernel owned by a live replica %.1f s after the last replacement: %s",
        time.monotonic() - replaced_at,
        owners(rs),
    )
    for k in kernels:
        assert kernel_pids(k.id) == k.pids, f"kernel {k.id} was restarted or started twice"
