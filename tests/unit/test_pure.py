"""Unit tests of the pure pieces: config from env, request policy, wire splicing, auth, culling."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from jupyter_client.session import Session
from jupyter_server.services.kernels.connection.base import (
    deserialize_msg_from_ws_v1,
    serialize_binary_message,
)
from traitlets import Bool, Dict, Float, Int, List, Unicode
from traitlets.config import Configurable

from kernelfleet.config import EnvError, config_from_env, option
from kernelfleet.errors import BadRequest, Forbidden, Unauthorized
from kernelfleet.gateway.auth import Authenticator
from kernelfleet.kernels import policy as pol
from kernelfleet.kernels.culler import CullSettings, should_cull
from kernelfleet.kernels.notices import status_message
from kernelfleet.kernels.record import KernelRecord, Lifecycle
from kernelfleet.kernels.timestamps import format_timestamp
from kernelfleet.kernels.wire import (
    V1_PROTOCOL,
    WireError,
    parse_client_frame,
    parse_kernel_message,
    to_zmq,
)


class Opts(Configurable):
    n = option(Int(1, help="n"), "KF_N")
    f = option(Float(1.0, help="f"), "KF_F")
    b = option(Bool(False, help="b"), "KF_B", "EG_B")
    items = option(List(Unicode(), help="items"), "KF_ITEMS")
    mapping = option(Dict(help="m"), "KF_MAP")


def test_options_read_their_env_var_and_aliases() -> None:
    cfg = config_from_env(
        [Opts],
        {"KF_N": "7", "KF_F": "2.5", "EG_B": "yes", "KF_ITEMS": "a, b,,c", "KF_MAP": '{"x": "y"}'},
    )
    opts = Opts(config=cfg)
    assert (opts.n, opts.f, opts.b, opts.items, opts.mapping) == (
        7,
        2.5,
        True,
        ["a", "b", "c"],
        {"x": "y"},
    )


def test_primary_env_var_wins_over_alias_and_help_names_it() -> None:
    cfg = config_from_env([Opts], {"KF_B": "false", "EG_B": "true"})
    assert Opts(config=cfg).b is False
    assert "KF_B or EG_B" in Opts.class_traits()["b"].help


@pytest.mark.parametrize("env", [{"KF_N": "seven"}, {"KF_B": "maybe"}, {"KF_MAP": "[1]"}])
def test_a_bad_env_value_is_an_error_naming_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(EnvError, match=next(iter(env))):
        config_from_env([Opts], env)


def test_timestamps_always_have_microseconds_and_z() -> None:
    when = dt.datetime(2026, 11, 21, 22, 34, 14, 0, tzinfo=dt.UTC)
    text = format_timestamp(when)
    assert text == "2026-11-21T22:34:14.000000Z"
    dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


GW = pol.GatewayPolicy(inherited_envs=("PATH",), client_envs=frozenset({"FOO"}))


def test_kernel_env_takes_only_allowed_names_and_pins_identity() -> None:
    env = pol.kernel_env(
        {
            "KERNEL_X": "1",
            "FOO": "f",
            "BAR": "b",
            "KERNEL_USERNAME": "mallory",
            "KERNEL_ID": "spoof",
        },
        {"PATH": "/bin", "SECRET": "s"},
        GW,
        kernel_id="kid",
        username="alice",
    )
    assert env == {
        "PATH": "/bin",
        "KERNEL_X": "1",
        "FOO": "f",
        "KERNEL_ID": "kid",
        "KERNEL_USERNAME": "alice",
    }


def test_owner_resolution() -> None:
    assert pol.resolve_owner("alice", False, {}) == "alice"
    assert pol.resolve_owner("alice", False, {"KERNEL_USERNAME": "alice"}) == "alice"
    assert pol.resolve_owner("hub", True, {"KERNEL_USERNAME": "bob"}) == "bob"
    with pytest.raises(Forbidden):
        pol.resolve_owner("alice", False, {"KERNEL_USERNAME": "bob"})
    with pytest.raises(BadRequest):
        pol.resolve_owner("hub", True, {"KERNEL_USERNAME": "bob; rm -rf /"})


def test_deny_wins_over_allow() -> None:
    spec = pol.SpecPolicy(authorized_users=frozenset({"root", "alice"}))
    with pytest.raises(Forbidden, match="root"):
        pol.check_user_allowed("root", "s", spec, pol.GatewayPolicy())
    pol.check_user_allowed("alice", "s", spec, pol.GatewayPolicy())
    with pytest.raises(Forbidden, match="'s'"):
        pol.check_user_allowed("bob", "s", spec, pol.GatewayPolicy())


def test_spec_policy_reads_provisioner_and_enterprise_gateway_stanzas() -> None:
    spec = pol.SpecPolicy.from_metadata(
        {
            "process_proxy": {"config": {"authorized_users": "a, b", "launch_timeout": 30}},
            "kernel_provisioner": {"config": {"unauthorized_users": ["c"]}},
        }
    )
    assert spec.authorized_users == {"a", "b"} and spec.unauthorized_users == {"c"}
    assert spec.launch_timeout == 30


def test_launch_timeout_honours_client_up_to_the_maximum() -> None:
    gw = pol.GatewayPolicy(default_launch_timeout=60, max_launch_timeout=100)
    spec = pol.SpecPolicy(launch_timeout=90)
    assert pol.launch_timeout({}, spec, gw) == 90
    assert pol.launch_timeout({}, pol.SpecPolicy(), gw) == 60
    assert pol.launch_timeout({"KERNEL_LAUNCH_TIMEOUT": "40"}, spec, gw) == 40
    assert pol.launch_timeout({"KERNEL_LAUNCH_TIMEOUT": "4000"}, spec, gw) == 100
    for bad in ("-1", "nan", "inf", "x"):
        with pytest.raises(BadRequest):
            pol.launch_timeout({"KERNEL_LAUNCH_TIMEOUT": bad}, spec, gw)


def _kernel_frames(session: Session, content: dict, buffers: list[bytes] | None = None) -> list:
    msg = session.msg("stream", content)
    return session.serialize(msg) + list(buffers or [])


def test_legacy_frame_is_spliced_json_with_msg_id_and_type() -> None:
    session = Session(key=b"k")
    frames = _kernel_frames(session, {"name": "stdout", "text": "h\u00e9\n"})
    msg = parse_kernel_message(session, "iopub", frames)
    decoded = json.loads(msg.legacy_json())
    assert decoded["channel"] == "iopub"
    assert decoded["msg_type"] == "stream" == decoded["header"]["msg_type"]
    assert decoded["msg_id"] == decoded["header"]["msg_id"]
    assert decoded["content"] == {"name": "stdout", "text": "h\u00e9\n"}
    assert decoded["buffers"] == []


def test_v1_frame_round_trips_with_buffers() -> None:
    session = Session(key=b"k")
    msg = parse_kernel_message(session, "iopub", _kernel_frames(session, {"a": 1}, [b"\x00\xff"]))
    channel, parts = deserialize_msg_from_ws_v1(msg.v1())
    assert channel == "iopub"
    assert parts[4] == b"\x00\xff"
    assert json.loads(parts[3]) == {"a": 1}


def test_a_forged_kernel_message_is_rejected() -> None:
    frames = _kernel_frames(Session(key=b"other"), {"a": 1})
    with pytest.raises(WireError, match="HMAC"):
        parse_kernel_message(Session(key=b"k"), "iopub", frames)


def test_client_frames_in_every_format_become_signed_parts() -> None:
    session = Session(key=b"k")
    base = {
        "header": {"msg_id": "1", "msg_type": "comm_msg"},
        "parent_header": {},
        "metadata": {},
        "content": {"x": 1},
        "channel": "shell",
    }
    legacy = json.dumps({**base, "buffers": []})
    binary = serialize_binary_message({**base, "buffers": [b"\x01\x02"]})
    for data, proto, nbuf in ((legacy, None, 0), (binary, None, 1)):
        channel, parts = parse_client_frame(data, proto)
        assert channel == "shell" and len(parts) == 4 + nbuf
        signed = to_zmq(session, parts)
        assert signed[1] == session.sign(parts[:4])
    status = status_message("idle")
    channel, parts = parse_client_frame(status.v1().replace(b"iopub", b"shell", 1), V1_PROTOCOL)
    assert channel == "shell"


@pytest.mark.parametrize(
    "data",
    ["not json", "[]", json.dumps({"channel": "iopub", "header": {"msg_type": "x"}}), b"\x00\x00"],
)
def test_bad_client_frames_raise_wire_error(data: str | bytes) -> None:
    with pytest.raises(WireError):
        parse_client_frame(data, None)


def _auth(**kw: object) -> Authenticator:
    return Authenticator(token="shared", user_tokens={"ta": "alice"}, **kw)


def test_auth_accepts_every_documented_credential() -> None:
    auth = _auth()
    assert auth.authenticate({"Authorization": "token shared"}, None).admin
    assert auth.authenticate({"Authorization": "Bearer shared"}, None).admin
    assert auth.authenticate({}, "shared").user == "gateway"
    alice = auth.authenticate({"Authorization": "token ta"}, None)
    assert (alice.user, alice.admin) == ("alice", False)
    basic = base64.b64encode(b"jo:shared").decode()
    assert auth.authenticate({"Authorization": f"Basic {basic}"}, None).user == "jo"
    for headers in (
        {},
        {"Authorization": "token "},
        {"Authorization": "token nope"},
        {"Authorization": "Basic !!!"},
    ):
        with pytest.raises(Unauthorized):
            auth.authenticate(headers, None)


def test_trusted_header_only_counts_with_the_shared_token() -> None:
    auth = _auth(trusted_user_header="X-User")
    who = auth.authenticate({"Authorization": "token shared", "X-User": "zoe"}, None)
    assert (who.user, who.admin) == ("zoe", False)
    assert auth.authenticate({"Authorization": "token ta", "X-User": "zoe"}, None).user == "alice"


def test_auth_off_means_everyone_is_admin_and_a_token_is_generated_otherwise() -> None:
    assert Authenticator(auth_enabled=False).authenticate({}, None).admin
    auth = Authenticator()
    token = auth.ensure_token()
    assert token and len(token) >= 32 and auth.token == token


def _record(**kw: object) -> KernelRecord:
    rec = KernelRecord(id="k", name="p", owner="o", env={}, launch_timeout=1)
    rec.lifecycle = Lifecycle.RUNNING
    rec.last_activity = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for key, value in kw.items():
        setattr(rec, key, value)
    return rec


def test_cull_rules() -> None:
    now = dt.datetime(2026, 1, 1, 0, 10, tzinfo=dt.UTC)
    on = CullSettings(idle_timeout=60, cull_connected=False, cull_busy=False)
    assert should_cull(_record(execution_state="idle"), now, on)
    assert not should_cull(_record(execution_state="idle"), now, CullSettings(0, False, False))
    assert not should_cull(_record(connections=1), now, on)
    assert should_cull(_record(connections=1), now, CullSettings(60, True, False))
    assert not should_cull(_record(execution_state="busy"), now, on)
    assert should_cull(_record(execution_state="busy"), now, CullSettings(60, False, True))
    recent = _record(last_activity=now - dt.timedelta(seconds=10))
    assert not should_cull(recent, now, on)
