"""The versioned schema of the SQL kernel stores: the ordered migrations, and which to apply.

Each store records the migrations it has applied in ``kf_schema`` (one row per version: its
description, whether it is *additive*, and when it was applied). On :meth:`open
<kernelfleet.kernels.stores.base.KernelStore.open>` a store brings its database to
:data:`SCHEMA_VERSION`, one migration per transaction, each transaction serialised across
concurrent openers (PostgreSQL: an advisory lock; SQLite: ``BEGIN IMMEDIATE``) and re-reading the
recorded version first, so a step runs once however many gateways start together.

The rules a migration follows, so that gateways of two versions can share a store during a rolling
upgrade:

- **Additive**: it adds tables, columns with defaults, indexes or triggers; it never drops or
  renames anything a previous version reads or writes. The previous version creates ``kf_kernels``
  with ``CREATE TABLE IF NOT EXISTS`` and writes it with an explicit column list
  (:data:`~kernelfleet.kernels.stores.base.COLUMNS`), so it keeps working on the migrated store.
  A migration that cannot be additive sets ``additive=False``: gateways that do not know it then
  refuse the store (:class:`SchemaVersionError`) instead of corrupting it.
- **Append-only**: a released migration is never edited; versions are contiguous from 1.

Version 1 is ``kf_kernels`` exactly as the stores created it before the schema had versions: a
database that has ``kf_kernels`` but no ``kf_schema`` is recognised as version 1 and upgraded in
place.

This module is pure (no I/O): the stores run the SQL it holds; :func:`plan` says what to run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Literal

Dialect = Literal["sqlite", "postgres"]


class SchemaVersionError(RuntimeError):
    """The store's schema is newer than this gateway knows, and not backward compatible."""

    def __init__(self, recorded: int, known: int, blocking: Sequence[AppliedStep]) -> None:
        steps = "; ".join(f"version {s.version} ({s.description})" for s in blocking)
        super().__init__(
            f"The kernel store has schema version {recorded}, newer than version {known} "
            f"that this gateway knows, and these migrations are not backward compatible: "
            f"{steps}. Upgrade this gateway to a release that knows schema version "
            f"{recorded} (other gateways on this store have already been upgraded)."
        )
        self.recorded = recorded
        self.known = known


@dataclasses.dataclass(frozen=True)
class Migration:
    """One step of the schema: its statements per dialect, each run in order in one
    transaction together with the ``kf_schema`` row recording it."""

    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]
    #: False when gateways of earlier versions cannot use the store once it is applied.
    additive: bool = True

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect == "sqlite" else self.postgres


@dataclasses.dataclass(frozen=True)
class AppliedStep:
    """A row of ``kf_schema``: a migration some gateway applied (maybe one newer than ours)."""

    version: int
    description: str
    additive: bool


@dataclasses.dataclass(frozen=True)
class Plan:
    """What :func:`plan` found: the store's version and what brings it to the code's."""

    #: The version of the store as found (0: empty database).
    current: int
    #: Set when the store is an unrecorded version 1 (``kf_kernels`` without ``kf_schema``):
    #: record this step as applied, running nothing.
    baseline: Migration | None
    #: The migrations to apply, in order.
    steps: tuple[Migration, ...]

    @property
    def done(self) -> bool:
        return self.baseline is None and not self.steps


KF_KERNELS_V1_SQLITE = """
CREATE TABLE IF NOT EXISTS kf_kernels (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    provisioner TEXT NOT NULL,
    created TEXT NOT NULL,
    last_activity TEXT NOT NULL,
    host TEXT,
    gateway TEXT NOT NULL DEFAULT '',
    restart_count INTEGER NOT NULL DEFAULT 0,
    pooled INTEGER NOT NULL DEFAULT 0,
    secret TEXT NOT NULL DEFAULT ''
)
"""

KF_KERNELS_V1_POSTGRES = """
CREATE TABLE IF NOT EXISTS kf_kernels (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    provisioner TEXT NOT NULL,
    created TIMESTAMPTZ NOT NULL,
    last_activity TIMESTAMPTZ NOT NULL,
    host TEXT,
    gateway TEXT NOT NULL DEFAULT '',
    restart_count INTEGER NOT NULL DEFAULT 0,
    pooled BOOLEAN NOT NULL DEFAULT FALSE,
    secret TEXT NOT NULL DEFAULT ''
)
"""

#: SQLite's clock as text (UTC, milliseconds), the format replica timestamps are kept in.
SQLITE_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

#: The table recording applied migrations (created before any migration runs).
KF_SCHEMA = {
    "sqlite": f"""
CREATE TABLE IF NOT EXISTS kf_schema (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    additive INTEGER NOT NULL,
    applied TEXT NOT NULL DEFAULT ({SQLITE_NOW})
)
""",
    "postgres": """
CREATE TABLE IF NOT EXISTS kf_schema (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    additive BOOLEAN NOT NULL,
    applied TIMESTAMPTZ NOT NULL DEFAULT now()
)
""",
}

#: PostgreSQL: every insert, delete, and update that changes more than ``last_activity`` of a
#: ``kf_kernels`` row notifies channel ``kf_kernels`` (on commit) with a small JSON payload. A
#: trigger, not the gateway, so writes of gateways that predate it notify too.
_NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION kf_kernels_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r kf_kernels;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := OLD;
    ELSE
        r := NEW;
    END IF;
    PERFORM pg_notify('kf_kernels', json_build_object(
        'op', lower(TG_OP), 'id', r.id, 'state', r.state, 'owner', r.owner,
        'gateway', r.gateway, 'pooled', r.pooled)::text);
    RETURN NULL;
END
$$
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "kf_kernels: one row per kernel",
        sqlite=(KF_KERNELS_V1_SQLITE,),
        postgres=(KF_KERNELS_V1_POSTGRES,),
    ),
    Migration(
        2,
        "kf_replicas (gateway leases); PostgreSQL: kf_kernels change notifications",
        sqlite=(
            f"""
CREATE TABLE IF NOT EXISTS kf_replicas (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT '',
    schema_version INTEGER NOT NULL DEFAULT 0,
    started TEXT NOT NULL DEFAULT ({SQLITE_NOW}),
    heartbeat TEXT NOT NULL DEFAULT ({SQLITE_NOW})
)
""",
        ),
        postgres=(
            """
CREATE TABLE IF NOT EXISTS kf_replicas (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT '',
    schema_version INTEGER NOT NULL DEFAULT 0,
    started TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat TIMESTAMPTZ NOT NULL DEFAULT now()
)
""",
            _NOTIFY_FUNCTION,
            "DROP TRIGGER IF EXISTS kf_kernels_notify ON kf_kernels",
            "CREATE TRIGGER kf_kernels_notify AFTER INSERT OR DELETE ON kf_kernels"
            " FOR EACH ROW EXECUTE FUNCTION kf_kernels_notify()",
            "DROP TRIGGER IF EXISTS kf_kernels_notify_update ON kf_kernels",
            # Whole rows compared as JSON minus last_activity: batched activity updates stay
            # silent, and a column added later counts without changing the trigger.
            "CREATE TRIGGER kf_kernels_notify_update AFTER UPDATE ON kf_kernels FOR EACH ROW"
            " WHEN (to_jsonb(OLD) - 'last_activity' IS DISTINCT FROM"
            " to_jsonb(NEW) - 'last_activity')"
            " EXECUTE FUNCTION kf_kernels_notify()",
        ),
    ),
)


def check_migrations(migrations: Sequence[Migration]) -> None:
    """Raise ValueError unless *migrations* are numbered 1, 2, … and each has SQL for both
    dialects (a programming error, checked at import and by the tests)."""
    for index, step in enumerate(migrations, start=1):
        if step.version != index:
            raise ValueError(f"migration #{index} has version {step.version}, expected {index}")
        if not step.sqlite or not step.postgres:
            raise ValueError(f"migration {step.version} lacks SQL for a dialect")
        if not step.description:
            raise ValueError(f"migration {step.version} has no description")


check_migrations(MIGRATIONS)

#: The schema version this code brings a store to, and writes as its replicas' schema_version.
SCHEMA_VERSION = MIGRATIONS[-1].version


def plan(
    applied: Iterable[AppliedStep],
    has_kernels_table: bool,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> Plan:
    """What brings a store to the last of *migrations*, given the ``kf_schema`` rows it has
    (*applied*) and whether ``kf_kernels`` exists.

    Raises :class:`SchemaVersionError` when the store records versions newer than
    *migrations* know and any of them is not additive.
    """
    rows = sorted(applied, key=lambda s: s.version)
    known = migrations[-1].version if migrations else 0
    if rows:
        current = rows[-1].version
        baseline = None
    elif has_kernels_table:
        current = 1
        baseline = migrations[0]
    else:
        current = 0
        baseline = None
    if current > known:
        blocking = [s for s in rows if s.version > known and not s.additive]
        if blocking:
            raise SchemaVersionError(current, known, blocking)
    steps = tuple(m for m in migrations if m.version > current)
    return Plan(current=current, baseline=baseline, steps=steps)


def next_action(found: Plan) -> tuple[Migration, bool] | None:
    """The one thing to do in the next transaction: ``(migration, run_sql)``, where run_sql is
    False for recording an unrecorded version 1; None once the store is up to date."""
    if found.baseline is not None:
        return found.baseline, False
    if found.steps:
        return found.steps[0], True
    return None
