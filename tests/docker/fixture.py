"""The session's Docker engine (``tests/docker/engine.py``): started by the first test that asks
for ``docker_engine``, stopped at the end of the session. Registered in ``tests/conftest.py``,
so every suite that runs kernels in containers shares one engine.

Without root or Debian's ``docker.io`` the tests that need it are skipped with the reason;
under ``CI=true`` they fail instead, so a CI machine that lost a part cannot go green by
skipping the Docker tier.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.docker.engine import DockerEngine, missing_requirements
from tests.testbed import TestbedBusy, skip_or_fail


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """dockerd on the bridge ``kfdock0`` (10.92.0.1/24), answering on its unix socket
    (``docker_engine.host``); nothing of an earlier run left in it but images. Torn down
    after the session."""
    reason = missing_requirements()
    if reason:
        skip_or_fail("Docker", reason)
    engine = DockerEngine()
    try:
        engine.up()
    except TestbedBusy as exc:
        skip_or_fail("Docker", str(exc))
    try:
        yield engine
    finally:
        engine.down()


@pytest.fixture(scope="session")
def docker_kernel_image(docker_engine: DockerEngine) -> str:
    """The reference of the Python kernel image (built once per machine, cached), loaded into
    the engine unless an earlier session loaded it already (the data root is kept)."""
    from kernelfleet.images.build import build_image

    archive, ref = build_image("python")
    if ref not in docker_engine.images():
        docker_engine.load_image(archive)
    return ref


@pytest.fixture
def docker_swarm(docker_engine: DockerEngine) -> DockerEngine:
    """The session's engine, made a one-node swarm manager if it is not one (0.6 s the first
    time). Per test, because a test may take the engine down and up again, which ends the
    swarm."""
    docker_engine.swarm_init()
    return docker_engine
