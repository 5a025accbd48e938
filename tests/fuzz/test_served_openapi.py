"""schemathesis against the OpenAPI document the gateway serves (``GET /api/spec.yaml``).

The real gateway runs in a thread of this process (schemathesis' pytest integration makes
blocking calls). Every documented operation is called with generated requests, positive and
negative, under a fixed seed and a bounded number of examples per operation; the answers must
not be 5xx, and must match the document: documented status codes, content types, headers and
response schemas.

Kernels: the examples of the document start ``python3``, a real kernel, and one kernel is
running under the document's example kernel id, so the kernel operations also answer with
their success statuses. ``max_kernels`` bounds what the generated starts cost: past it, a start
is a quick 403.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from kernelfleet.gateway.app import Gateway
from tests.conftest import TOKEN, add_kernelspec, client_for, temp_gateway

schemathesis = pytest.importorskip("schemathesis")

#: The kernel id of the document's examples (components.parameters.KernelId).
EXAMPLE_KERNEL_ID = "6e7d2293-b825-464e-8d0f-a0e77d9e48b4"
SEED = 20261203
EXAMPLES_PER_OPERATION = 50
#: The whole run (every operation) must finish within this; it takes ~30 s on two cores.
RUN_BUDGET_SECONDS = 180.0


class ThreadedGateway:
    """A gateway (``temp_gateway``) on an event loop of its own, in a daemon thread."""

    def __init__(self, sections: dict[str, dict[str, Any]]) -> None:
        self.sections = sections
        self.gw: Gateway | None = None
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="fuzz-gateway", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with temp_gateway(**self.sections) as gw:
            self.gw = gw
            model = await client_for(gw).start_kernel(env={"KERNEL_ID": EXAMPLE_KERNEL_ID})
            assert model["id"] == EXAMPLE_KERNEL_ID
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Gateway:
        self.thread.start()
        self._ready.wait(120)
        if self._error is not None or self.gw is None:
            raise RuntimeError(f"the gateway did not start: {self._error!r}")
        return self.gw

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(120)
        assert not self.thread.is_alive(), "the gateway did not stop"
        if self._error is not None:
            raise self._error


@dataclass(frozen=True)
class Served:
    gw: Gateway
    started: float  # time.monotonic() when the run began

    @property
    def url(self) -> str:
        return self.gw.url


@pytest.fixture(scope="module")
def served_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("openapi")
    jupyter = root / "jupyter"
    kdir = add_kernelspec(jupyter, "python3", {"display_name": "Python 3"})
    logo = Path(sys.prefix) / "share/jupyter/kernels/python3/logo-64x64.png"
    if logo.exists():
        (kdir / "logo-64x64.png").write_bytes(logo.read_bytes())
    (kdir / "kernel.js").write_text("// kernel.js\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JUPYTER_PATH", str(jupyter))
        env.setenv("JUPYTER_DATA_DIR", str(root / "data"))
        env.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))
        with ThreadedGateway({"KernelRegistry": {"max_kernels": 3}}) as gw:
            yield Served(gw, time.monotonic())


def load_document() -> dict[str, Any]:
    text = resources.files("kernelfleet.gateway").joinpath("openapi.yaml").read_text("utf-8")
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        # as the document's tokenHeader scheme, so that schemathesis also checks that a
        # request without it (or with a wrong one) is refused
        "auth": {"openapi": {"tokenHeader": {"api_key": f"token {TOKEN}"}}},
        "request-timeout": 60,
        "generation": {
            "max-examples": EXAMPLES_PER_OPERATION,
            "deterministic": True,
            "with-security-parameters": False,  # the token above, not generated ones
        },
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "positive_data_acceptance": {"enabled": False},
            "negative_data_rejection": {"enabled": False},
        },
    }
)
#: The packaged document; test_the_served_document_is_the_packaged_one checks it is the one
#: the gateway serves. (schemathesis' lazy fixture loader does not work with pytest 9.)
schema = schemathesis.openapi.from_dict(load_document(), config=CONFIG)


def test_the_served_document_is_the_packaged_one(served_gateway: Served) -> None:
    answer = requests.get(
        served_gateway.url + "api/spec.yaml",
        headers={"Authorization": f"token {TOKEN}"},
        timeout=30,
    )
    assert answer.status_code == 200
    assert yaml.safe_load(answer.text) == load_document()


def admin(gw: Served, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(
        method,
        gw.url + path,
        json=body,
        headers={"Authorization": f"token {TOKEN}"},
        timeout=120,
    )


def ensure_example_kernel(gw: Served) -> None:
    """The kernel of the document's example id runs (a DELETE generated earlier stops it),
    so interrupt, restart and logs also answer for a live kernel."""
    if admin(gw, "GET", f"api/kernels/{EXAMPLE_KERNEL_ID}").status_code == 404:
        body = {"name": "python3", "env": {"KERNEL_ID": EXAMPLE_KERNEL_ID}}
        answer = admin(gw, "POST", "api/kernels", body)
        assert answer.status_code == 201, answer.text


@schema.parametrize()
def test_the_served_api_keeps_to_its_document(case: Any, served_gateway: Served) -> None:
    elapsed = time.monotonic() - served_gateway.started
    assert elapsed < RUN_BUDGET_SECONDS, f"the run is over its budget ({elapsed:.0f} s)"
    ensure_example_kernel(served_gateway)
    case.call_and_validate(base_url=served_gateway.url.rstrip("/"))


def test_the_gateway_still_serves_after_the_run(served_gateway: Served) -> None:
    answer = requests.get(
        served_gateway.url + "api", headers={"Authorization": f"token {TOKEN}"}, timeout=30
    )
    assert answer.status_code == 200 and answer.json()["kernelfleet_version"]


def test_a_405_names_the_allowed_methods(served_gateway: Served) -> None:
    for method, path, allowed in (
        ("DELETE", "api", {"GET"}),
        ("PUT", "api/kernels", {"GET", "POST"}),
    ):
        answer = admin(served_gateway, method, path)
        assert answer.status_code == 405
        assert allowed <= {m.strip() for m in answer.headers.get("Allow", "").split(",")}
