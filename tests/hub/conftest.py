"""A test that failed half-way must not leave a JupyterHub, its proxy or a single-user server
behind (tests/hub/jupyterhub.py marks them; they are killed by pid)."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.hub.jupyterhub import RUNNING, kill_marked


@pytest.fixture(autouse=True)
def _no_leftover_hub_processes() -> Iterator[None]:
    yield
    while RUNNING:
        hub = RUNNING.pop()
        if hub.proc is not None and hub.proc.poll() is None:
            hub.proc.send_signal(signal.SIGKILL)
            hub.proc.wait(timeout=30)
        kill_marked(hub.marker)
