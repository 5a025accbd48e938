"""`kernelfleet spec install | list | remove` on this machine: files, atomic replace, output."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernelfleet.cli.spec import ListApp, LocalInstallApp, RemoveApp, SSHInstallApp
from kernelfleet.errors import Conflict
from kernelfleet.specs import installer
from kernelfleet.specs.builders import SpecOptions


def cli(app_cls: type, argv: list[str]) -> int:
    app = app_cls()
    try:
        app.initialize(argv)
        app.start()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_install_ssh_writes_a_complete_spec(
    prefix: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(
        SSHInstallApp,
        [
            f"--prefix={prefix}",
            "--remote-hosts=h1,h2",
            "--remote-hosts",
            "h3",
            "--spark",
            "--spark-master=spark://m:7077",
            "--authorized-users=alice",
            "--launch-timeout=30",
        ],
    )
    assert code == 0
    d = prefix / "share/jupyter/kernels/ssh_python_spark"
    spec = json.loads((d / "kernel.json").read_text())
    cfg = spec["metadata"]["kernel_provisioner"]["config"]
    assert cfg == {
        "remote_hosts": ["h1", "h2", "h3"],
        "authorized_users": ["alice"],
        "launch_timeout": 30,
    }
    assert os.access(d / "bin/run.sh", os.X_OK)
    assert (d / "scripts/spark_kernel.py").is_file()
    assert (d / "logo-64x64.png").is_file()
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".kf-")]
    assert "spec sync ssh_python_spark" in capsys.readouterr().out

    # exists -> refused without --replace, replaced with it
    assert cli(SSHInstallApp, [f"--prefix={prefix}", "--spark"]) == 1
    assert "--replace" in capsys.readouterr().err
    assert cli(SSHInstallApp, [f"--prefix={prefix}", "--spark", "--replace"]) == 0
    spec = json.loads((d / "kernel.json").read_text())
    assert "remote_hosts" not in spec["metadata"]["kernel_provisioner"]["config"]
    assert "Replaced" in capsys.readouterr().out


def test_env_vars_set_options_and_the_command_line_wins(
    prefix: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KF_SPEC_KERNEL_NAME", "from_env")
    monkeypatch.setenv("KF_SPEC_REMOTE_HOSTS", "e1,e2")
    assert cli(SSHInstallApp, ["--dry-run", "--display-name=CLI"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["display_name"] == "CLI"
    assert out["metadata"]["kernel_provisioner"]["config"]["remote_hosts"] == ["e1", "e2"]
    assert cli(SSHInstallApp, ["--dry-run", "--kernel-name=cli"]) == 0
    assert capsys.readouterr().err.count("kernels/cli") == 1
    monkeypatch.setenv("KF_SPEC_LAUNCH_TIMEOUT", "soon")
    assert cli(SSHInstallApp, ["--dry-run"]) == 2
    assert "KF_SPEC_LAUNCH_TIMEOUT" in capsys.readouterr().err


def test_config_file_sits_between_env_and_command_line(
    prefix: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "kernelfleet_config.py").write_text(
        "c.SSHInstallApp.kernel_name = 'from_file'\nc.SSHInstallApp.display_name = 'File'\n"
    )
    monkeypatch.setenv("KF_SPEC_KERNEL_NAME", "from_env")
    monkeypatch.setenv("KF_SPEC_DISPLAY_NAME", "Env")
    assert cli(SSHInstallApp, ["--dry-run", "--display-name=CLI"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["display_name"] == "CLI"
    assert "kernels/from_file" in captured.err


def test_dry_run_writes_nothing(prefix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(SSHInstallApp, [f"--prefix={prefix}", "--dry-run", "--language=R"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["argv"][0] == "R"
    assert not (prefix / "share").exists()


def test_bad_option_is_a_usage_error(prefix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(SSHInstallApp, [f"--prefix={prefix}", "--port-range=80..90"]) == 2
    assert "port_range" in capsys.readouterr().err
    assert cli(SSHInstallApp, [f"--prefix={prefix}", "--user", "--sys-prefix"]) == 2


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--spark_opts=--conf a=b"], "--spark_opts"),
        (["--SSHInstallApp.spark_opts=x"], "extra_spark_opts"),
        (["--NoSuchClass.opt=1"], "--NoSuchClass"),
        (["--spark-opts=--conf a=b"], "--spark-opts"),
    ],
)
def test_an_unknown_option_is_a_usage_error_that_names_it(
    prefix: Path, capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    assert cli(SSHInstallApp, [f"--prefix={prefix}", "--remote-hosts=h1", *argv]) == 2
    assert named in capsys.readouterr().err
    assert not (prefix / "share").exists()


def test_replace_restores_the_old_spec_when_the_swap_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "kernels"
    installer.install(SpecOptions(kernel_name="k", display_name="old"), root)
    real_rename = os.rename
    calls: list[str] = []

    def flaky_rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append(str(dst))
        if len(calls) == 2:  # moving the new spec into place
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(installer.os, "rename", flaky_rename)
    with pytest.raises(installer.InstallError, match="previous version was kept"):
        installer.install(SpecOptions(kernel_name="k", display_name="new"), root, replace=True)
    monkeypatch.setattr(installer.os, "rename", real_rename)
    spec = json.loads((root / "k" / "kernel.json").read_text())
    assert spec["display_name"] == "old"
    assert [p.name for p in root.iterdir()] == ["k"]  # no staging or backup left


def test_failure_while_staging_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "kernels"

    def broken(*_: object) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(installer, "launcher_source", broken)
    with pytest.raises(installer.InstallError):
        installer.install(SpecOptions(kernel_name="k", spark=True), root)
    assert list(root.iterdir()) == []
    with pytest.raises(Conflict):
        installer.install(SpecOptions(kernel_name="k"), root)
        installer.install(SpecOptions(kernel_name="k"), root)


def test_list_and_remove(prefix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(SSHInstallApp, [f"--prefix={prefix}", "--remote-hosts=h1,h2"]) == 0
    assert cli(LocalInstallApp, [f"--prefix={prefix}", "--language=r"]) == 0
    capsys.readouterr()
    assert cli(ListApp, ["--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["ssh_python"]["hosts"] == ["h1", "h2"]
    assert rows["ssh_python"]["provisioner"] == "kernelfleet-ssh"
    assert rows["local_r"]["language"] == "R"
    assert cli(ListApp, []) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split() == [
        "NAME",
        "DISPLAY",
        "NAME",
        "PROVISIONER",
        "HOSTS",
        "LANGUAGE",
    ]
    assert "h1,h2" in text
    assert cli(RemoveApp, ["ssh_python"]) == 0
    assert not (prefix / "share/jupyter/kernels/ssh_python").exists()
    assert cli(RemoveApp, ["ssh_python"]) == 1
    assert "no kernelspec named 'ssh_python'" in capsys.readouterr().err


def test_console_script_help_lists_every_installer_option(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kernelfleet", "spec", "install", "ssh", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for opt in (
        "--kernel-name",
        "--display-name",
        "--language",
        "--remote-hosts",
        "--authorized-users",
        "--unauthorized-users",
        "--port-range",
        "--launch-timeout",
        "--ipykernel-subclass-name",
        "--spark",
        "--spark-master",
        "--spark-home",
        "--spark-init-mode",
        "--extra-spark-opts",
        "--user",
        "--sys-prefix",
        "--prefix",
        "--replace",
        "--python",
        "--dry-run",
    ):
        assert opt in out, opt


async def test_a_local_spec_runs_through_the_gateway(
    prefix: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kernelfleet.client import stdout_of
    from tests.conftest import client_for, temp_gateway

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    root = prefix / "share" / "jupyter" / "kernels"
    base = SpecOptions(kind="local", kernel_name="kf_local", python=sys.executable)
    # --authorized-users is enforced by the gateway: the test client is user 'gateway'
    installer.install(dataclasses.replace(base, authorized_users=("alice",)), root)
    async with temp_gateway() as gw:
        status, body = await client_for(gw).request("POST", "/api/kernels", {"name": "kf_local"})
        assert status == 403 and "authorized_users" in body["message"]
    installer.install(
        dataclasses.replace(base, authorized_users=("gateway",), launch_timeout=30),
        root,
        replace=True,
    )
    async with temp_gateway() as gw:
        client = client_for(gw)
        kernel = await client.start_kernel("kf_local")
        try:
            ws = await client.connect(kernel["id"])
            try:
                reply, iopub = await ws.execute("print(6 * 7)")
            finally:
                ws.close()
            assert reply["status"] == "ok" and stdout_of(iopub) == "42\n"
        finally:
            await client.shutdown_kernel(kernel["id"])


def test_kernels_dir_follows_user_sys_prefix_and_prefix(tmp_path: Path) -> None:
    from jupyter_core.paths import SYSTEM_JUPYTER_PATH, jupyter_data_dir

    assert installer.kernels_dir(user=True) == Path(jupyter_data_dir()) / "kernels"
    assert installer.kernels_dir(sys_prefix=True) == Path(sys.prefix) / "share/jupyter/kernels"
    assert installer.kernels_dir(prefix=str(tmp_path)) == tmp_path / "share/jupyter/kernels"
    assert installer.kernels_dir() == Path(SYSTEM_JUPYTER_PATH[0]) / "kernels"
