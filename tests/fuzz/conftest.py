"""Fixtures of the fuzz tests: a gateway whose kernelspecs exit at once, so that a request
that passes validation costs a process start (milliseconds), not a kernel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kernelfleet.gateway.app import Gateway
from tests.conftest import add_kernelspec, temp_gateway

#: A user token besides the (admin) shared token.
ALICE = "tok-alice"


@pytest.fixture
def quick_specs(kernelspec_dir: Path) -> Path:
    """``quick`` (exits at once, with resources), ``limited`` (only alice may start it) and the
    real ``python3`` of the shared fixture (for tests that need one live kernel)."""
    quick = add_kernelspec(kernelspec_dir, "quick", {"argv": ["/bin/true", "{connection_file}"]})
    (quick / "logo-64x64.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (quick / "kernel.js").write_text("// kernel.js\n")
    (quick / "sub").mkdir()
    (quick / "sub" / "file.txt").write_text("inside\n")
    (kernelspec_dir / "secret.txt").write_text("outside every kernelspec\n")
    add_kernelspec(
        kernelspec_dir,
        "limited",
        {
            "argv": ["/bin/true"],
            "metadata": {
                "kernel_provisioner": {
                    "provisioner_name": "kernelfleet-local",
                    "config": {"authorized_users": ["alice"], "launch_timeout": 30},
                }
            },
        },
    )
    return kernelspec_dir


@pytest.fixture
async def fuzz_gateway(quick_specs: Path) -> AsyncIterator[Gateway]:
    """The gateway under fuzz: ``quick`` is the default kernelspec (a body naming none must
    not start a real kernel); the shared token is an admin, ``tok-alice`` is alice."""
    async with temp_gateway(
        KernelSpecCatalog={"default_kernel_name": "quick"},
        Authenticator={"user_tokens": {ALICE: "alice"}},
    ) as gw:
        yield gw
