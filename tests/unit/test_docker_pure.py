"""The Docker backend's pure parts: request values, container and service bodies, the log and
events parsers (property-based: they read bytes from an engine, or from whatever sits between)."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelfleet.errors import BadRequest, Forbidden, LaunchFailed
from kernelfleet.provisioners import docker_spec as ds
from kernelfleet.provisioners.docker_options import DockerOptions
from kernelfleet.provisioners.docker_spec import Limits
from kernelfleet.transport import docker_api as da

KID = "0b6f9c1e-2a3b-4c5d-8e9f-0123456789ab"
IMAGE = "kernelfleet.test/kernel-python:0.1.0"
OTHER = "kernelfleet.test/kernel-r:0.1.0"
LIMITS = Limits(max_cpus=4, max_memory="8Gi", max_pids=1000)


def params(env: dict[str, str] | None = None, **over: Any) -> ds.ContainerParams:
    args: dict[str, Any] = {
        "kernel_id": KID,
        "kernel_name": "python3",
        "name": ds.container_name(KID, 0),
        "image": IMAGE,
        "allowed_images": [OTHER],
        "network": "bridge",
        "uid": 2001,
        "gid": 2002,
        "username": "alice",
        "limits": LIMITS,
        "mounts": (),
    }
    args.update(over)
    return ds.request_params(env or {}, **args)


def test_requested_limits_become_engine_units() -> None:
    p = params({"KERNEL_CPUS": "500m", "KERNEL_MEMORY": "256Mi", "KERNEL_PIDS": "128"})
    body = ds.container_body(p, ["python3", "x"], {"A": "1"})
    host = body["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == host["MemorySwap"] == 256 * 2**20
    assert host["PidsLimit"] == 128
    assert body["User"] == "2001:2002"
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["AutoRemove"] is False and host["RestartPolicy"] == {"Name": "no"}


def test_no_request_means_no_limit_unless_the_admin_set_a_default() -> None:
    host = ds.container_body(params(), ["k"], {})["HostConfig"]
    assert "Memory" not in host and "NanoCpus" not in host and "PidsLimit" not in host
    limits = Limits(cpus="1", memory="1Gi", pids=64, max_cpus=4, max_memory="8Gi")
    host = ds.container_body(params(limits=limits), ["k"], {})["HostConfig"]
    assert (host["NanoCpus"], host["Memory"], host["PidsLimit"]) == (10**9, 2**30, 64)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"KERNEL_CPUS": "9"}, "KERNEL_CPUS"),
        ({"KERNEL_CPUS": "1; rm -rf /"}, "KERNEL_CPUS"),
        ({"KERNEL_MEMORY": "9Gi"}, "KERNEL_MEMORY"),
        ({"KERNEL_MEMORY": "1k"}, "KERNEL_MEMORY"),
        ({"KERNEL_MEMORY": "$(id)"}, "KERNEL_MEMORY"),
        ({"KERNEL_PIDS": "5"}, "KERNEL_PIDS"),
        ({"KERNEL_PIDS": "-1"}, "KERNEL_PIDS"),
        ({"KERNEL_PIDS": "99999"}, "KERNEL_PIDS"),
        ({"KERNEL_WORKING_DIR": "/home/../etc"}, "KERNEL_WORKING_DIR"),
        ({"KERNEL_WORKING_DIR": "relative"}, "KERNEL_WORKING_DIR"),
        ({"KERNEL_WORKING_DIR": "/a b"}, "KERNEL_WORKING_DIR"),
    ],
)
def test_bad_request_values_are_refused_naming_the_variable(
    env: dict[str, str], needle: str
) -> None:
    with pytest.raises(BadRequest) as err:
        params(env)
    assert err.value.message.startswith(needle)


def test_only_allowed_images_may_be_chosen() -> None:
    assert params({"KERNEL_IMAGE": OTHER}).image == OTHER
    assert params({"KERNEL_IMAGE": IMAGE}).image == IMAGE
    with pytest.raises(Forbidden, match="KERNEL_IMAGE"):
        params({"KERNEL_IMAGE": "evil/miner:latest"})


def test_per_user_mounts_take_the_validated_user_name() -> None:
    mounts = ds.parse_mounts(
        [
            {"source": "/srv/home/{username}", "target": "/home/{username}"},
            {"source": "data-vol", "target": "/data", "read_only": True},
        ]
    )
    p = params(mounts=mounts)
    body = ds.container_body(p, ["k"], {})
    assert body["HostConfig"]["Mounts"] == [
        {"Type": "bind", "Source": "/srv/home/alice", "Target": "/home/alice", "ReadOnly": False},
        {"Type": "volume", "Source": "data-vol", "Target": "/data", "ReadOnly": True},
    ]
    with pytest.raises(BadRequest, match="KERNEL_USERNAME"):
        params(mounts=mounts, username="")


@pytest.mark.parametrize(
    "raw",
    [
        [{"source": "/x", "target": "rel"}],
        [{"source": "", "target": "/x"}],
        [{"source": "a b", "target": "/x"}],
        ["/x:/y"],
    ],
)
def test_bad_admin_mounts_are_refused(raw: list[Any]) -> None:
    with pytest.raises(ValueError, match=r"volumes\[0\]"):
        ds.parse_mounts(raw)


def test_the_environment_is_data_and_labels_name_the_kernel() -> None:
    env = {"KERNEL_USERNAME": "alice", "X": "a b; $(id)\n`x`", "BAD=NAME": "y", "NUL": "a\0b"}
    body = ds.container_body(params(), ["python3", "-c", "print(1)"], env)
    assert "X=a b; $(id)\n`x`" in body["Env"]
    assert not any(e.startswith(("BAD", "NUL")) for e in body["Env"])
    assert body["Entrypoint"] == ["python3", "-c", "print(1)"] and body["Cmd"] == []
    labels = body["Labels"]
    assert labels[ds.LABEL_KERNEL] == KID
    assert labels["app.kubernetes.io/managed-by"] == "kernelfleet"
    assert labels[ds.LABEL_USER] == "alice"


def test_a_service_runs_once_where_its_constraints_say() -> None:
    p = params({"KERNEL_MEMORY": "1Gi", "KERNEL_PIDS": "100"})
    body = ds.service_body(p, ["k"], {"A": "1"}, ["node.role==manager"])
    template = body["TaskTemplate"]
    assert template["RestartPolicy"]["Condition"] == "none"
    assert template["Placement"]["Constraints"] == ["node.role==manager"]
    assert template["Resources"]["Limits"] == {"MemoryBytes": 2**30, "Pids": 100}
    assert template["Networks"] == [{"Target": "bridge"}]
    assert body["Mode"] == {"Replicated": {"Replicas": 1}}
    assert template["ContainerSpec"]["Labels"][ds.LABEL_KERNEL] == KID
    assert ds.check_constraints(["node.role==manager", "node.labels.gpu!=no"]) is None
    assert ds.check_constraints(["node.role"]) is not None


@pytest.mark.parametrize("network", ["host", "none", "", "a b", "x;y", "n" * 200])
def test_networks_that_cannot_hold_kernels_are_refused(network: str) -> None:
    assert ds.check_network(network) is not None


def test_options_refuse_unusable_settings_before_any_launch() -> None:
    assert ds.check_network("kf-net_1.a") is None
    for bad in (
        {"image": ""},
        {"image": IMAGE, "network": "host"},
        {"image": IMAGE, "docker_host": "ssh://h"},
        {"image": IMAGE, "max_memory": "lots"},
        {"image": IMAGE, "swarm": True, "placement": ["nope"]},
        {"image": IMAGE, "volumes": [{"source": "/a"}]},
    ):
        with pytest.raises(LaunchFailed):
            DockerOptions(**bad).check_options("py")
    DockerOptions(image=IMAGE).check_options("py")


def test_impersonation_maps_users_and_refuses_root() -> None:
    opts = DockerOptions(impersonation_enabled=True, user_ids={"alice": "2001:2002", "eve": "0"})
    assert opts.user({"KERNEL_USERNAME": "alice"}) == ("alice", 2001, 2002)
    with pytest.raises(Forbidden, match="uid or gid 0"):
        opts.user({"KERNEL_USERNAME": "eve"})
    with pytest.raises(Forbidden, match="uid or gid 0"):
        opts.user({"KERNEL_USERNAME": "root"})  # the host's account: uid 0
    with pytest.raises(BadRequest):
        opts.user({"KERNEL_USERNAME": "al ice"})
    with pytest.raises(Forbidden, match="no account"):
        opts.user({"KERNEL_USERNAME": "nosuchuser-kf"})
    plain = DockerOptions(kernel_uid=1500, kernel_gid=1600)
    assert plain.user({"KERNEL_USERNAME": "root"}) == ("root", 1500, 1600)


def test_engine_addresses() -> None:
    assert da.parse_host("unix:///run/docker.sock") == ("unix", "/run/docker.sock")
    assert da.parse_host("tcp://10.0.0.1:2376") == ("tcp", "10.0.0.1:2376")
    for bad in ("", "/run/docker.sock", "ssh://host", "unix://relative", "tcp://h/p"):
        with pytest.raises(ValueError):
            da.parse_host(bad)


# -- parsers of what an engine sends ------------------------------------------------------


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def test_a_multiplexed_log_is_joined_in_order() -> None:
    data = frame(1, b"out 1\n") + frame(2, b"err \xc3\xa9\n") + frame(1, b"out 2")
    assert da.demux_log(data) == "out 1\nerr é\nout 2"
    assert da.demux_log(b"raw tty output\n") == "raw tty output\n"
    assert da.demux_log(frame(1, b"abcdef")[:-3]) == "abc"  # a cut-off frame keeps what came


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 2]), st.binary(max_size=300)), max_size=8))
def test_framed_logs_round_trip(chunks: list[tuple[int, bytes]]) -> None:
    data = b"".join(frame(s, d) for s, d in chunks)
    assert da.demux_log(data) == b"".join(d for _, d in chunks).decode(errors="replace")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_log_bytes_give_text(data: bytes) -> None:
    assert isinstance(da.demux_log(data), str)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(min_value=0, max_value=2000))
def test_any_event_bytes_give_objects_and_a_rest(data: bytes, cut: int) -> None:
    events, rest = da.split_events(data[:cut])
    assert all(isinstance(e, dict) for e in events)
    more, _ = da.split_events(rest + data[cut:])
    assert all(isinstance(e, dict) for e in more)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3), max_size=5),
    st.integers(min_value=0, max_value=400),
)
def test_events_split_anywhere_arrive_whole(objs: list[dict[str, str]], cut: int) -> None:
    data = b"".join(json.dumps(o).encode() + b"\n" for o in objs)
    first, rest = da.split_events(data[:cut])
    second, left = da.split_events(rest + data[cut:])
    assert first + second == objs and left == b""


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["KERNEL_CPUS", "KERNEL_MEMORY", "KERNEL_PIDS", "KERNEL_WORKING_DIR", "KERNEL_IMAGE"]
        ),
        st.text(max_size=40),
    )
)
def test_any_request_values_are_refused_or_bounded(env: dict[str, str]) -> None:
    try:
        p = params(env)
    except (BadRequest, Forbidden) as exc:
        assert exc.message.split(" ", 1)[0] in env, exc.message  # names the variable first
        return
    assert 0 <= p.nano_cpus <= LIMITS.max_cpus * 1e9
    assert 0 <= p.memory <= 8 * 2**30
    assert p.pids == 0 or 16 <= p.pids <= LIMITS.max_pids
    assert p.image in (IMAGE, OTHER)
    wd = p.working_dir
    assert wd == "" or (wd.startswith("/") and ".." not in wd.split("/"))
