"""The Docker backend's bookkeeping without an engine: which kernel an event or a task belongs
to, and what a listing after a reopened stream says (the engine tests cover the rest)."""

from __future__ import annotations

from typing import Any

import pytest

from kernelfleet.errors import LaunchFailed
from kernelfleet.provisioners.docker_backend import REMOVED_EXIT, DockerBackend
from kernelfleet.provisioners.docker_options import DockerOptions
from kernelfleet.provisioners.docker_spec import LABEL_NAME
from kernelfleet.transport.docker_api import Endpoint

KID = "0b6f9c1e-2a3b-4c5d-8e9f-0123456789ab"


class FakeApi:
    """Answers GETs from a table (the listing of containers)."""

    def __init__(self, answers: dict[str, Any]):
        self.answers = answers

    async def get(self, path: str, **params: str) -> Any:
        return self.answers.get(path)


def event(action: str, name: str, **attrs: str) -> dict[str, Any]:
    return {"Type": "container", "Action": action, "Actor": {"Attributes": {"name": name, **attrs}}}


def task(name: str, state: str, code: int = 0) -> dict[str, Any]:
    return {
        "Spec": {"ContainerSpec": {"Labels": {LABEL_NAME: name}}},
        "Status": {"State": state, "ContainerStatus": {"ExitCode": code}},
    }


async def test_an_old_containers_death_after_a_restart_does_not_end_the_new_one() -> None:
    backend = DockerBackend(Endpoint("unix:///nowhere.sock"))
    backend.watch(KID, f"kf-{KID}")
    new = backend.watch(KID, f"kf-{KID}-r1")
    backend._event(event("die", f"kf-{KID}", exitCode="137"))
    backend._event(event("destroy", f"kf-{KID}"))
    assert new.alive
    backend._event(event("oom", f"kf-{KID}-r1"))
    backend._event(event("die", f"kf-{KID}-r1", exitCode="137"))
    assert new.exit_code == 137 and new.reason() is not None and "memory" in new.reason()


async def test_a_task_container_is_routed_by_its_service_name() -> None:
    backend = DockerBackend(Endpoint("unix:///nowhere.sock"))
    w = backend.watch(KID, f"kf-{KID}", service=True)
    name = f"kf-{KID}.1.abcdef"
    backend._event(
        event("die", name, exitCode="3", **{"com.docker.swarm.service.name": f"kf-{KID}"})
    )
    assert w.exit_code == 3


async def test_services_end_with_their_task_or_when_no_task_is_left() -> None:
    backend = DockerBackend(Endpoint("unix:///nowhere.sock"))
    running = backend.watch("a", "kf-a", service=True)
    ended = backend.watch("b", "kf-b", service=True)
    gone = backend.watch("c", "kf-c", service=True)
    services = {w.name: w for w in (running, ended, gone)}
    backend.tasks_seen(
        services, [task("kf-a", "running"), task("kf-b", "failed", 9), task("kf-x", "failed")]
    )
    assert running.alive
    assert ended.exit_code == 9
    assert gone.exit_code == REMOVED_EXIT


async def test_a_reopened_stream_ends_vanished_containers_but_not_services_elsewhere() -> None:
    backend = DockerBackend(Endpoint("unix:///nowhere.sock"))
    listed = backend.watch("a", "kf-a")
    vanished = backend.watch("b", "kf-b")
    remote = backend.watch("c", "kf-c", service=True)
    for w in (listed, vanished, remote):
        w.started = True
    backend.api = FakeApi(  # type: ignore[assignment]
        {"/containers/json": [{"Names": ["/kf-a"], "Labels": {}, "State": "running", "Id": "1"}]}
    )
    await backend._reconcile()
    assert listed.alive and listed.started
    assert vanished.exit_code == REMOVED_EXIT
    assert remote.alive  # its task may run on another node: check() decides


@pytest.mark.parametrize(
    "bad",
    [
        {"kernel_uid": 0},
        {"kernel_gid": 0},
        {"cpus": "lots"},
        {"memory": "1 GB"},
        {"pids": 3},
        {"pids": 10**6},
    ],
)
def test_unusable_admin_defaults_are_refused_naming_the_option(bad: dict[str, Any]) -> None:
    with pytest.raises(LaunchFailed) as err:
        DockerOptions(image="kernelfleet.test/k:1", **bad).check_options("py")
    assert next(iter(bad)).split("_")[0] in err.value.message
