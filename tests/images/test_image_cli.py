"""``kernelfleet image build | import | list`` as a user runs them, with the busybox image (no
Debian, no root) and, where containerd is installed and we are root, a real ``ctr`` import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernelfleet.images import build
from kernelfleet.images.oci import read_oci_archive

KF = [sys.executable, "-m", "kernelfleet"]
needs_busybox = pytest.mark.skipif(
    not Path("/bin/busybox").exists(), reason="apt-get install busybox-static"
)


def kf(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KF_")}
    if cache is not None:
        env["KF_IMAGE_CACHE"] = str(cache)
    return subprocess.run(
        [*KF, "image", *args], capture_output=True, text=True, env=env, timeout=120
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # no traceback
    return lines[0]


@needs_busybox
def test_build_prints_ref_and_archive_and_reuses_the_cache(tmp_path: Path) -> None:
    done = kf("build", "busybox", f"--cache-dir={tmp_path}")
    assert done.returncode == 0, done.stderr
    ref, archive = done.stdout.split()
    assert ref.startswith("kernelfleet.test/busybox:0.") and ":latest" not in ref
    assert Path(archive).parent == tmp_path and archive.endswith(".oci.tar")
    assert read_oci_archive(Path(archive)).ref == ref
    assert "built" in done.stderr
    mtime = Path(archive).stat().st_mtime_ns
    again = kf("build", "busybox", cache=tmp_path)  # KF_IMAGE_CACHE
    assert again.returncode == 0 and again.stdout == done.stdout
    assert Path(archive).stat().st_mtime_ns == mtime and "built" not in again.stderr
    listed = kf("list", cache=tmp_path)
    assert listed.returncode == 0
    header, row = listed.stdout.strip().splitlines()
    assert header.split() == ["REF", "RECIPE", "SIZE", "CURRENT", "ARCHIVE"]
    assert row.split()[0] == ref and "busybox" in row and " yes " in row
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".build-")] == []


def test_errors_are_one_line_with_the_fix(tmp_path: Path) -> None:
    done = kf("build", "nosuch", f"--cache-dir={tmp_path}")
    assert done.returncode == 2
    assert one_error_line(done) == (
        "kernelfleet image build: error: no image named 'nosuch': "
        "choose among python, r, busybox, gateway"
    )
    done = kf("import", str(tmp_path / "x.oci.tar"), "--containerd-socket", str(tmp_path / "s"))
    assert done.returncode == 1
    assert "no containerd socket at" in one_error_line(done)
    done = kf("import", "busybox")
    assert done.returncode == 2
    assert "exactly one of --containerd-socket and --docker-host" in one_error_line(done)
    assert "no images in" in kf("list", cache=tmp_path / "empty").stdout


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Path]:
    """A private containerd (CRI off) on a socket of its own; stopped at the end."""
    if os.geteuid() != 0 or not shutil.which("containerd") or not shutil.which("ctr"):
        pytest.skip("needs root and containerd (apt-get install containerd)")
    d = tmp_path / "ctd"
    d.mkdir()
    sock = d / "containerd.sock"
    (d / "config.toml").write_text(
        f'version = 2\nroot = "{d}/root"\nstate = "{d}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
    )
    log = open(d / "log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["containerd", "-c", str(d / "config.toml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while not sock.is_socket():
            assert proc.poll() is None, (d / "log").read_text()
            assert time.monotonic() < deadline, "containerd did not start"
            time.sleep(0.05)
        yield sock
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["umount", "-R", str(d / "state")], capture_output=True)


@needs_busybox
def test_ctr_import_names_the_image_and_it_runs(containerd: Path, tmp_path: Path) -> None:
    done = kf("import", "busybox", f"--containerd-socket={containerd}", cache=tmp_path / "c")
    assert done.returncode == 0, done.stderr
    ref = build.image_ref("busybox")
    assert done.stdout.strip() == f"imported {ref}"
    ctr = ["ctr", "-a", str(containerd), "-n", "k8s.io"]
    listed = subprocess.run([*ctr, "images", "ls", "-q"], capture_output=True, text=True)
    assert listed.stdout.split() == [ref]
    run = subprocess.run(
        [*ctr, "run", "--rm", ref, "t1", "sh", "-c", "echo $(id -u):$PATH"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "0:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
