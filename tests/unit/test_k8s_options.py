"""The Kubernetes provisioner's options and the pure decisions made from them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelfleet.errors import BadRequest, Forbidden, LaunchFailed
from kernelfleet.provisioners import k8s_options
from kernelfleet.provisioners.k8s_options import K8sOptions, parse_ids
from kernelfleet.provisioners.k8s_pod import Limits, Volume

KID = "0b6f9c1e-2a3b-4c5d-8e9f-0123456789ab"
SAFE_NAME = st.from_regex(r"[a-z_][a-z0-9_.-]{0,31}", fullmatch=True)


@pytest.fixture(autouse=True)
def _no_service_account(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read the real in-cluster namespace file."""
    monkeypatch.setattr(k8s_options, "IN_CLUSTER_NAMESPACE", str(tmp_path / "absent"))


# -- namespaces ----------------------------------------------------------------------------------


def test_shared_mode_runs_every_kernel_in_the_configured_namespace() -> None:
    assert K8sOptions(namespace="kernels").choose_namespace({}, KID) == ("kernels", False)


def test_shared_mode_defaults_to_the_gateways_own_namespace_else_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    k8s_options._own_namespace.cache_clear()
    assert K8sOptions().choose_namespace({}, KID) == ("default", False)
    (tmp_path / "ns").write_text("gateway-ns\n")
    monkeypatch.setattr(k8s_options, "IN_CLUSTER_NAMESPACE", str(tmp_path / "ns"))
    k8s_options._own_namespace.cache_clear()  # read once per process
    assert K8sOptions().choose_namespace({}, KID) == ("gateway-ns", False)
    k8s_options._own_namespace.cache_clear()


def test_per_kernel_mode_gives_each_kernel_a_namespace_it_owns() -> None:
    opts = K8sOptions(namespace_mode="PER-KERNEL", namespace="kernels")  # caseless
    assert opts.choose_namespace({"KERNEL_NAMESPACE": " "}, KID) == (f"kf-{KID}", True)


@pytest.mark.parametrize("mode", ["shared", "per-kernel"])
def test_a_request_may_choose_an_allowed_namespace_it_does_not_own(mode: str) -> None:
    opts = K8sOptions(namespace_mode=mode, allowed_namespaces=["team-a", "team-b"])
    assert opts.choose_namespace({"KERNEL_NAMESPACE": " team-b "}, KID) == ("team-b", False)


@pytest.mark.parametrize(
    ("allowed", "asked", "listed"),
    [
        (["team-a", "team-b"], "kube-system", "team-a, team-b"),
        ([], "team-a", "none"),
        (["team-a"], "team-a\nx: y", "team-a"),
        (["team-a"], "x" * 500, "team-a"),
    ],
)
def test_any_other_namespace_is_forbidden_naming_it_and_the_allowed_ones(
    allowed: list[str], asked: str, listed: str
) -> None:
    with pytest.raises(Forbidden) as info:
        K8sOptions(allowed_namespaces=allowed).choose_namespace({"KERNEL_NAMESPACE": asked}, KID)
    message = str(info.value)
    assert message.startswith(f"KERNEL_NAMESPACE {asked[:64]!r} is not allowed: ")
    assert f"namespaces allowed here are {listed} (the admin's allowed_namespaces)." in message


def test_the_watch_covers_the_shared_and_allowed_namespaces_or_all() -> None:
    opts = K8sOptions(namespace="kernels", allowed_namespaces=["team-b", "kernels", "team-a"])
    assert opts.watch_scope() == ("kernels", "team-a", "team-b")
    assert K8sOptions().watch_scope() == ("default",)
    assert K8sOptions(namespace_mode="per-kernel", namespace="kernels").watch_scope() is None


# -- users ---------------------------------------------------------------------------------------


def test_without_impersonation_every_kernel_runs_as_the_kernel_uid() -> None:
    opts = K8sOptions(kernel_uid=1500, kernel_gid=1600, user_ids={"alice": "0"})
    assert opts.user({"KERNEL_USERNAME": " alice "}) == ("alice", 1500, 1600)
    assert opts.user({}) == ("", 1500, 1600)


@pytest.mark.parametrize("name", ["Alice", "alice: x", "a\nb", "../etc", "a" * 40, "'a'"])
def test_without_impersonation_a_name_unfit_for_labels_and_paths_is_dropped(name: str) -> None:
    assert K8sOptions().user({"KERNEL_USERNAME": name}) == ("", 1000, 1000)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), SAFE_NAME), st.booleans())
def test_any_username_is_refused_or_safe_to_paste_into_a_path_or_label(
    name: str, impersonate: bool
) -> None:
    opts = K8sOptions(impersonation_enabled=impersonate, user_ids={name.strip(): "2001"})
    try:
        user, uid, _ = opts.user({"KERNEL_USERNAME": name})
    except (BadRequest, Forbidden):
        assert impersonate
        return
    assert user == "" or (user == name.strip() and len(user) <= 32 and user[0] not in ".-")
    assert not set(user) - set("abcdefghijklmnopqrstuvwxyz0123456789_.-")
    assert uid == (2001 if impersonate else 1000)


def test_with_impersonation_a_mapped_user_runs_as_their_uid_and_gid() -> None:
    ids = {"alice": "2001:3001", "bob": 2002, "carol": " 2003 "}
    opts = K8sOptions(impersonation_enabled=True, user_ids=ids)
    assert opts.user({"KERNEL_USERNAME": "alice"}) == ("alice", 2001, 3001)
    assert opts.user({"KERNEL_USERNAME": "bob"}) == ("bob", 2002, 2002)
    assert opts.user({"KERNEL_USERNAME": "carol"}) == ("carol", 2003, 2003)


@pytest.mark.parametrize(
    ("name", "ids", "error", "message"),
    [
        ("", {}, BadRequest, "impersonation is enabled: KERNEL_USERNAME must name a user"),
        ("a: b", {"a: b": "2001"}, BadRequest, "KERNEL_USERNAME must name a user"),
        (
            "mallory",
            {"alice": "2001"},
            Forbidden,
            "'mallory' has no uid here: the admin maps users to uids in user_ids (KF_K8S_USER_IDS)",
        ),
        ("root", {"root": "0"}, Forbidden, "kernels may not run as uid or gid 0 (user 'root')"),
        ("alice", {"alice": "0:2001"}, Forbidden, "may not run as uid or gid 0"),
        ("alice", {"alice": "2001:0"}, Forbidden, "may not run as uid or gid 0"),
        ("alice", {"alice": "alice"}, Forbidden, "the user map's entry 'alice' is not uid"),
    ],
)
def test_with_impersonation_an_unknown_or_root_user_is_refused(
    name: str, ids: dict[str, object], error: type[Exception], message: str
) -> None:
    opts = K8sOptions(impersonation_enabled=True, user_ids=ids)
    with pytest.raises(error) as info:
        opts.user({"KERNEL_USERNAME": name})
    assert type(info.value) is error and message in str(info.value)


@pytest.mark.parametrize(
    ("value", "ids"),
    [(2001, (2001, 2001)), ("2001", (2001, 2001)), (" 2001:2002 ", (2001, 2002)), ("0", (0, 0))],
)
def test_parse_ids_reads_uid_or_uid_colon_gid(value: object, ids: tuple[int, int]) -> None:
    assert parse_ids(value) == ids


@pytest.mark.parametrize(
    "value",
    ["", "-1", "1:-1", "1:2:3", "x", "2001:x", "\u00b2", "\u0661\u0662", "9" * 5000, True, None],
)
def test_parse_ids_refuses_anything_else_as_forbidden(value: object) -> None:
    with pytest.raises(Forbidden, match=r"^the user map's entry .* is not uid or uid:gid$"):
        parse_ids(value)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(max_size=25),
        st.from_regex(r"\s?[0-9]{1,12}(:[0-9]{0,12})?\s?", fullmatch=True),
        st.integers(),
    )
)
def test_parse_ids_of_anything_returns_two_ids_or_raises_forbidden(value: object) -> None:
    try:
        uid, gid = parse_ids(value)
    except Forbidden:
        return
    assert type(uid) is int and type(gid) is int and 0 <= uid < 10**10 and 0 <= gid < 10**10
    text = str(value).strip()
    assert re.fullmatch(r"[0-9]{1,10}(:[0-9]{0,10})?", text, re.ASCII)
    uid_text, _, gid_text = text.partition(":")
    assert (uid, gid) == (int(uid_text), int(gid_text or uid_text))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_parse_ids_round_trips_every_uid_and_gid(uid: int, gid: int) -> None:
    assert parse_ids(f"{uid}:{gid}") == (uid, gid) and parse_ids(uid) == (uid, uid)


# -- limits and volumes --------------------------------------------------------------------------


def test_limits_carry_the_admins_bounds_and_defaults() -> None:
    opts = K8sOptions(max_cpus=2.5, max_memory="4Gi", max_gpus=1, cpus="1", memory="1Gi")
    assert opts.limits() == Limits(
        max_cpus=2.5, max_memory="4Gi", max_gpus=1, cpus="1", memory="1Gi"
    )
    assert K8sOptions().limits() == Limits()


@pytest.mark.parametrize("max_memory", ["lots", "16GB", "", "-1Gi"])
def test_a_max_memory_that_is_no_amount_is_refused_naming_the_option(max_memory: str) -> None:
    with pytest.raises(LaunchFailed, match=f"^max_memory {max_memory!r} of this kernelspec is not"):
        K8sOptions(max_memory=max_memory).limits()


def test_declared_volumes_are_parsed_or_refused_naming_the_option() -> None:
    raw = [{"name": "home", "mount_path": "/home/{username}", "claim": "home-{username}"}]
    assert K8sOptions(volumes=raw).declared_volumes() == (
        Volume("home", "/home/{username}", claim="home-{username}"),
    )
    with pytest.raises(
        LaunchFailed, match=r"^the kernelspec's volumes option is invalid: volumes\[0\]"
    ):
        K8sOptions(volumes=[{"name": "home"}]).declared_volumes()
