"""Kernelspecs and look-ups for kernels on the test engine (tests/docker/engine.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.docker.engine import DockerEngine

#: The engine's bridge address on the gateway's side: containers answer the listener there.
GATEWAY_IP = "10.92.0.1"
PYTHON_ARGV = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
MANAGED = "app.kubernetes.io/managed-by=kernelfleet"
KERNEL_LABEL = "io.kernelfleet.kernel-id"


def settings(engine: DockerEngine, image: str, **config: Any) -> dict[str, Any]:
    """The provisioner config of a kernelspec on the test engine."""
    return {"docker_host": engine.host, "image": image, "network": "bridge", **config}


def write_docker_spec(
    root: Path,
    name: str,
    engine: DockerEngine,
    image: str,
    *,
    argv: list[str] | None = None,
    language: str = "python",
    **config: Any,
) -> Path:
    """A Docker kernelspec under *root* (containers unless ``swarm=True``)."""
    from tests.conftest import add_kernelspec  # tests.conftest imports the engine fixtures

    spec: dict[str, Any] = {
        "argv": argv or PYTHON_ARGV,
        "language": language,
        "interrupt_mode": "message",
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": "kernelfleet-docker",
                "config": {"launch_timeout": 60, **settings(engine, image, **config)},
            }
        },
    }
    return add_kernelspec(root, name, spec)


def _filters(kernel_id: str | None) -> str:
    labels = [MANAGED, *([f"{KERNEL_LABEL}={kernel_id}"] if kernel_id else [])]
    return quote(json.dumps({"label": labels}))


def kernel_containers(engine: DockerEngine, kernel_id: str | None = None) -> list[dict[str, Any]]:
    """Containers of one kernel (or of every kernel), stopped ones too."""
    found = engine.api("GET", f"/containers/json?all=1&filters={_filters(kernel_id)}")
    return list(found or [])


def kernel_services(engine: DockerEngine, kernel_id: str | None = None) -> list[dict[str, Any]]:
    """Swarm services of one kernel (or of every kernel); [] when Swarm is off."""
    try:
        found = engine.api("GET", f"/services?filters={_filters(kernel_id)}")
    except Exception:
        return []
    return list(found or []) if isinstance(found, list) else []


def inspect(engine: DockerEngine, container: str) -> dict[str, Any]:
    found = engine.api("GET", f"/containers/{quote(container, safe='')}/json")
    assert isinstance(found, dict)
    return found
