"""Fixtures of the real-browser tests: a private network, a private Jupyter world, both
servers for each frontend, and Chromium, which saves a screenshot when a test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import (
    FRONTENDS,
    Browser,
    Frontend,
    PrivateNetwork,
    Servers,
    browser,
    jupyter_world,
    running_servers,
)

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, Any]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@pytest.fixture
def network() -> Iterator[PrivateNetwork]:
    net = PrivateNetwork.create()
    yield net
    net.close()


@pytest.fixture
def world(tmp_path: Path) -> dict[str, str]:
    """The servers' environment: private kernelspecs (``python3``), config and data dirs."""
    return jupyter_world(tmp_path)


@pytest.fixture(params=FRONTENDS, ids=lambda f: f.id)
def frontend(request: pytest.FixtureRequest) -> Frontend:
    kind: Frontend = request.param
    return kind


@pytest.fixture
async def servers(
    frontend: Frontend, world: dict[str, str], network: PrivateNetwork, tmp_path: Path
) -> AsyncIterator[Servers]:
    async with running_servers(frontend, world, network, tmp_path) as both:
        yield both


@pytest.fixture
async def chromium(
    network: PrivateNetwork, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Browser]:
    """Chromium; if the test failed, screenshots of its pages and the console are kept."""
    async with browser(network, tmp_path) as b:
        yield b
        report = request.node.stash.get(_REPORTS, {}).get("call")
        if report is None or report.failed:
            for path in await b.screenshots(f"{request.node.name}-failure"):
                print(f"screenshot: {path}")
            print("----- browser console -----\n" + "\n".join(b.console[-80:]))
