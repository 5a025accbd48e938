"""The testbed of the end-to-end listener tests: one netns SSH host under its own names, so it
runs beside the testbeds of tests/ssh, tests/specs and the conformance suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testbed import Network, Testbed, running_testbed

LISTENER_TESTBED = Network("kflbr0", "10.95.0", "kfl-host", "kflv", Path("/run/kfl-testbed"))


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    with running_testbed(1, network=LISTENER_TESTBED) as testbed:
        yield testbed
