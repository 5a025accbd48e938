"""Fixtures for the spec tests that need SSH hosts (see fleet.py for the testbed)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.specs.fleet import shared_testbed


@pytest.fixture(scope="session")
def fleet_bed() -> Iterator[Any]:
    with shared_testbed() as bed:
        yield bed


@pytest.fixture
def prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An install prefix and private Jupyter/kernelfleet dirs; no KF_SPEC_* of the caller's."""
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "p" / "share" / "jupyter"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KF_CONFIG_DIR", str(tmp_path / "cfg"))
    for name in list(os.environ):
        if name.startswith("KF_SPEC_"):
            monkeypatch.delenv(name)
    return tmp_path / "p"
