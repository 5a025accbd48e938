"""``kernelfleet spec install`` with hostile option values: a kernelspec in which the value is
inert data (kernel.json is valid JSON text, run.sh parses and never evaluates it), or exit 2
with a one-line error; never a traceback. Also the pure builders behind it.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from traitlets import TraitError

from kernelfleet.cli.spec import LocalInstallApp, SSHInstallApp
from kernelfleet.errors import PublicError
from kernelfleet.specs import builders
from kernelfleet.specs.builders import SpecOptions
from kernelfleet.specs.installer import install
from tests.fuzz.strategies import HOSTILE_WORDS, any_text, fuzz_settings
from tests.specs.test_install_cli import cli

#: Commands hidden in values; MARK becomes a file that must never come to exist.
SHELL_TRICKS = [
    "$(touch MARK)",
    "`touch MARK`",
    "';touch MARK;'",
    '";touch MARK;"',
    "${IFS}$(touch${IFS}MARK)",
    "\\$(touch MARK)",
    "x\ntouch MARK",
    "$(touch MARK)'",
    "a b",
    "--conf x=$(touch MARK)",
    "--conf 'x=$(touch MARK)'",
    '--conf "x=`touch MARK`"',
]

#: What a command line (or a KF_SPEC_* variable) can carry: no NUL; bytes that are not UTF-8
#: arrive as \udc80-\udcff (surrogateescape).
argv_chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00") | st.characters(
    min_codepoint=0xDC80, max_codepoint=0xDCFF
)
argv_text = (
    st.text(argv_chars, max_size=20)
    | st.sampled_from([w for w in HOSTILE_WORDS if "\x00" not in w and w.isprintable()])
    | st.sampled_from(SHELL_TRICKS)
)
paths = (
    argv_text
    | st.sampled_from(
        ["/opt/py/bin/python3", "/a b/py", "/x'y", '/x"y', "/x\\y", "/x$y", "/x`y", "/x;y", "/"]
    )
    | argv_text.map(lambda t: "/opt/" + t)
)
OPTIONS: dict[str, Any] = {
    "--kernel-name": argv_text | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,70}", fullmatch=True),
    "--display-name": argv_text,
    "--remote-hosts": argv_text | st.sampled_from(["h1", "h1,h2", "10.0.0.1", "::1", "h:22"]),
    "--port-range": argv_text
    | st.sampled_from(
        [
            "40000..41000",
            "1024..1028",
            "65531..65535",
            "0..0",
            "5..1",
            "1..2**99",
            "40000..40000",
            "-1..5",
            "٤٠٠٠٠..٤١٠٠٠",
            "40_000..41_000",
        ]
    ),
    "--extra-spark-opts": argv_text,
    "--python": paths,
    "--spark-home": paths,
    "--spark-master": argv_text
    | st.sampled_from(["yarn", "local[2]", "local[*]", "spark://m:7077", "k8s://https://k:6443"]),
    "--authorized-users": argv_text,
    "--unauthorized-users": argv_text,
    "--launch-timeout": argv_text
    | st.sampled_from(["30", "0", "-1", "nan", "inf", "1e999", "1e-9"]),
    "--ipykernel-subclass-name": argv_text | st.sampled_from(["a.B", "a", "a..b", "a.b.c"]),
    "--toree-jar": paths,
    "--language": argv_text | st.sampled_from(["python", "R", "scala", "SCALA"]),
    "--spark-init-mode": argv_text | st.sampled_from(["lazy", "eager", "none", "EAGER"]),
    "--load-balancing-algorithm": argv_text
    | st.sampled_from(["round-robin", "least-connection", "load"]),
}
#: Options whose values traitlets converts itself (before kernelfleet sees them).
TYPED = {"--launch-timeout", "--language", "--spark-init-mode"}
SSH_ONLY = {"--remote-hosts", "--port-range", "--load-balancing-algorithm"}


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    """Where a hostile value would leave its mark if anything ever evaluated it."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a hostile value was evaluated"


def with_marker(value: str, marker: Path) -> str:
    return value.replace("MARK", str(marker))


@pytest.mark.filterwarnings(
    # traitlets strips quotes around a KF_SPEC_* value ('x' -> x) and says it is deprecated
    "ignore:Supporting extra quotes around strings is deprecated:DeprecationWarning"
)
@fuzz_settings(250)
@given(local=st.booleans(), spark=st.booleans(), via_env=st.booleans(), data=st.data())
def test_any_option_value_installs_inert_data_or_is_a_one_line_usage_error(
    local: bool,
    spark: bool,
    via_env: bool,
    data: st.DataObject,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    marker: Path,
) -> None:
    known = sorted(set(OPTIONS) - SSH_ONLY) if local else sorted(OPTIONS)
    chosen = data.draw(st.lists(st.sampled_from(known), max_size=4, unique=True), "options")
    given_options = {k: with_marker(data.draw(OPTIONS[k], k), marker) for k in chosen}
    prefix = Path(tempfile.mkdtemp(dir=tmp_path))
    argv = [f"--prefix={prefix}"] + (["--spark"] if spark else [])
    app_cls = LocalInstallApp if local else SSHInstallApp
    capsys.readouterr()
    with monkeypatch.context() as env:
        for name in ("KF_SPEC_PYTHON", "SPARK_HOME"):
            env.delenv(name, raising=False)
        for option, value in given_options.items():
            if via_env:  # the same option as its KF_SPEC_* variable
                env.setenv("KF_SPEC_" + option[2:].upper().replace("-", "_"), value)
            else:
                argv.append(f"{option}={value}")
        try:
            code: int | str = cli(app_cls, argv)
        except TraitError:
            code = "TraitError"
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    event(f"exit {code}")
    if code != 0:
        assert code == 2, (code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{app_cls.name}: error: "), err
        assert not any(prefix.rglob("kernel.json"))
        return
    (spec_dir,) = {p.parent for p in prefix.rglob("kernel.json")}
    check_installed(spec_dir)
    assert not marker.exists()


def check_installed(spec_dir: Path) -> None:
    """kernel.json is UTF-8 JSON whose env holds no template; run.sh (if any) parses."""
    spec = json.loads((spec_dir / "kernel.json").read_bytes().decode("utf-8"))
    assert all(isinstance(a, str) for a in spec["argv"])
    for value in spec["env"].values():
        assert isinstance(value, str) and "$" not in value  # jupyter_client substitutes ${…}
    run_sh = spec_dir / "bin" / "run.sh"
    if run_sh.exists():
        parsed = subprocess.run(["bash", "-n", str(run_sh)], capture_output=True, timeout=30)
        assert parsed.returncode == 0, (parsed.stderr, run_sh.read_text())


# -- run.sh, run for real ----------------------------------------------------------------------


@pytest.fixture
def fake_spark(tmp_path: Path) -> Path:
    """A SPARK_HOME whose spark-submit records its argv (NUL-separated) and exits."""
    home = tmp_path / "fakespark"
    (home / "bin").mkdir(parents=True)
    submit = home / "bin" / "spark-submit"
    submit.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > "$ARGS_OUT"\n')
    submit.chmod(0o755)
    return home


def run_kernel_command(spec_dir: Path, tmp_path: Path, extra: str | None) -> tuple[int, list[str]]:
    """Start the kernelspec's argv as the agent would: kernel.json env, KERNEL_ID, the
    request's KERNEL_EXTRA_SPARK_OPTS; returns the exit status and spark-submit's argv."""
    spec = json.loads((spec_dir / "kernel.json").read_text())
    out = tmp_path / "args"
    out.unlink(missing_ok=True)
    env = {"PATH": "/usr/bin:/bin", "KERNEL_ID": "kid-1", "ARGS_OUT": str(out), **spec["env"]}
    if extra is not None:
        env["KERNEL_EXTRA_SPARK_OPTS"] = extra
    argv = [a.replace("{connection_file}", str(tmp_path / "c.json")) for a in spec["argv"]]
    proc = subprocess.run(argv, env=env, capture_output=True, cwd=tmp_path, timeout=60)
    words = out.read_bytes().split(b"\0")[:-1] if out.exists() else []
    return proc.returncode, [w.decode("utf-8", "surrogateescape") for w in words]


#: Request options: well-formed ones carrying hostile values (quoted), and hostile text.
well_formed = st.tuples(
    st.sampled_from(["--conf", "--driver-java-options", "--queue", "--jars"]),
    argv_text | st.sampled_from(SHELL_TRICKS),
    st.booleans(),
).map(lambda o: f"{o[0]}={shlex.quote(o[1])}" if o[2] else f"{o[0]} {shlex.quote(o[1])}")
request_options = st.one_of(
    st.none(), st.sampled_from(SHELL_TRICKS), argv_text, well_formed, well_formed, well_formed
)
#: Install-time values: usually good, now and then one hostile one.
install_time = st.sampled_from(["python", "spark_home", "admin_opts", None, None, None])


@fuzz_settings(60)
@given(
    hostile=install_time,
    value=paths | argv_text,
    admin_opts=st.sampled_from(["", "--conf 'spark.x=a b'", "--verbose --conf=a=b"]),
    request_opts=request_options,
    language=st.sampled_from(["python", "r", "scala"]),
    init_mode=st.sampled_from(["eager", "eager", "none", "lazy"]),
)
def test_generated_run_sh_passes_hostile_values_as_data(
    hostile: str | None,
    value: str,
    admin_opts: str,
    request_opts: str | None,
    language: str,
    init_mode: str,
    fake_spark: Path,
    tmp_path: Path,
    marker: Path,
) -> None:
    """Eager and none: run.sh execs spark-submit; lazy: the launcher (which fails here, there
    is no connection file, after it has split the options for PySpark)."""
    fields = {"python": sys.executable, "spark_home": str(fake_spark), "admin_opts": admin_opts}
    if hostile is not None:
        fields[hostile] = with_marker(value, marker)
    opts = SpecOptions(
        spark=True,
        language=language,
        python=fields["python"],
        spark_home=fields["spark_home"],
        spark_master="spark://m:7077",
        spark_init_mode=init_mode,
        extra_spark_opts=fields["admin_opts"],
        toree_jar="/opt/toree.jar",
    )
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        done = install(opts, root)
    except PublicError as exc:
        assert exc.status == 400, exc.message
        event("refused at install")
        return
    check_installed(done.path)
    request = None if request_opts is None else with_marker(request_opts, marker)
    code, words = run_kernel_command(done.path, tmp_path, request)
    assert not marker.exists(), (opts, request)
    if not words:
        event(f"run.sh exit {code}, no spark-submit")
        assert code != 0
        return
    event("spark-submit ran")
    admin = builders.split_spark_opts(opts.extra_spark_opts, what="x", trusted=True)
    head = ["--name", "kid-1", "--master", "spark://m:7077", "--deploy-mode", "client", *admin]
    assert words[: len(head)] == head
    if request:
        requested = builders.split_spark_opts(request, what="x", trusted=False)
        assert words[len(head) : len(head) + len(requested)] == requested
    shutil.rmtree(root)


# -- the pure builders -------------------------------------------------------------------------

VALID = SpecOptions(
    kernel_name="k",
    python="/opt/py/bin/python3",
    remote_hosts=("h1",),
    port_range="40000..41000",
    spark=True,
    spark_master="spark://m:7077",
    spark_home="/opt/spark",
    extra_spark_opts="--conf spark.x=1",
    toree_jar="/opt/toree.jar",
)
FIELDS: dict[str, Any] = {
    "kind": st.sampled_from(["ssh", "local", "", "SSH", "x"]),
    "kernel_name": OPTIONS["--kernel-name"] | any_text,
    "display_name": argv_text | any_text,
    "language": OPTIONS["--language"],
    "python": paths | any_text,
    "remote_hosts": st.lists(OPTIONS["--remote-hosts"] | any_text, max_size=3).map(tuple),
    "load_balancing_algorithm": OPTIONS["--load-balancing-algorithm"],
    "authorized_users": st.lists(argv_text, max_size=2).map(tuple),
    "unauthorized_users": st.lists(argv_text, max_size=2).map(tuple),
    "port_range": OPTIONS["--port-range"],
    "launch_timeout": st.floats(),
    "ipykernel_subclass_name": OPTIONS["--ipykernel-subclass-name"],
    "spark": st.booleans(),
    "spark_master": OPTIONS["--spark-master"],
    "spark_home": paths | any_text,
    "spark_init_mode": OPTIONS["--spark-init-mode"],
    "extra_spark_opts": argv_text | any_text,
    "toree_jar": paths | any_text,
}
#: A valid spec with one to three fields replaced by hostile values.
option_objects = (
    st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=3, unique=True)
    .flatmap(lambda names: st.fixed_dictionaries({n: FIELDS[n] for n in names}))
    .map(lambda changes: dataclasses.replace(VALID, **changes))
)


@fuzz_settings(500)
@given(opts=option_objects)
def test_builders_make_a_writable_spec_or_raise_a_400(opts: SpecOptions) -> None:
    try:
        files = builders.build_spec(opts, "/srv/kernels/" + (opts.kernel_name or "k"))
    except PublicError as exc:
        assert exc.status == 400 and exc.message
        event("refused")
        return
    event("built")
    text = json.dumps(files.kernel_json)
    text.encode("utf-8")  # the installer writes it as UTF-8
    assert json.loads(text) == files.kernel_json
    for content, mode in files.files.values():
        content.encode("utf-8")
        assert mode == 0o755
    for value in files.kernel_json["env"].values():
        assert "$" not in value
    cfg = files.kernel_json["metadata"]["kernel_provisioner"]["config"]
    assert all(isinstance(h, str) for h in cfg.get("remote_hosts", []))
    assert cfg["launch_timeout"] > 0


@pytest.mark.parametrize("python", ["/opt/o'neil/bin/python", "/opt/py}/bin/python"])
def test_a_python_path_bash_would_misread_in_run_sh_is_a_usage_error(
    python: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was a run.sh that bash cannot parse (a single quote in ``"${KERNELFLEET_PYTHON:-…}"``)
    or that falls back to another interpreter (``}`` ends the default): every kernel of the
    spec failed to start."""
    code = cli(SSHInstallApp, [f"--prefix={tmp_path}", "--spark", f"--python={python}"])
    err = capsys.readouterr().err
    assert code == 2 and "must not contain quotes" in err, err
    assert not any(tmp_path.rglob("kernel.json"))


def test_a_python_path_that_is_not_utf8_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was a UnicodeEncodeError traceback: ``--python=$'/opt/py\\x80'`` reached run.sh, which
    is written as UTF-8."""
    for argv in (["--spark", "--python=/opt/py\udc80/bin/python"], ["--display-name=\udcff"]):
        code = cli(SSHInstallApp, [f"--prefix={tmp_path}", *argv])
        err = capsys.readouterr().err
        assert code == 2 and "must be UTF-8 text" in err, err
        assert not any(tmp_path.rglob("kernel.json"))


def test_a_value_traitlets_cannot_take_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--launch-timeout=soon"],
        ["--language=klingon"],
        ["--spark-init-mode=x"],
        ["--display-name=--"],  # argparse takes "--" for the end of options
    ):
        code = cli(SSHInstallApp, ["--dry-run", *argv])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("kernelfleet spec install ssh: error: "), err


def test_a_value_traitlets_cannot_take_from_the_environment_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KF_SPEC_SPARK_INIT_MODE", "bogus")
    code = cli(SSHInstallApp, ["--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and "KF_SPEC_SPARK_INIT_MODE" in err, err
