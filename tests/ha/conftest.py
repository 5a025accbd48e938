"""Fixtures for the replicas-behind-a-proxy tests: one PostgreSQL server per module, a fresh
:class:`~tests.ha.harness.ReplicaSet` (3 replicas + HAProxy, own database) per test. Skips
with the reason when HAProxy, PostgreSQL or root is missing."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ha.harness import ReplicaSet, missing_parts, postgres_server


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    reason = missing_parts()
    if reason:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.fixture
def replica_set(postgres_url: str, tmp_path: Path) -> Iterator[ReplicaSet]:
    """Three gateway replicas on one store behind HAProxy, every server UP."""
    with ReplicaSet(tmp_path / "ha", postgres_url, n=3) as replicas:
        yield replicas


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """A failed test reports HAProxy's server states and the end of every log."""
    outcome = yield
    report = outcome.get_result()
    replicas = getattr(item, "funcargs", {}).get("replica_set")
    if report.failed and call.when == "call" and isinstance(replicas, ReplicaSet):
        report.sections.append(("replicas behind HAProxy", replicas.diagnostics()))
