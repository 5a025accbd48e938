"""Kernel profiles and allowances: parsing, choosing, limits, published names (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernelfleet.errors import BadRequest, Forbidden
from kernelfleet.kernels import profiles as prof
from kernelfleet.launchers import cgroups

PROFILES = prof.parse_profiles(
    {
        "small": {"memory": "512M", "cpus": 1},
        "large": {"memory": "8G", "cpus": 4, "kernelspecs": ["python*"], "backends": ["ssh"]},
        "spark": {"kernelspecs": ["spark*"]},
    }
)


@pytest.mark.parametrize(
    ("raw", "size"),
    [("2G", 2 * 1024**3), ("512Mi", 512 * 1024**2), ("1.5g", int(1.5 * 1024**3)), (4096, 4096)],
)
def test_sizes_are_binary(raw: Any, size: int) -> None:
    assert prof.parse_memory(raw, "x") == size


@pytest.mark.parametrize("raw", ["lots", "-1G", "0", 0, True, "1Q", [], "1e9"])
def test_a_bad_size_names_where_it_is(raw: Any) -> None:
    with pytest.raises(ValueError, match=r"^profile 'p' memory: "):
        prof.parse_profiles({"p": {"memory": raw}})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"a-b": {}}, "no '-'"),
        ({"p": {"memroy": "1G"}}, "unknown setting 'memroy'"),
        ({"p": {"cpus": "two"}}, "cpus: expected a positive number"),
        ({"p": {"idle_timeout": -5}}, "idle_timeout"),
        ({"p": {"kernelspecs": 3}}, "kernelspecs: expected a list"),
        ({"p": "big"}, "expected an object"),
    ],
)
def test_a_bad_profile_says_what_to_fix(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prof.parse_profiles(raw)


def test_groups_widen_the_default_and_a_users_entry_replaces_what_it_sets() -> None:
    raw = {
        "default": {"profiles": ["small"], "max_kernels": 2, "max_memory": "1G"},
        "groups": {"ds": {"profiles": ["large"], "max_memory": "16G"}, "ops": {"max_kernels": 0}},
        "users": {"carol": {"profiles": ["spark"], "max_kernels": 1}},
    }
    assert prof.allowance_for("alice", (), raw) == prof.Allowance(frozenset({"small"}), 2, 1024**3)
    assert prof.allowance_for("bob", {"ds"}, raw) == prof.Allowance(
        frozenset({"small", "large"}), 2, 16 * 1024**3
    )
    assert prof.allowance_for("dan", {"ops"}, raw).max_kernels == 0  # no limit wins
    assert prof.allowance_for("carol", {"ds"}, raw) == prof.Allowance(
        frozenset({"spark"}), 1, 16 * 1024**3
    )
    assert prof.allowance_for("x", (), {}) == prof.Allowance()


def choose(requested: str | None, spec: str = "python3", backend: str = "ssh", **kw: Any) -> Any:
    kw.setdefault("allowance", prof.Allowance())
    kw.setdefault("default", "")
    return prof.choose_profile(
        spec_name=spec, backend=backend, requested=requested, profiles=PROFILES, user="alice", **kw
    )


def test_the_default_then_the_first_allowed_profile_that_applies() -> None:
    assert choose(None).name == "small"
    assert choose(None, default="large").name == "large"
    assert choose(None, backend="local", default="large").name == "small"  # large is ssh only
    assert choose(None, allowance=prof.Allowance(frozenset({"large"}))).name == "large"
    assert choose(None, spec="spark-py").name == "small"
    assert (
        prof.choose_profile(
            spec_name="r",
            backend="ssh",
            requested=None,
            default="",
            profiles={},
            allowance=prof.Allowance(),
            user="a",
        )
        is None
    )


def test_a_refused_profile_says_which_are_possible() -> None:
    with pytest.raises(BadRequest, match=r"No kernel profile named 'huge'.*large, small, spark"):
        choose("huge")
    with pytest.raises(
        BadRequest, match="does not apply to kernelspec 'r'; profiles for it: small"
    ):
        choose("large", spec="r")
    with pytest.raises(Forbidden, match="'large' is not allowed for alice; allowed: small"):
        choose("large", allowance=prof.Allowance(frozenset({"small"})))
    with pytest.raises(Forbidden, match="No profile for kernelspec 'python3' is allowed"):
        choose(None, allowance=prof.Allowance(frozenset()))


def test_an_allowance_names_the_limit_and_what_is_allowed() -> None:
    small = PROFILES["small"]
    allowance = prof.Allowance(None, 3, 1024**3)
    prof.check_allowance("alice", small, allowance, prof.Usage(2, 512 * 1024**2))
    with pytest.raises(Forbidden, match=r"alice has 3 kernel\(s\), the most allowed is 3"):
        prof.check_allowance("alice", small, allowance, prof.Usage(3, 0))
    with pytest.raises(Forbidden, match=r"would use 1\.5 GiB of memory, the most allowed is 1 GiB"):
        prof.check_allowance("alice", small, allowance, prof.Usage(1, 1024**3))


def test_published_names_and_models() -> None:
    assert prof.split_published("python3--large", PROFILES) == ("python3", "large")
    assert prof.split_published("my--spec", PROFILES) == ("my--spec", None)
    assert prof.split_published("--small", PROFILES) == ("--small", None)
    table = prof.ProfileTable(profiles=PROFILES, default="large")
    offered = prof.offered("python3", "ssh", table, prof.Allowance())
    assert [p.name for p in offered or []] == ["large", "small"]
    assert prof.offered("r", "ssh", table, prof.Allowance(frozenset({"large"}))) == []
    assert (
        prof.offered("python3", "ssh", prof.ProfileTable(PROFILES, publish=False), prof.Allowance())
        is None
    )
    model = {"name": "python3", "spec": {"display_name": "Python 3", "metadata": {}}}
    pair = prof.published_model(model, PROFILES["large"])
    assert pair["name"] == "python3--large"
    assert pair["spec"]["display_name"] == "Python 3 — large (8 GiB, 4 CPU)"
    assert model["spec"]["display_name"] == "Python 3"  # untouched


def test_the_env_a_profile_gives_container_backends() -> None:
    assert PROFILES["large"].env() == {
        "KERNEL_PROFILE": "large",
        "KERNEL_MEMORY": "8192Mi",
        "KERNEL_CPUS": "4",
        "KERNEL_DRIVER_MEMORY": "8192m",
        "KERNEL_DRIVER_CORES": "4",
    }
    assert PROFILES["spark"].limits() is None


@given(st.text(max_size=80), st.text(max_size=40))
def test_any_client_named_profile_is_chosen_or_refused_with_a_public_error(
    requested: str, spec: str
) -> None:
    try:
        profile = choose(requested, spec=spec or "python3")
    except (BadRequest, Forbidden) as exc:
        assert exc.message
    else:
        assert profile is None or profile.name in PROFILES
    name, profile_name = prof.split_published(requested, PROFILES)
    assert profile_name is None or (profile_name in PROFILES and name)


def fake_root(tmp_path: Path, kind: str) -> Path:
    root = tmp_path / "cg"
    if kind == "v2":
        root.mkdir()
        (root / "cgroup.controllers").write_text("cpu memory\n")
        (root / "cgroup.subtree_control").write_text("")
    else:
        (root / "memory").mkdir(parents=True)
        (root / "cpu").mkdir()
    return root


def test_cgroup_v1_limits(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "v1")
    made = cgroups.create("k1", 512 * 1024**2, 1.5, root=str(root))
    mem, cpu = (Path(d) for d in made)
    assert mem == root / "memory/kernelfleet/k1" and cpu == root / "cpu/kernelfleet/k1"
    assert (mem / "memory.limit_in_bytes").read_text() == str(512 * 1024**2)
    assert not (mem / "memory.memsw.limit_in_bytes").exists()  # no swap accounting here
    assert (cpu / "cpu.cfs_quota_us").read_text() == "150000"
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    assert cgroups.oom_killed(made)
    for d in made:  # a real cgroupfs has no files to delete first
        for f in Path(d).iterdir():
            f.unlink()
    cgroups.remove(made, wait=0)
    assert not mem.exists() and not cpu.exists()


def test_cgroup_v2_limits_enable_the_controllers_on_the_way_down(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "v2")
    (root / "kernelfleet").mkdir()
    (root / "kernelfleet/cgroup.subtree_control").write_text("")
    (made,) = cgroups.create("k2", 2 * 1024**3, 0.5, root=str(root))
    assert (Path(made) / "memory.max").read_text() == str(2 * 1024**3)
    assert (Path(made) / "cpu.max").read_text() == "50000 100000"
    assert (root / "cgroup.subtree_control").read_text() == "+memory +cpu"
    assert not cgroups.oom_killed([made])


def test_no_cgroup_filesystem_is_a_clear_refusal(tmp_path: Path) -> None:
    with pytest.raises(cgroups.CgroupError, match="no cgroup filesystem"):
        cgroups.create("k3", 1024**3, None, root=str(tmp_path))
