"""Pure builders of the SSH provisioner and its agent protocol: no hosts needed."""

from __future__ import annotations

import json
import shlex

import pytest

from kernelfleet.errors import BadRequest
from kernelfleet.transport.protocol import (
    AGENT_VERSION,
    ConnectionSecrets,
    PortRange,
    agent_source,
    bootstrap_command,
    build_argv,
    build_launch_request,
    connection_info,
    kernel_env,
    parse_port_range,
)


def test_bootstrap_is_a_fixed_command_with_only_the_quoted_interpreter() -> None:
    cmd = bootstrap_command("/opt/py 3/bin/python3")
    argv = shlex.split(cmd)
    assert argv[:2] == ["exec", "/opt/py 3/bin/python3"]
    assert argv[2:5] == ["-I", "-u", "-c"]
    assert bootstrap_command("python3") == bootstrap_command("python3")


def test_agent_source_declares_the_version_the_gateway_expects() -> None:
    assert f'AGENT_VERSION = "{AGENT_VERSION}"' in agent_source()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", PortRange(0, 0)), ("0..0", PortRange(0, 0)), ("40000..40100", PortRange(40000, 40100))],
)
def test_port_range_parses(text: str, expected: PortRange) -> None:
    assert parse_port_range(text, min_size=50) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1000..2000", "below 1024"),
        ("40000..40010", "at least 50"),
        ("40000..70000", "65535"),
        ("5000..4000", "65535"),
        ("40000-40100", "lo..hi"),
        ("x..y", "lo..hi"),
    ],
)
def test_port_range_is_validated(text: str, why: str) -> None:
    with pytest.raises(BadRequest, match=why):
        parse_port_range(text, min_size=50)


def test_port_range_needs_five_ports_whatever_the_minimum() -> None:
    with pytest.raises(BadRequest):
        parse_port_range("40000..40003", min_size=1)
    assert parse_port_range("40000..40004", min_size=1).as_list() == [40000, 40004]


def test_kernel_env_keeps_only_kernel_values_spec_env_and_inherited_names() -> None:
    env = {
        "KERNEL_USERNAME": "alice",
        "KERNEL_X": "$(rm -rf /)",
        "JPY_SESSION_NAME": "nb.ipynb",
        "PATH": "/usr/bin",
        "SPEC_VAR": "1",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "KF_SSH_KEY": "/root/.ssh/id",
        "bad name": "x",
    }
    out = kernel_env(env, spec_env_names=["SPEC_VAR"], inherited=["PATH"])
    assert out == {
        "KERNEL_USERNAME": "alice",
        "KERNEL_X": "$(rm -rf /)",
        "JPY_SESSION_NAME": "nb.ipynb",
        "PATH": "/usr/bin",
        "SPEC_VAR": "1",
    }


def test_argv_keeps_the_connection_file_token_for_the_agent() -> None:
    argv = build_argv(["python", "-f", "{connection_file}", "--id={kernel_id}"], "k1", ["-v"])
    assert argv == ["python", "-f", "{connection_file}", "--id=k1", "-v"]


def make_request(secrets: ConnectionSecrets) -> dict[str, object]:
    return build_launch_request(
        kernel_id="k1",
        kernel_name="py",
        argv=["python", "-f", "{connection_file}"],
        env={"KERNEL_X": "a'b\"c\n$(x)"},
        connection=secrets,
        port_range=PortRange(40000, 40100),
        timeout=30,
        user="alice",
        prohibited_uids=[0, 0, 5],
        log_dir=None,
        cwd=None,
        ip="10.0.0.5",
    )


def test_launch_request_carries_values_as_data() -> None:
    secrets = ConnectionSecrets.fresh(curve=True)
    request = make_request(secrets)
    assert request["env"] == {"KERNEL_X": "a'b\"c\n$(x)"}
    assert request["port_range"] == [40000, 40100]
    assert request["prohibited_uids"] == [0, 5]
    assert request["connection"] == {
        "key": secrets.key,
        "signature_scheme": "hmac-sha256",
        "curve_publickey": secrets.curve_publickey,
        "curve_secretkey": secrets.curve_secretkey,
    }
    # one JSON line, whatever the values
    assert "\n" not in json.dumps(request)


def test_secrets_are_fresh_and_never_in_their_repr() -> None:
    a, b = ConnectionSecrets.fresh(curve=True), ConnectionSecrets.fresh(curve=True)
    assert a.key != b.key and a.curve_secretkey != b.curve_secretkey
    assert a.curve_publickey and len(a.curve_publickey) == 40
    for text in (repr(a), str(a)):
        assert a.key not in text and str(a.curve_secretkey) not in text
    plain = ConnectionSecrets.fresh(curve=False)
    assert "curve_secretkey" not in plain.as_payload()


def test_connection_info_for_the_gateway() -> None:
    secrets = ConnectionSecrets.fresh(curve=True)
    reply = {
        "ports": {
            n: 40000 + i
            for i, n in enumerate(
                ["shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"]
            )
        }
    }
    info = connection_info(reply, "10.0.0.5", "py", secrets)
    assert info["ip"] == "10.0.0.5"
    assert info["key"] == secrets.key.encode()
    assert info["hb_port"] == 40004
    assert info["curve_secretkey"] == secrets.curve_secretkey
