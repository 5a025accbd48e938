"""Fixtures for the spec tests that need SSH hosts (see fleet.py for the testbed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.specs.fleet import shared_testbed


@pytest.fixture(scope="session")
def fleet_bed() -> Iterator[Any]:
    with shared_testbed() as bed:
        yield bed
