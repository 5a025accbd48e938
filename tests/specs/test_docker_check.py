"""``kernelfleet hosts check`` of a Docker kernelspec: what the engine's answers mean (each fault
one row, cause then fix; the socket's root-equivalence a warning that leaves the engine ready),
the whole command against an engine that is not there, and runs against the real engine of
tests/docker (marker ``docker``): a good spec, a missing image, a missing network, the engine
stopped, and Swarm mode on an engine that is not in a swarm."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.cli.hosts import CheckApp
from kernelfleet.cli.spec import SpecApp
from kernelfleet.specs import dockercheck
from kernelfleet.specs.dockercheck import WARN, DockerTarget, EngineFacts, SocketFacts
from kernelfleet.specs.verdicts import FAIL, OK, SKIP, HostReport
from kernelfleet.transport.docker_api import DockerError, Endpoint
from tests.docker.engine import DockerEngine
from tests.specs.test_yarn_kind import kf

HOST = "unix:///run/kf-docker/docker.sock"
IMAGE = "kernelfleet.test/kernel-python:0.1.0"
VERSION = {"Version": "26.1.5", "ApiVersion": "1.45", "Os": "linux", "Arch": "amd64"}
INFO = {"OperatingSystem": "Debian GNU/Linux 13", "Name": "box", "SecurityOptions": []}
SOCKET = SocketFacts("/run/kf-docker/docker.sock", True, True, 0o660, "root", "docker", True, "kf")


def target(**kw: Any) -> DockerTarget:
    values: dict[str, Any] = {"spec": "docker_python", "endpoint": Endpoint(HOST), "image": IMAGE}
    values.update(kw)
    return DockerTarget(**values)


def image(**kw: Any) -> dict[str, Any]:
    return {"Id": "sha256:" + "ab" * 32, "Size": 123_000_000, "Os": "linux",
            "Architecture": "amd64", **kw}  # fmt: skip


def facts(**kw: Any) -> EngineFacts:
    values: dict[str, Any] = {
        "ping": "OK",
        "version": VERSION,
        "info": INFO,
        "images": {IMAGE: image()},
        "network": {"Name": "bridge", "Driver": "bridge", "Scope": "local"},
        "socket": SOCKET,
    }
    values.update(kw)
    return EngineFacts(**values)


def rows(report: HostReport) -> list[tuple[str, str, str, str]]:
    return [(c.name, c.status, c.detail, c.fix) for c in report.checks]


def one(record: Any, *args: Any) -> tuple[str, str, str]:
    """The single row *record* adds: (status, detail, fix)."""
    report = HostReport("e")
    record(report, *args)
    ((_, status, detail, fix),) = rows(report)
    return status, detail, fix


# -- the engine and its version -------------------------------------------------------------------


def test_an_engine_that_answers_is_named_with_its_version_and_system() -> None:
    report = HostReport("e")
    assert dockercheck.record_engine(report, target(), facts())
    assert rows(report) == [("engine", OK, f"{HOST}: Docker 26.1.5 (Debian GNU/Linux 13, box)", "")]
    rootless = facts(info={**INFO, "SecurityOptions": ["name=seccomp", "name=rootless"]})
    assert one(dockercheck.record_engine, target(), rootless)[1].endswith("box, rootless)")


def test_an_engine_that_does_not_answer_says_why_and_how_to_start_it() -> None:
    gone = DockerError(0, f"the Docker engine at {HOST} cannot be reached (No such file)")
    status, detail, fix = one(
        dockercheck.record_engine,
        target(),
        facts(ping=gone, socket=SocketFacts(SOCKET.path, False)),
    )
    assert (status, detail) == (FAIL, gone.message)
    assert fix.startswith("start dockerd (systemctl start docker)") and "KF_DOCKER_HOST" in fix
    _, _, fix = one(dockercheck.record_engine, target(), facts(ping=gone))
    assert fix.startswith("start dockerd") and "no engine answers on it" in fix
    denied = SocketFacts(SOCKET.path, True, True, 0o660, "root", "docker", False, "kf")
    _, _, fix = one(dockercheck.record_engine, target(), facts(ping=gone, socket=denied))
    assert fix.startswith(f"the gateway's user kf may not use {SOCKET.path} (owner root:docker")
    assert "add it to group docker, which makes it root-equivalent" in fix
    tcp = target(endpoint=Endpoint("tcp://10.0.0.5:2376", "/ca.pem", "/c.pem", "/k.pem"))
    ssl = DockerError(0, "the Docker engine at tcp://10.0.0.5:2376 failed: SSLError(certificate)")
    assert one(dockercheck.record_engine, tcp, facts(ping=ssl, socket=None))[2].startswith(
        "--tls-ca must hold the CA"
    )
    refused = DockerError(0, "the Docker engine at tcp://10.0.0.5:2376 cannot be reached")
    assert one(dockercheck.record_engine, tcp, facts(ping=refused, socket=None))[2].startswith(
        "start dockerd with -H tcp://10.0.0.5:2376"
    )
    status, detail, _ = one(dockercheck.record_engine, tcp, facts(ping=DockerError(404, "nope")))
    assert (status, detail) == (
        FAIL,
        "tcp://10.0.0.5:2376 answered, but not as a Docker engine: 404: nope",
    )


def test_the_api_must_be_1_41_or_later() -> None:
    assert one(dockercheck.record_version, facts()) == (
        OK, "Docker 26.1.5, API 1.45 (kernelfleet speaks 1.41)", ""
    )  # fmt: skip
    status, detail, fix = one(
        dockercheck.record_version, facts(version={**VERSION, "ApiVersion": "1.40"})
    )
    assert (status, detail) == (
        FAIL,
        "Docker 26.1.5, API 1.40: kernelfleet needs API 1.41 or later",
    )
    assert fix.startswith("upgrade the engine to Docker 20.10 or later")
    too_old = DockerError(
        400, "client version 1.41 is too new. Maximum supported API version is 1.40"
    )
    report = HostReport("e")
    assert dockercheck.record_engine(report, target(), facts(ping=too_old, version=None))
    dockercheck.record_version(report, facts(ping=too_old, version=None))
    assert [r[:2] for r in rows(report)] == [("engine", OK), ("version", FAIL)]
    assert "Maximum supported API version is 1.40" in rows(report)[1][2]
    assert dockercheck.api_version("1.41") == (1, 41) and dockercheck.api_version("x.1") is None


# -- image, network, swarm ------------------------------------------------------------------------


def test_the_image_on_the_engine_or_how_to_load_it() -> None:
    allowed = "kernelfleet.test/kernel-r:0.1.0-abc"
    t = target(allowed_images=(allowed,))
    status, detail, _ = one(
        dockercheck.record_image, t, facts(images={IMAGE: image(), allowed: image()})
    )
    assert (
        status == OK
        and detail == f"{IMAGE} (abababababab, 123 MB); {allowed} (abababababab, 123 MB)"
    )
    missing = facts(images={IMAGE: image(), allowed: DockerError(404, "No such image")})
    assert one(dockercheck.record_image, t, missing) == (
        FAIL,
        f"image {allowed} is not on the engine {HOST}",
        f"load it: kernelfleet image import r --docker-host={HOST} (or docker -H {HOST} load "
        "-i ARCHIVE); kernelfleet never pulls",
    )
    swarm = target(image="reg:5000/mine:1", swarm=True)
    _, _, fix = one(
        dockercheck.record_image, swarm, facts(images={"reg:5000/mine:1": DockerError(404, "x")})
    )
    assert "image import ARCHIVE" in fix and "on every Swarm node that may run kernels" in fix
    arm = facts(images={IMAGE: image(Architecture="arm64")})
    assert one(dockercheck.record_image, target(), arm)[:2] == (
        FAIL, f"image {IMAGE} is for linux/arm64, the engine runs linux/amd64"
    )  # fmt: skip
    assert one(dockercheck.record_image, target(image=""), facts())[:2] == (
        FAIL, "the kernelspec names no image"
    )  # fmt: skip


def test_a_missing_network_or_one_plain_containers_cannot_join_is_a_fault() -> None:
    gone = DockerError(404, "network kernels not found")
    status, detail, fix = one(dockercheck.record_network, target(network="kernels"), gone)
    assert (status, detail) == (FAIL, f"network kernels does not exist on the engine {HOST}")
    assert fix.startswith(f"docker -H {HOST} network create kernels, or reinstall")
    _, _, fix = one(dockercheck.record_network, target(network="kernels", swarm=True), gone)
    assert fix.startswith(f"docker -H {HOST} network create --driver overlay --attachable kernels")
    overlay = {"Name": "ov", "Driver": "overlay", "Scope": "swarm", "Attachable": False}
    status, detail, _ = one(dockercheck.record_network, target(network="ov"), overlay)
    assert status == FAIL and "not attachable" in detail
    assert one(dockercheck.record_network, target(network="ov", swarm=True), overlay)[0] == OK
    assert one(dockercheck.record_network, target(), facts().network) == (
        OK, "bridge exists (driver bridge, scope local)", ""
    )  # fmt: skip


def swarm_info(state: str = "active", manager: bool = True) -> dict[str, Any]:
    return {**INFO, "Swarm": {"LocalNodeState": state, "ControlAvailable": manager}}


def node(state: str = "ready", availability: str = "active") -> dict[str, Any]:
    return {"Status": {"State": state}, "Spec": {"Availability": availability}}


def test_swarm_mode_needs_an_active_manager_with_a_ready_node() -> None:
    t = target(swarm=True, placement=("node.role==worker",))
    assert one(dockercheck.record_swarm, target(), INFO, None)[:2] == (
        SKIP, "not used: kernels are plain containers"
    )  # fmt: skip
    status, detail, fix = one(dockercheck.record_swarm, t, swarm_info("inactive", False), None)
    assert (status, detail) == (
        FAIL,
        f"the engine {HOST} is not in a swarm (Swarm state inactive), and the spec runs kernels "
        "as Swarm services",
    )
    assert fix == (
        f"make it a manager: docker -H {HOST} swarm init; or reinstall the spec without --swarm "
        "(and --replace)"
    )
    status, detail, fix = one(dockercheck.record_swarm, t, swarm_info(manager=False), [])
    assert (
        status == FAIL and "is a Swarm worker, not a manager" in detail and "docker node ls" in fix
    )
    assert "docker swarm unlock" in one(dockercheck.record_swarm, t, swarm_info("locked"), [])[2]
    down = [node("down"), node(availability="drain")]
    assert one(dockercheck.record_swarm, t, swarm_info(), down)[:2] == (
        FAIL, "none of the swarm's 2 nodes is ready and active"
    )  # fmt: skip
    assert one(dockercheck.record_swarm, t, swarm_info(), [node(), node("down")]) == (
        OK,
        "a manager of a swarm of 2 nodes, 1 ready and active; placement node.role==worker (not "
        "matched against the nodes here)",
        "",
    )


# -- the socket: a warning, not a fault -----------------------------------------------------------


def test_who_can_use_the_engine_is_said_and_leaves_the_engine_ready() -> None:
    status, detail, advice = one(dockercheck.record_socket, target(), facts())
    assert status == WARN
    assert detail == (
        f"the gateway's user kf can use {SOCKET.path} (owner root:docker, mode 0660): that is "
        "root on this machine (a container it starts can mount / and run as root)"
    )
    assert advice.startswith("keep that account for the gateway alone")
    open_to_all = SocketFacts(SOCKET.path, True, True, 0o666, "root", "docker", True, "kf")
    status, detail, advice = one(dockercheck.record_socket, target(), facts(socket=open_to_all))
    assert "and so can every user of this machine" in detail
    assert advice.startswith(f"chmod o-rw {SOCKET.path}; ")
    rootless = facts(info={**INFO, "SecurityOptions": ["name=rootless"]})
    assert one(dockercheck.record_socket, target(), rootless)[0] == OK
    tcp = target(endpoint=Endpoint("tcp://10.0.0.5:2375"))
    status, detail, _ = one(dockercheck.record_socket, tcp, facts(socket=None))
    assert status == WARN and detail.endswith("whoever reaches it is root on the engine's machine")
    tls = target(endpoint=Endpoint("tcp://10.0.0.5:2376", "/ca.pem", "/c.pem", "/k.pem"))
    assert one(dockercheck.record_socket, tls, facts(socket=None))[0] == OK
    gone = SocketFacts(SOCKET.path, False)
    assert one(dockercheck.record_socket, target(), facts(socket=gone))[0] == SKIP

    report = HostReport(HOST)
    report.add("engine", OK, "up")
    dockercheck.record_socket(report, target(), facts())
    assert report.ready
    names = dockercheck.DOCKER_CHECK_NAMES
    assert dockercheck.summary_rows([report], names) == [
        [HOST, "ready", "ok", "-", "-", "-", "-", "WARN"]
    ]
    lines = dockercheck.report_lines([report])
    assert lines[0].startswith(f"{HOST}: socket: warning: the gateway's user kf can use")
    assert lines[1].startswith("    advice: keep that account")


def test_socket_facts_are_what_this_user_sees_of_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "engine.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        os.chmod(path, 0o660)
        seen = dockercheck.socket_facts(str(path))
    assert seen.exists and seen.is_socket and seen.mode == 0o660 and seen.usable
    assert seen.owner == seen.user  # this process made it
    assert not dockercheck.socket_facts(str(tmp_path / "gone")).exists


# -- the command, without an engine ---------------------------------------------------------------


@pytest.fixture
def home(prefix: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith(("KF_DOCKER_", "KF_CHECK_", "DOCKER_")):
            monkeypatch.delenv(name)
    return prefix


def install(home: Path, name: str, *argv: str) -> None:
    code, _, err = kf(SpecApp, "install", "docker", f"--prefix={home}", f"--kernel-name={name}",
                      *argv)  # fmt: skip
    assert code == 0, err


def check(home: Path, name: str) -> tuple[int, dict[str, dict[str, str]], str]:
    """(exit status, the check rows by name, the host column) of ``hosts check --json``."""
    code, out, err = kf(CheckApp, f"--spec={name}", f"--prefix={home}", "--json")
    assert out, err
    (engine,) = json.loads(out)["hosts"]
    by_name = {row["name"]: row for row in engine["checks"]}
    assert len(by_name) == len(engine["checks"]), engine  # one row per check on these engines
    assert list(by_name) == list(dockercheck.DOCKER_CHECK_NAMES)
    return code, by_name, engine["host"]


def test_hosts_check_of_a_docker_spec_whose_engine_is_not_there(home: Path, tmp_path: Path) -> None:
    """A real refusal: no socket at the path, so the engine row fails with cause and fix, the
    rows that need the engine are skipped; exit status 1."""
    where = f"unix://{tmp_path}/docker.sock"
    install(home, "docker_nope", f"--image={IMAGE}", f"--docker-host={where}")
    code, checks, host = check(home, "docker_nope")
    assert code == 1 and host == where
    engine = checks["engine"]
    assert engine["status"] == FAIL and f"{tmp_path}/docker.sock" in engine["detail"]
    assert engine["fix"].startswith("start dockerd (systemctl start docker), or point the spec")
    assert [checks[n]["status"] for n in ("version", "image", "network", "swarm", "socket")] == [
        SKIP
    ] * 5

    code, out, _ = kf(CheckApp, "--spec=docker_nope", f"--prefix={home}")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == [
        "ENGINE", "STATUS", "ENGINE", "VERSION", "IMAGE", "NETWORK", "SWARM", "SOCKET",
    ]  # fmt: skip
    assert lines[1].split() == [where, "NOT", "READY", "FAIL", "-", "-", "-", "-", "-"]
    assert lines[-1] == "Docker engine NOT READY for docker_nope"

    code, _, err = kf(CheckApp, "--spec=docker_nope", f"--prefix={home}", "--hosts=h1")
    assert code == 2 and "--hosts does not apply to kernelspec docker_nope" in err


def test_a_tls_file_that_is_not_there_is_the_engine_rows_fault(home: Path, tmp_path: Path) -> None:
    install(home, "docker_tls", f"--image={IMAGE}", "--docker-host=tcp://127.0.0.1:9",
            f"--tls-ca={tmp_path}/gone.pem")  # fmt: skip
    code, checks, _ = check(home, "docker_tls")
    assert code == 1 and checks["engine"]["status"] == FAIL
    assert f"{tmp_path}/gone.pem" in checks["engine"]["detail"]
    assert checks["engine"]["fix"].startswith("fix the engine's address or the TLS files")


# -- the real engine ------------------------------------------------------------------------------


@pytest.fixture
def engine(docker_engine: DockerEngine) -> Iterator[DockerEngine]:
    """The session's engine, answering, and not in a swarm (a test before may have made it a
    manager)."""
    if not docker_engine.ping():
        docker_engine.start_engine()
    if docker_engine.swarm_state() == "active":
        docker_engine.docker("swarm", "leave", "--force")
    yield docker_engine
    if not docker_engine.ping():  # whatever the test did, the next one gets an engine
        docker_engine.start_engine()


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_hosts_check_against_the_real_engine(engine: DockerEngine, home: Path) -> None:
    """A good spec is ready (the socket's root-equivalence a warning); a missing image is named
    with the import that loads it; a missing network with the command that makes it; Swarm mode
    on an engine that is not in a swarm says so."""
    busybox = engine.import_busybox()
    assert engine.host == HOST
    install(home, "docker_good", f"--image={busybox}", f"--docker-host={engine.host}")
    code, checks, host = check(home, "docker_good")
    assert code == 0, checks
    assert host == HOST
    assert checks["engine"]["status"] == OK and checks["engine"]["detail"].startswith(
        f"{HOST}: Docker "
    ), checks
    assert (
        checks["version"]["status"] == OK
        and "(kernelfleet speaks 1.41)" in checks["version"]["detail"]
    )
    assert checks["image"]["status"] == OK and checks["image"]["detail"].startswith(f"{busybox} (")
    assert checks["network"] == {
        "name": "network", "status": OK, "detail": "bridge exists (driver bridge, scope local)"
    }  # fmt: skip
    assert checks["swarm"]["status"] == SKIP
    socket_row = checks["socket"]
    assert socket_row["status"] == WARN, socket_row
    assert socket_row["detail"].startswith(
        f"the gateway's user root can use {engine.socket_path} (owner root:"
    ), socket_row
    assert "that is root on this machine" in socket_row["detail"]
    assert socket_row["fix"].startswith("run the gateway as an account of its own in that group")
    code, out, _ = kf(CheckApp, "--spec=docker_good", f"--prefix={home}")
    assert code == 0
    assert "socket: warning: the gateway's user root can use" in out
    assert out.splitlines()[-1] == "Docker engine ready for docker_good"

    missing = "kernelfleet.test/kernel-python:0.0.0-not-loaded"
    install(home, "docker_missing", f"--image={missing}", f"--allowed-images={busybox}",
            f"--docker-host={engine.host}")  # fmt: skip
    code, checks, _ = check(home, "docker_missing")
    assert code == 1
    assert checks["image"] == {
        "name": "image",
        "status": FAIL,
        "detail": f"image {missing} is not on the engine {HOST}",
        "fix": f"load it: kernelfleet image import python --docker-host={HOST} (or docker -H "
        f"{HOST} load -i ARCHIVE); kernelfleet never pulls",
    }
    assert all(checks[n]["status"] == OK for n in ("engine", "version", "network"))

    install(home, "docker_nonet", f"--image={busybox}", "--network=kf-check-nonet",
            f"--docker-host={engine.host}")  # fmt: skip
    code, checks, _ = check(home, "docker_nonet")
    assert code == 1
    assert checks["network"]["status"] == FAIL
    assert (
        checks["network"]["detail"] == f"network kf-check-nonet does not exist on the engine {HOST}"
    )
    assert checks["network"]["fix"].startswith(f"docker -H {HOST} network create kf-check-nonet")
    assert checks["image"]["status"] == OK

    install(home, "docker_swarm", f"--image={busybox}", "--swarm", f"--docker-host={engine.host}")
    code, checks, _ = check(home, "docker_swarm")
    assert code == 1
    assert checks["swarm"]["status"] == FAIL
    assert checks["swarm"]["detail"] == (
        f"the engine {HOST} is not in a swarm (Swarm state inactive), and the spec runs kernels "
        "as Swarm services"
    )
    assert checks["swarm"]["fix"].startswith(f"make it a manager: docker -H {HOST} swarm init")


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_hosts_check_of_a_swarm_spec_on_a_manager(docker_swarm: DockerEngine, home: Path) -> None:
    busybox = docker_swarm.import_busybox()
    install(home, "docker_manager", f"--image={busybox}", "--swarm",
            "--placement=node.role==manager", f"--docker-host={docker_swarm.host}")  # fmt: skip
    code, checks, _ = check(home, "docker_manager")
    assert code == 0, checks
    assert checks["swarm"] == {
        "name": "swarm",
        "status": OK,
        "detail": "a manager of a swarm of 1 node, 1 ready and active; placement "
        "node.role==manager (not matched against the nodes here)",
    }
    assert checks["image"]["detail"].endswith(
        "(on this manager: the nodes that run kernels need it too)"
    )


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_hosts_check_of_a_stopped_engine_says_to_start_it(engine: DockerEngine, home: Path) -> None:
    install(home, "docker_stopped", f"--image={IMAGE}", f"--docker-host={engine.host}")
    engine.stop_engine()
    try:
        code, checks, _ = check(home, "docker_stopped")
    finally:
        engine.start_engine()
    assert code == 1
    row = checks["engine"]
    assert row["status"] == FAIL and row["detail"].startswith(
        f"the Docker engine at {HOST} cannot be reached"
    ), row
    assert row["fix"].startswith("start dockerd (systemctl start docker)"), row
    assert "KF_DOCKER_HOST" in row["fix"]
    assert [checks[n]["status"] for n in ("version", "image", "network", "swarm")] == [SKIP] * 4
    assert engine.ping()  # and it answers again for whatever runs next
