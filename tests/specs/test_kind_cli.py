"""``kernelfleet spec install <kind>`` made from a kind's class: a toy kind defined here (no
production code edited) gets a working subcommand with its own options and config builder;
the SSH settings of ``spec sync`` / ``hosts check`` come through the ssh kind."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from traitlets import Unicode
from traitlets.config import Application, Config

from kernelfleet.cli.hosts import CheckApp
from kernelfleet.cli.spec import (
    InstallApp,
    InstallBase,
    LocalInstallApp,
    SpecApp,
    SSHInstallApp,
    SyncApp,
    install_command,
)
from kernelfleet.config import option
from kernelfleet.specs.kinds import KINDS, SpecKind
from kernelfleet.specs.kinds import ssh as ssh_kind
from kernelfleet.specs.kinds.local import LocalKind
from kernelfleet.specs.kinds.ssh import SSHKind
from tests.specs.test_kinds import ToyKind


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "p" / "share" / "jupyter"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KF_CONFIG_DIR", str(tmp_path / "cfg"))
    for name in list(os.environ):
        if name.startswith("KF_SPEC_"):
            monkeypatch.delenv(name)
    monkeypatch.setitem(KINDS, "toy", ToyKind)
    return tmp_path


def kf_spec(*argv: str) -> tuple[int, str, str]:
    """``kernelfleet spec ARGV…`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            app = SpecApp()
            app.initialize(list(argv))
            app.start()
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:  # subcommands are traitlets singletons: leave none behind
            for cls in [InstallApp, *(install_command(k) for k in KINDS.values())]:
                cls.clear_instance()
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def no_singletons() -> Iterator[None]:
    yield
    Application.clear_instance()


def test_a_toy_kind_gets_a_working_install_subcommand(home: Path) -> None:
    code, out, _ = kf_spec("install", "--help")
    assert code == 0 and "toy" in out and ToyKind.description in out

    prefix = home / "pfx"
    code, out, err = kf_spec(
        "install",
        "toy",
        f"--prefix={prefix}",
        "--flavour=mint",
        "--toys=ball,kite",
        "--toys",
        "yoyo",
        "--loud",
        "--authorized-users=alice",
    )
    assert code == 0, err
    spec_dir = prefix / "share/jupyter/kernels/toy_python"
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "toy-provisioner",
        "config": {
            "flavour": "mint",
            "toys": ["ball", "kite", "yoyo"],
            "loud": True,
            "authorized_users": ["alice"],
            "launch_timeout": 60,
        },
    }
    assert spec["display_name"] == "Python in a toy box"
    assert out.splitlines() == [
        f"Installed kernelspec toy_python in {spec_dir}",
        "Next: put toy_python in the toy box.",
    ]


def test_a_toy_kinds_options_come_from_env_config_file_and_command_line(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KF_SPEC_TOY_TOYS", "ball,kite")
    monkeypatch.setenv("KF_SPEC_TOY_FLAVOUR", "chocolate")
    (home / "cfg").mkdir()
    (home / "cfg" / "kernelfleet_config.py").write_text("c.ToyInstallApp.flavour = 'vanilla'\n")
    code, out, err = kf_spec("install", "toy", "--dry-run")
    assert code == 0, err
    config = json.loads(out)["metadata"]["kernel_provisioner"]["config"]
    assert config == {"toys": ["ball", "kite"], "launch_timeout": 60}  # the file beat the env
    code, out, err = kf_spec("install", "toy", "--dry-run", "--flavour=mint")
    assert json.loads(out)["metadata"]["kernel_provisioner"]["config"]["flavour"] == "mint"


def test_a_toy_kinds_bad_values_and_foreign_options_are_usage_errors(home: Path) -> None:
    code, out, err = kf_spec("install", "toy", "--dry-run", "--flavour=chocolate")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "kernelfleet spec install toy: error: --flavour 'chocolate': use vanilla or mint"
    ]
    for argv, named in (
        (["--remote-hosts=h1"], "--remote-hosts"),
        (["--ToyInstallApp.flavor=mint"], "did you mean --ToyInstallApp.flavour?"),
    ):
        code, out, err = kf_spec("install", "toy", "--dry-run", *argv)
        assert code == 2 and named in err, err
        assert out == ""
    code, _, err = kf_spec("install", "ssh", "--dry-run", "--flavour=mint")
    assert code == 2 and "--flavour" in err


def test_spec_list_says_what_a_kind_without_hosts_runs_on(home: Path) -> None:
    prefix = home / "p"
    for kind in ("ssh", "local"):
        code, _, err = kf_spec("install", kind, f"--prefix={prefix}")
        assert code == 0, err
    code, out, _ = kf_spec("list")
    assert code == 0
    hosts = {line.split()[0]: line.split()[-2] for line in out.splitlines()[1:]}
    assert hosts["ssh_python"] == "(KF_REMOTE_HOSTS)" and hosts["local_python"] == "-"


def test_a_toy_kinds_help_lists_its_options(home: Path) -> None:
    code, out, _ = kf_spec("install", "toy", "--help")
    assert code == 0
    for text in (
        "--flavour=<Unicode>",
        "KF_SPEC_TOY_FLAVOUR",
        "--toys=<list-item-1>...",
        "--loud\n    Squeak when a kernel starts.",
        "Equivalent to: [--ToyInstallApp.loud=True]",
        "--spark-master=<Unicode>",
        "kernelfleet spec install toy --flavour=mint",
    ):
        assert text in out, text


def test_each_kind_has_one_command_named_for_configs() -> None:
    assert install_command(SSHKind) is SSHInstallApp
    assert install_command(LocalKind) is LocalInstallApp
    assert SSHInstallApp.__name__ == "SSHInstallApp" and SSHInstallApp.kind_class is SSHKind
    assert issubclass(install_command(ToyKind), InstallBase)
    assert install_command(ToyKind) is install_command(ToyKind)
    assert (
        "remote_hosts" in SSHInstallApp.class_traits()
        and not LocalInstallApp.class_traits(config=True).keys() & SSHKind.option_traits().keys()
    )


def test_a_kind_option_may_not_shadow_a_shared_one() -> None:
    class Clashing(SpecKind):
        kind = "clash"
        provisioner_name = "x"
        where = "(x)"
        description = "x"
        spark_home = option(Unicode("/x"), "KF_SPEC_X")

    with pytest.raises(TypeError, match="spark_home"):
        install_command(Clashing)


def test_the_fleet_commands_read_ssh_settings_through_the_ssh_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``hosts check`` and ``spec sync`` connect with the SSH provisioner's settings: the
    app config (``c.SSHProvisioner.*``, ``KF_SSH_*``), overridden by the kernelspec's config;
    kernelspec entries that are not settings (users, pool size, …) are ignored."""
    for name in ("KF_REMOTE_HOSTS", "KF_SSH_PORT", "KF_PORT_RANGE"):
        monkeypatch.delenv(name, raising=False)
    provisioner_class = ssh_kind.provisioner_class()
    assert CheckApp().option_classes == [CheckApp, provisioner_class]
    assert SyncApp().option_classes == [SyncApp, provisioner_class]
    config = Config({"SSHProvisioner": {"ssh_port": 2222, "remote_hosts": ["a"]}})
    settings = ssh_kind.provisioner_settings(config, None)
    assert settings.remote_hosts == ["a"]
    settings = ssh_kind.provisioner_settings(
        config,
        {"remote_hosts": ["b", "c"], "port_range": "40000..40100", "not_a_setting": 1},
    )
    assert settings.remote_hosts == ["b", "c"]
    assert settings.target_for("b").port == 2222
    assert (settings.ports().lo, settings.ports().hi) == (40000, 40100)
