"""The kernel-side launcher's pieces that need no kernel: its arguments, its ports, its
environment check (a real launch is in tests/listener)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kernelfleet.launchers import kernel_launcher as kl

LAUNCHER = Path(kl.__file__)


def test_the_kernel_argv_comes_after_a_double_dash() -> None:
    args = kl.parse_args(["--kernel-name", "py", "--", "python3", "-f", "{connection_file}"])
    assert args.kernel_argv == ["python3", "-f", "{connection_file}"]
    assert args.kernel_name == "py" and args.port_range is None and not args.curve


def test_the_kernel_argv_may_be_json() -> None:
    args = kl.parse_args(["--argv-json", json.dumps(["a b", "--x=$(y)"])])
    assert args.kernel_argv == ["a b", "--x=$(y)"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--argv-json", "{}"],
        ["--argv-json", "[1]"],
        ["--argv-json", "not json"],
        ["--argv-json", '["a"]', "--", "b"],
        ["--port-range", "10..12", "--", "k"],
        ["--port-range", "9000", "--", "k"],
        ["--port-range", "70000..70010", "--", "k"],
    ],
)
def test_bad_arguments_are_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        kl.parse_args(argv)
    assert caught.value.code == 2


def test_ports_are_held_inside_the_range() -> None:
    held = kl.hold_ports("127.0.0.1", (41000, 41019))
    try:
        ports = [sock.getsockname()[1] for sock in held]
        assert len(set(ports)) == 5 and all(41000 <= p <= 41019 for p in ports)
    finally:
        for sock in held:
            sock.close()


def test_a_range_without_five_free_ports_is_an_error() -> None:
    busy = []
    for port in range(41100, 41104):  # four of the five ports serve something else
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        sock.listen()
        busy.append(sock)
    try:
        with pytest.raises(kl.LaunchError, match="fewer than 5 free ports"):
            kl.hold_ports("127.0.0.1", (41100, 41104))
    finally:
        for sock in busy:
            sock.close()


def test_the_connection_file_is_private(tmp_path: Path) -> None:
    path = kl.write_connection_file(str(tmp_path), "k1", {"key": "x"})
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert json.loads(Path(path).read_text()) == {"key": "x"}


def test_without_the_response_environment_the_launcher_exits_2_and_starts_nothing(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "started"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KF_RESPONSE_")}
    done = subprocess.run(
        [sys.executable, str(LAUNCHER), "--", "touch", str(marker)],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "KF_RESPONSE_KEY" in done.stderr
    assert not marker.exists()
