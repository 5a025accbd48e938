"""The remote-provisioner base with in-process toy backends: checkpoints, aborts, the clock.

Failures are injected with tiny subclasses parametrized by the stage they fail at; each test
asserts on what ``do_abort`` received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpec

from kernelfleet.errors import LaunchTimeout
from kernelfleet.provisioners.base import LaunchTerms, close_backends
from kernelfleet.provisioners.remote import RemoteProvisioner

CONN = {
    "ip": "127.0.0.1",
    "transport": "tcp",
    "key": "k",
    "signature_scheme": "hmac-sha256",
    "shell_port": 1,
    "iopub_port": 2,
    "stdin_port": 3,
    "control_port": 4,
    "hb_port": 5,
}


class ToyWatch:
    def __init__(self) -> None:
        self.exit_code: int | None = None
        self.exited = asyncio.Event()

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    def mark_exited(self, code: int | None) -> None:
        self.exit_code = -1 if code is None else code
        self.exited.set()


class ToyProvisioner(RemoteProvisioner):
    """Creates "resource-N" then answers; ``fail_stage`` raises after that many checkpoints."""

    fail_stage: int | None = None
    hang_at: int | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aborted: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.time_left_seen: float | None = None

    async def do_launch(
        self, cmd: list[str], env: dict[str, str], cwd: str | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        self.time_left_seen = self.time_left()
        if self.fail_stage == 0:
            raise RuntimeError("refused before anything was created")
        yield {"resource": "resource-1"}
        if self.hang_at == 1:
            await asyncio.sleep(3600)
        if self.fail_stage == 1:
            raise RuntimeError("the resource never answered")
        self.watch = ToyWatch()
        yield {"connection_info": dict(CONN)}

    async def do_signal(self, signum: int) -> None:
        self.calls.append(f"signal {signum}")

    async def do_stop(self, signum: int) -> None:
        self.calls.append(f"stop {signum}")
        if self.watch is not None:
            self.watch.mark_exited(-signum)

    async def do_abort(self) -> None:
        self.aborted.append(dict(self.checkpoint))

    async def do_cleanup(self, restart: bool) -> None:
        self.calls.append(f"cleanup restart={restart}")


def toy(cls: type[ToyProvisioner] = ToyProvisioner, **config: Any) -> ToyProvisioner:
    spec = KernelSpec(argv=["k", "{kernel_id}", "{connection_file}"], display_name="toy")
    return cls(kernel_id="kid-1", kernel_spec=spec, **config)


async def launch(prov: ToyProvisioner, **kwargs: Any) -> dict[str, Any]:
    opts = await prov.pre_launch(env={"KERNEL_X": "1", "SECRET": "s", "PATH": "/bin"}, **kwargs)
    cmd = opts.pop("cmd")
    return dict(await prov.launch_kernel(cmd, **opts))


@pytest.fixture(autouse=True)
async def _no_backends_left() -> AsyncGenerator[None, None]:
    yield
    await close_backends()


async def test_checkpoints_are_persisted_before_the_launch_goes_on() -> None:
    prov = toy()
    seen: list[dict[str, Any]] = []

    async def persist() -> None:
        seen.append(await prov.get_provisioner_info())

    prov.set_launch_terms(LaunchTerms(timeout=30, on_checkpoint=persist))
    info = await launch(prov)
    assert info["key"] == b"k" and info["shell_port"] == 1
    assert [s.get("resource") for s in seen] == ["resource-1", "resource-1"]
    assert "connection_info" not in seen[0] or not seen[0]["connection_info"]
    assert seen[1]["connection_info"]["key"] == "k"  # JSON: the key as str
    assert prov.has_process and await prov.poll() is None


@pytest.mark.parametrize("stage", [0, 1])
async def test_a_launch_failing_at_any_stage_aborts_what_its_checkpoints_name(stage: int) -> None:
    class FailsDuringLaunch(ToyProvisioner):
        fail_stage = stage

    prov = toy(FailsDuringLaunch)
    with pytest.raises(RuntimeError):
        await launch(prov)
    assert prov.aborted == ([] if stage == 0 else [{"resource": "resource-1"}])
    assert not prov.has_process and prov.checkpoint == {}


async def test_a_cancelled_launch_aborts_the_resource_it_created() -> None:
    class HangsAfterCreating(ToyProvisioner):
        hang_at = 1

    prov = toy(HangsAfterCreating)
    prov.set_launch_terms(LaunchTerms(timeout=30))
    task = asyncio.create_task(launch(prov))
    while not prov.checkpoint:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert prov.aborted == [{"resource": "resource-1"}]


async def test_the_gateway_clock_is_the_only_clock() -> None:
    # The kernelspec says 2 s; the gateway hands 8 s down: the backend sees 8, not 2.
    prov = toy(launch_timeout=2)
    prov.set_launch_terms(LaunchTerms(timeout=8))
    await launch(prov)
    assert prov.time_left_seen is not None and 7 < prov.time_left_seen <= 8


async def test_library_mode_enforces_the_kernelspec_launch_timeout() -> None:
    class HangsAfterCreating(ToyProvisioner):
        hang_at = 1

    prov = toy(HangsAfterCreating, launch_timeout=0.3)
    with pytest.raises(LaunchTimeout):
        await launch(prov)
    assert prov.aborted == [{"resource": "resource-1"}]


async def test_under_the_gateway_the_environment_is_passed_as_built() -> None:
    prov = toy()
    prov.set_launch_terms(LaunchTerms(timeout=30))
    opts = await prov.pre_launch(env={"KERNEL_X": "1", "MY_CLIENT_VAR": "v", "bad name": "x"})
    assert opts["env"] == {"KERNEL_X": "1", "MY_CLIENT_VAR": "v"}


async def test_library_mode_keeps_only_kernel_variables_and_inherited_names() -> None:
    prov = toy(inherited_envs=["PATH"])
    opts = await prov.pre_launch(env={"KERNEL_X": "1", "SECRET": "s", "PATH": "/bin"})
    assert opts["env"] == {"KERNEL_X": "1", "PATH": "/bin"}
    assert opts["cmd"] == ["k", "kid-1", "{connection_file}"]


async def test_signals_stops_and_cleanup_go_to_their_hooks_and_restart_remembers() -> None:
    prov = toy()
    prov.set_launch_terms(LaunchTerms(timeout=30))
    await launch(prov)
    await prov.send_signal(2)
    await prov.terminate(restart=True)
    assert await prov.wait() == -15
    await prov.cleanup(restart=True)
    await launch(prov)  # a restart in place: the previous run's checkpoint is kept
    assert prov.previous["resource"] == "resource-1"
    await prov.kill()
    await prov.cleanup(restart=False)
    assert prov.calls == [
        "signal 2",
        "stop 15",
        "cleanup restart=True",
        "stop 9",
        "cleanup restart=False",
    ]
    assert prov.checkpoint == {} and prov.previous == {}


async def test_a_checkpoint_survives_a_round_trip_through_provisioner_info() -> None:
    prov = toy()
    prov.set_launch_terms(LaunchTerms(timeout=30))
    await launch(prov)
    info = await prov.get_provisioner_info()
    again = toy()
    await again.load_provisioner_info(info)
    assert again.checkpoint["resource"] == "resource-1"
    assert again.connection_info["key"] == b"k"
    await again.stop_launch()
    assert again.aborted and again.aborted[0]["resource"] == "resource-1"


async def test_one_backend_per_kind_and_settings_per_loop() -> None:
    a, b = toy(), toy()
    assert a.backend is b.backend
    codes = await a.backend.check([a, b])
    assert codes == {"kid-1": 0}  # neither launched: both report "not running"
