"""The policy's env checks, for any JSON a client can send as ``env``: a clean str -> str map
a process can actually be started with, or a 400 naming the problem; never another exception.
And the kernel's environment never holds more than the policy lets through."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernelfleet.errors import BadRequest, PublicError
from kernelfleet.kernels.policy import (
    MAX_ENV_ENTRY_BYTES,
    GatewayPolicy,
    kernel_env,
    validate_request_env,
)
from tests.fuzz.strategies import any_text, fuzz_settings, hostile_text, huge_text, json_values

#: A failing example with a 128 KiB value must still be reported (not turned into an error).
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

names = (
    st.from_regex(r"KERNEL_[A-Za-z0-9_]{0,10}", fullmatch=True)
    | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
    | any_text
    | st.sampled_from(["", "1X", "A-B", "A=B", "KERNEL_ID", "PATH", "é", "A\x00"])
)
values = hostile_text | huge_text | json_values
envs = (
    st.dictionaries(names, values, max_size=5)
    | json_values
    | st.dictionaries(st.integers() | st.none() | st.booleans(), values, max_size=2)
)


def validated(env: Any) -> dict[str, str] | None:
    """The policy's answer: the clean env, or None for a 400."""
    try:
        return validate_request_env(env)
    except BadRequest as exc:
        assert exc.status == 400 and exc.message
        assert len(exc.message) < 400  # names the culprit, does not echo a 128 KiB value
        return None


@fuzz_settings(1000)
@given(env=envs)
def test_any_env_is_a_clean_map_or_a_400(env: Any) -> None:
    out = validated(env)
    if out is None:
        return
    assert out == (env or {})
    for name, value in out.items():
        assert isinstance(name, str) and ENV_NAME.fullmatch(name)
        assert isinstance(value, str) and "\x00" not in value
        entry = os.fsencode(f"{name}={value}")  # what the process start will hand the OS
        assert entry.decode("utf-8") == f"{name}={value}"  # text, no surrogate smuggled
        assert len(entry) + 1 <= MAX_ENV_ENTRY_BYTES


@fuzz_settings(40)
@given(env=st.dictionaries(names, hostile_text | huge_text, max_size=3))
def test_an_accepted_env_can_start_a_process(env: dict[str, str]) -> None:
    """The OS agrees with the policy: no E2BIG, no encoding error (a real exec each)."""
    out = validated(env)
    if out is None:
        return
    subprocess.run(["/bin/true"], env=out, check=True, timeout=30)


policies = st.builds(
    GatewayPolicy,
    inherited_envs=st.lists(st.sampled_from(["PATH", "LANG", "HOME", "SECRET", "KERNEL_ID"])).map(
        tuple
    ),
    client_envs=st.frozensets(st.sampled_from(["EXTRA", "PATH", "SECRET", "*"])),
)
process_envs = st.dictionaries(
    st.sampled_from(["PATH", "LANG", "HOME", "SECRET", "KERNEL_ID", "KERNEL_USERNAME", "AWS_KEY"]),
    st.text(max_size=5),
)


@fuzz_settings(500)
@given(
    request=st.dictionaries(names, hostile_text, max_size=5),
    process=process_envs,
    gw=policies,
    kernel_id=st.uuids().map(str),
    user=st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
)
def test_the_kernel_env_holds_only_what_the_policy_lets_through(
    request: dict[str, Any],
    process: dict[str, str],
    gw: GatewayPolicy,
    kernel_id: str,
    user: str,
) -> None:
    req = validated(request)
    if req is None:
        return
    env = kernel_env(req, process, gw, kernel_id=kernel_id, username=user)
    assert env["KERNEL_ID"] == kernel_id and env["KERNEL_USERNAME"] == user
    for name, value in env.items():
        assert isinstance(name, str) and isinstance(value, str)
        if name in ("KERNEL_ID", "KERNEL_USERNAME"):
            continue
        from_request = name in req and (
            name.startswith("KERNEL_") or name in gw.client_envs or "*" in gw.client_envs
        )
        if from_request:
            assert value == req[name]
        else:  # only ever an inherited name, with the gateway's own value
            assert name in gw.inherited_envs and value == process[name], name
    for name in process:
        if name not in gw.inherited_envs and name not in req:
            assert name not in env or name in ("KERNEL_ID", "KERNEL_USERNAME"), name


def test_a_public_error_is_the_only_way_to_refuse() -> None:
    """The checks raise BadRequest, a PublicError (JSON 400), for the inputs of issue 9."""
    for env in ({"KERNEL_X": "\ud800"}, {"KERNEL_X": "a" * MAX_ENV_ENTRY_BYTES}, [1], "x"):
        try:
            validate_request_env(env)
        except PublicError as exc:
            assert exc.status == 400
        else:
            raise AssertionError(f"accepted {env!r:.80}")
