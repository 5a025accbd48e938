"""The Docker testbed itself (tests/docker/engine.py): the engine on its own socket and data
root, containers on ``kfdock0`` both ways, the kernel image under any uid, a Swarm service on
the ``bridge`` network, and teardown that leaves nothing running, mounted or linked."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.docker.engine import (
    BRIDGE,
    CGROUP_PARENT,
    GATEWAY_IP,
    GWBRIDGE,
    MANAGED_BY,
    SUBNET,
    DockerApiError,
    DockerEngine,
    read_sysctls,
)
from tests.k8s.node import alive, mounts_under
from tests.testbed import wait_for

pytestmark = pytest.mark.docker

LABEL = "=".join(MANAGED_BY)


@pytest.fixture(scope="module")
def busybox(docker_engine: DockerEngine) -> str:
    return docker_engine.import_busybox()


def run_detached(engine: DockerEngine, image: str, *command: str) -> str:
    """Start a labelled container running *command*; its id."""
    done = engine.docker(
        "run", "-d", "--label", LABEL, "--entrypoint", command[0], image, *command[1:]
    )
    return done.stdout.strip()


def create_service(engine: DockerEngine, name: str, image: str, command: list[str]) -> str:
    """A one-replica service on ``bridge`` that is never restarted, through the raw API (no
    registry look-up: the API resolves nothing unless asked); its id."""
    spec = {
        "Name": name,
        "Labels": dict([MANAGED_BY]),
        "TaskTemplate": {
            "ContainerSpec": {"Image": image, "Command": command, "Labels": dict([MANAGED_BY])},
            "RestartPolicy": {"Condition": "none"},
            "Networks": [{"Target": "bridge"}],
        },
        "Mode": {"Replicated": {"Replicas": 1}},
    }
    created: dict[str, Any] = engine.api("POST", "/services/create", spec)
    return str(created["ID"])


def remove_service(engine: DockerEngine, service: str) -> None:
    """Delete *service* and kill its task's container now (Swarm would give a PID 1 that
    ignores SIGTERM its full stop grace period)."""
    engine.api("DELETE", f"/services/{service}")
    for container in engine.containers(f"com.docker.swarm.service.id={service}"):
        with contextlib.suppress(DockerApiError):  # swarm may have removed it already
            engine.api("DELETE", f"/containers/{container['Id']}?force=1")


def running_task(engine: DockerEngine, service: str, limit: float = 30) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        for task in engine.service_tasks(service):
            state = task["Status"]["State"]
            if state in ("failed", "rejected", "complete", "shutdown"):
                raise AssertionError(f"task of {service} ended: {task['Status']}")
            if state == "running":
                return task
        return None

    task: dict[str, Any] = wait_for(
        running, limit, f"no running task of {service}", engine.log_tails
    )
    return task


def our_processes(engine: DockerEngine) -> list[str]:
    """Processes with the state dir or the data root among their arguments."""
    markers = (f"{engine.dir}/".encode(), str(engine.data_root).encode())
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if any(m in argv for m in markers) and alive(int(proc.name)):
            words = argv.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{proc.name}: {words}")
    return found


def test_the_engine_answers_on_its_own_socket_with_its_own_bridge(
    docker_engine: DockerEngine,
) -> None:
    assert docker_engine.ping()
    version = docker_engine.api("GET", "/version")
    assert version["Version"].startswith("20.10.") and version["ApiVersion"] == "1.41", version
    info = docker_engine.api("GET", "/info")
    assert info["DockerRootDir"] == str(docker_engine.data_root), info["DockerRootDir"]
    assert info["Driver"] == "overlay2", info["Driver"]
    bridge = docker_engine.api("GET", "/networks/bridge")
    assert bridge["Options"]["com.docker.network.bridge.name"] == BRIDGE, bridge["Options"]
    assert [c["Subnet"] for c in bridge["IPAM"]["Config"]] == [str(SUBNET)], bridge["IPAM"]
    # ip_forward aside: the Kubernetes testbed's CNI bridge turns it on for its pods meanwhile
    recorded = json.loads((docker_engine.dir / "sysctls.json").read_text())
    now = read_sysctls()
    for snapshot in (recorded, now):
        snapshot.pop("net.ipv4.ip_forward", None)
    assert now == recorded


def test_a_container_on_the_bridge_reaches_the_gateway_side(
    docker_engine: DockerEngine, busybox: str
) -> None:
    with socket.create_server((GATEWAY_IP, 0)) as listener:
        listener.settimeout(15)
        port = listener.getsockname()[1]
        script = f"echo hello | nc {GATEWAY_IP} {port}; sleep 60"
        container = run_detached(docker_engine, busybox, "sh", "-c", script)
        try:
            address = docker_engine.container_ip(container)
            assert address is not None and ipaddress.ip_address(address) in SUBNET, address
            assert address != GATEWAY_IP
            conn, peer = listener.accept()
            with conn:
                conn.settimeout(10)
                assert conn.recv(100) == b"hello\n"
            assert peer[0] == address, (peer, address)
        finally:
            docker_engine.docker("rm", "-f", container)


@pytest.mark.parametrize("user", [None, "2001:2001"], ids=["image-user", "any-uid"])
def test_the_kernel_image_imports_ipykernel_as_any_uid(
    docker_engine: DockerEngine, docker_kernel_image: str, user: str | None
) -> None:
    assert docker_kernel_image in docker_engine.images()
    code = "import ipykernel, os; print(os.getuid(), os.getgid(), os.access('/tmp', os.W_OK))"
    done = docker_engine.docker(
        "run", "--rm", "--network", "none",
        *(["--user", user] if user else []),
        "--entrypoint", "python3", docker_kernel_image, "-c", code,
    )  # fmt: skip
    expected = "2001 2001 True" if user else "1000 1000 True"
    assert done.stdout.strip() == expected, done


def test_a_swarm_service_on_the_bridge_network_is_reached_through_its_container(
    docker_swarm: DockerEngine, docker_kernel_image: str
) -> None:
    engine = docker_swarm
    serve = (
        "import socket, time\n"
        "s = socket.create_server(('0.0.0.0', 8000))\n"
        "c, _ = s.accept(); c.sendall(b'from-task'); c.close(); time.sleep(300)\n"
    )
    # by ID: a tag would have dockerd try a registry first (a pull nobody asked for)
    image_id = engine.api("GET", f"/images/{docker_kernel_image}/json")["Id"]
    service = create_service(engine, "kf-engine-test", image_id, ["python3", "-c", serve])
    try:
        task = running_task(engine, service)
        # Docker 20.10 gives no address on the predefined network in the task itself
        assert not any(a.get("Addresses") for a in task.get("NetworksAttachments") or []), task
        address = engine.task_container_ip(task)
        assert address is not None and ipaddress.ip_address(address) in SUBNET, address

        def dial() -> bytes:
            with socket.create_connection((address, 8000), timeout=2) as conn:
                return conn.recv(100)

        assert wait_for(dial, 15, f"no answer from the task at {address}:8000") == b"from-task"
        assert "pulling image failed" not in engine.log_tails(100_000)  # no registry asked
    finally:
        remove_service(engine, service)


def test_a_stopped_engine_stops_answering_and_starts_again(
    docker_engine: DockerEngine, busybox: str
) -> None:
    docker_engine.stop_engine()
    try:
        assert not docker_engine.ping()
        assert docker_engine.status()["dockerd"] is None
        assert Path("/sys/class/net", BRIDGE).exists()
    finally:
        docker_engine.start_engine()
    assert busybox in docker_engine.images()


def test_up_after_a_killed_engine_removes_what_it_left(
    docker_engine: DockerEngine, busybox: str
) -> None:
    container = run_detached(docker_engine, busybox, "sleep", "300")
    pid = docker_engine.api("GET", f"/containers/{container}/json")["State"]["Pid"]
    dockerd = docker_engine.status()["dockerd"]
    os.kill(dockerd, signal.SIGKILL)
    docker_engine.up()  # as the next session would (this one holds the lock already)
    assert not alive(pid)
    assert docker_engine.ping() and docker_engine.containers() == []


def test_down_leaves_no_bridge_mount_process_or_cgroup(
    docker_swarm: DockerEngine, busybox: str
) -> None:
    engine = docker_swarm
    sysctls = read_sysctls()
    run_detached(engine, busybox, "sleep", "300")
    running_task(engine, create_service(engine, "kf-engine-down", busybox, ["sleep", "300"]))
    assert Path("/sys/class/net", GWBRIDGE).exists()  # made for the swarm
    assert mounts_under(engine.dir) and mounts_under(engine.data_root)
    try:
        engine.down()
        assert not Path("/sys/class/net", BRIDGE).exists()
        assert not Path("/sys/class/net", GWBRIDGE).exists()
        assert mounts_under(engine.dir) == [] and mounts_under(engine.data_root) == []
        assert our_processes(engine) == []
        assert not list(Path("/sys/fs/cgroup").glob(f"*/{CGROUP_PARENT}"))
        assert not Path("/sys/fs/cgroup", CGROUP_PARENT).exists()
        assert not engine.dir.exists()
        assert read_sysctls() == sysctls
    finally:
        engine.up()  # for the rest of the session
    assert busybox in engine.images()  # the data root stays
