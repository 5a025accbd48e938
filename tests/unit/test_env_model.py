"""Kernel environments as data: package lists from users, names, quotas, uv's failures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernelfleet.envs import model
from kernelfleet.envs.interpreters import Interpreter, choose
from kernelfleet.errors import Forbidden, LimitReached, PublicError

INDEX = "https://pypi.org/simple"


def test_a_package_list_is_normalised_and_gets_ipykernel() -> None:
    got = model.parse_requirements(["pandas==2.2.*", " scikit-learn>=1.4 ", "", "# comment"])
    assert got == ["pandas==2.2.*", "scikit-learn>=1.4", "ipykernel"]
    assert model.parse_requirements(["ipykernel==7.4.0"]) == ["ipykernel==7.4.0"]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("pkg @ https://evil.example/pkg.whl", "URL or path"),
        ("-e git+https://x/y", "pip options"),
        ("--index-url https://evil.example/simple", "pip options"),
        ("-r other.txt", "pip options"),
        ("pandas===", "not a package requirement"),
        ("../local/dir", "not a package requirement"),
    ],
)
def test_what_could_escape_the_index_is_refused_naming_the_line(line: str, says: str) -> None:
    with pytest.raises(model.EnvError) as err:
        model.parse_requirements([line])
    assert says in err.value.message
    assert line[:20] in err.value.message


def test_a_package_listed_twice_is_refused() -> None:
    with pytest.raises(model.EnvError, match="listed twice"):
        model.parse_requirements(["Pandas", "pandas==2.2"])


@given(st.lists(st.text(max_size=120), max_size=8))
def test_any_package_list_parses_or_is_a_clear_error(lines: list[str]) -> None:
    try:
        got = model.parse_requirements(lines)
    except model.EnvError as exc:
        assert exc.message and "\n" not in exc.message[:110]
    else:
        assert got[-1] == "ipykernel" or "ipykernel" in " ".join(got)
        assert all("@" not in r.split(";")[0] for r in got)


@given(st.text(max_size=80))
def test_any_name_is_a_valid_name_or_refused(name: str) -> None:
    try:
        assert model.check_name(name) == name
    except model.EnvError as exc:
        assert "not valid" in exc.message
    else:
        assert "/" not in name and not name.startswith(".")


def test_the_resolver_failures_name_the_package_and_the_reason() -> None:
    missing = model.resolver_error(
        [
            "error: No solution found when resolving dependencies",
            "  cause: Because nonexistent-pkg-kf-xyz was not found in the package registry and "
            "you require nonexistent-pkg-kf-xyz, we can conclude that your requirements are "
            "unsatisfiable.",
        ],
        INDEX,
    )
    assert missing.startswith("Package 'nonexistent-pkg-kf-xyz' was not found in the package")
    pin = model.resolver_error(
        [
            "error: No solution found when resolving dependencies",
            "  cause: Because there is no version of six==0.0.999 and you require six==0.0.999,"
            " we can conclude that your requirements are unsatisfiable.",
        ],
        INDEX,
    )
    assert pin.startswith("Package 'six==0.0.999' does not resolve: no version matches")
    other = model.resolver_error(["error: something unexpected happened"], INDEX)
    assert other == "The environment could not be built: error: something unexpected happened"


@given(st.lists(st.text(max_size=200), max_size=6))
def test_any_resolver_output_gives_one_message(lines: list[str]) -> None:
    message = model.resolver_error(lines, INDEX)
    assert isinstance(message, str) and message


def test_quotas_name_their_limit() -> None:
    quota = model.Quota(creators=frozenset({"ann"}), max_per_user=2, max_disk_mb_per_user=100)
    model.check_may_create("ann", False, [], quota)
    model.check_may_create("root", True, [], model.Quota())
    model.check_may_create("bob", False, ["ds"], model.Quota(creator_groups=frozenset({"ds"})))
    with pytest.raises(Forbidden, match="KF_ENV_CREATORS"):
        model.check_may_create("bob", False, ["x"], quota)
    with pytest.raises(LimitReached, match=r"max_envs_per_user = 2"):
        model.check_count("ann", model.Usage(2, 0), quota)
    model.check_count("ann", model.Usage(1, 0), quota)
    with pytest.raises(LimitReached, match=r"max_env_disk_mb_per_user = 100 MB"):
        model.check_disk("ann", model.Usage(1, 60_000_000), 50_000_000, quota)


def test_a_record_survives_json_and_shows_its_lock() -> None:
    record = model.EnvRecord(
        name="e",
        owner="ann",
        kind="ssh",
        kernel_name="e",
        python="/usr/bin/python3.11",
        lock="six==1.17.0 \\\n    --hash=sha256:ab\nipykernel==7.4.0\n",
        sha256="f" * 64,
    )
    back = model.EnvRecord.from_json(record.to_json())
    assert back == record
    assert back.summary()["lock"] == {"ipykernel": "7.4.0", "six": "1.17.0"}
    assert back.digest12 == "f" * 12


def test_uv_builds_wheels_only_from_the_index_unless_told() -> None:
    uv = model.UvArgs("/bin/uv", INDEX, "/c")
    argv = model.compile_argv(uv, "/usr/bin/python3.11", "in.txt", "lock.txt")
    assert argv[argv.index("--only-binary") + 1] == ":all:"
    assert argv[argv.index("--index-url") + 1] == INDEX
    assert "--no-config" in argv and "--no-python-downloads" in argv
    assert "--only-binary" not in model.compile_argv(
        model.UvArgs("/bin/uv", INDEX, "/c", source_builds=True), "/p", "i", "o"
    )
    assert "--require-hashes" in model.sync_argv(uv, "/e/bin/python", "lock.txt")


def test_python_is_an_installed_interpreter_or_a_clear_error() -> None:
    have = [
        Interpreter("/usr/bin/python3.11", "3.11.2"),
        Interpreter("/usr/bin/python3.9", "3.9.2"),
    ]
    assert choose("3.11", have).path == "/usr/bin/python3.11"
    assert choose("3", have).version == "3.11.2"
    assert choose("/usr/bin/python3.9", have).version == "3.9.2"
    with pytest.raises(PublicError, match=r"Python 3.13 is not installed on the gateway"):
        choose("3.13", have)
    with pytest.raises(PublicError, match=r"not an installed interpreter"):
        choose("/tmp/python", have)
    with pytest.raises(PublicError, match=r"must be a version like 3.11"):
        choose("3.11; rm -rf /", have)
