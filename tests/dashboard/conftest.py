"""Fixtures of the dashboard's browser tests: a private network, a private Jupyter world and
Chromium, which saves a screenshot of every tab when a test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import Browser, PrivateNetwork, browser, jupyter_world

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
    """The gateway's environment: private kernelspecs (``python3``), config and data dirs."""
    return jupyter_world(tmp_path)


@pytest.fixture
async def chromium(
    network: PrivateNetwork, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Browser]:
    async with browser(network, tmp_path) as b:
        yield b
        report = request.node.stash.get(_REPORTS, {}).get("call")
        if report is None or report.failed:
            for path in await b.screenshots(f"dashboard-{request.node.name}-failure"):
                print(f"screenshot: {path}")
            print("----- browser console -----\n" + "\n".join(b.console[-80:]))
