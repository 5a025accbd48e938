"""A response listener on 127.0.0.1 (any free port) for each test, closed after it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kernelfleet.transport.listener import ResponseListener


@pytest.fixture
async def listener() -> AsyncIterator[ResponseListener]:
    lst = ResponseListener(ip="127.0.0.1", port=0, read_timeout=1.0)
    await lst.start()
    try:
        yield lst
    finally:
        await lst.close()
