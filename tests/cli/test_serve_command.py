"""The `kernelfleet serve` command as an admin runs it: config, env vars, signals."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

KF = [sys.executable, "-m", "kernelfleet"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KF_")}
    env.update(
        KF_CONFIG_DIR=str(tmp_path / "cfg"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
    )
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_help_all_documents_every_option_with_its_env_var(tmp_path: Path) -> None:
    out = subprocess.run(
        [*KF, "serve", "--help-all"], capture_output=True, text=True, env=_env(tmp_path), check=True
    ).stdout
    for needle in (
        "--ip",
        "KF_IP",
        "--port",
        "KF_PORT",
        "--token",
        "KF_TOKEN",
        "KF_MAX_KERNELS_PER_USER",
        "KF_CULL_IDLE_TIMEOUT",
        "KF_LEGACY_BUFFERS",
    ):
        assert needle in out


def test_generate_config_writes_a_commented_file(tmp_path: Path) -> None:
    env = _env(tmp_path)
    subprocess.run([*KF, "serve", "--generate-config"], env=env, check=True, capture_output=True)
    text = (tmp_path / "cfg" / "kernelfleet_config.py").read_text()
    assert "c.Gateway.port" in text and "KF_PORT" in text and "c.Culler.cull_idle_timeout" in text
    again = subprocess.run([*KF, "serve", "--generate-config"], env=env, capture_output=True)
    assert again.returncode == 1 and b"-y" in again.stderr


def test_a_bad_env_value_stops_the_start_with_its_name(tmp_path: Path) -> None:
    res = subprocess.run(
        [*KF, "serve"],
        env=_env(tmp_path, KF_PORT="eighty"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2
    assert "KF_PORT" in res.stderr


def _wait_up(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("gateway did not start")


def _post(port: int, token: str) -> dict[str, str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/kernels",
        method="POST",
        data=b'{"name": "python3"}',
        headers={"Authorization": f"token {token}"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return dict(json.loads(resp.read()))


def _kernel_pids(kernel_id: str) -> list[int]:
    res = subprocess.run(["pgrep", "-f", "ipykernel_launcher"], capture_output=True, text=True)
    pids = []
    for pid in res.stdout.split():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if f"KERNEL_ID={kernel_id}".encode() in env:
            pids.append(int(pid))
    return pids


@pytest.mark.parametrize("leave_running", [False, True])
def test_sigterm_stops_the_gateway_and_its_kernels_unless_told_to_leave_them(
    tmp_path: Path, leave_running: bool
) -> None:
    port = _free_port()
    args = [*KF, "serve", "--port", str(port), "--port-retries", "0"]
    if leave_running:
        args.append("--leave-kernels-running")
    env = _env(tmp_path, KF_TOKEN="tok")
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_up(port, proc)
        kernel = _post(port, "tok")
        assert _kernel_pids(kernel["id"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        pids = _kernel_pids(kernel["id"])
        if leave_running:
            assert pids, "the kernel should survive the gateway"
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        else:
            deadline = time.monotonic() + 10
            while _kernel_pids(kernel["id"]) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _kernel_pids(kernel["id"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def test_a_generated_token_is_printed_and_required(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [*KF, "serve", "--port", str(port)],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_up(port, proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        token = line.strip().split("token=")[1]
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernels", timeout=10)
        assert info.value.code == 401
        info.value.close()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/kernels", headers={"Authorization": f"token {token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_help_lists_each_command_on_its_own_line_and_reads_without_stray_indents(
    tmp_path: Path,
) -> None:
    top = subprocess.run(
        [*KF, "--help"], capture_output=True, text=True, env=_env(tmp_path), check=True
    ).stdout
    lines = top.splitlines()
    for command in ("serve", "spec", "hosts"):
        assert command in lines, top
    assert "kernelfleet hosts check" in top
    serve = subprocess.run(
        [*KF, "serve", "--help"], capture_output=True, text=True, env=_env(tmp_path), check=True
    ).stdout
    # option help is indented by 4; nothing (help text or examples) by more
    deep = [line for line in serve.splitlines() if line.startswith(" " * 5)]
    assert not deep, deep
    assert "    kernelfleet serve --generate-config" in serve.splitlines()


def _serve_log(tmp_path: Path, *args: str) -> str:
    """The log of a gateway that starts, answers one request and is stopped."""
    port = _free_port()
    proc = subprocess.Popen(
        [*KF, "serve", "--port", str(port), "--token=t", *args],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_up(port, proc)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api", headers={"Authorization": "token t"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    return err


def test_log_lines_carry_level_and_time_and_log_level_is_honoured(tmp_path: Path) -> None:
    info = _serve_log(tmp_path)
    listening = [line for line in info.splitlines() if "listening on" in line]
    assert listening and re.match(r"^\[I \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ", listening[0])
    assert "was not recognized" not in info  # the old 'log_level' warning
    quiet = _serve_log(tmp_path, "--log-level=WARN")
    assert "listening on" not in quiet
    debug = _serve_log(tmp_path, "--debug")
    assert re.search(r"^\[D ", debug, re.MULTILINE), debug
