"""The host-side receiver of kernel environments (kernelfleet/launchers/envrecv.py), without SSH.

Member safety is property-tested: whatever names, types and link targets a hostile archive
holds, unpacking writes nothing outside the environment's directory and never writes through
a symbolic link. The receiver's protocol runs in-process on a local directory: cached, shipped,
a wrong checksum or a cut transfer (no temp dir left), and remove's refusal of foreign files.
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import hashlib
import io
import json
import os
import posixpath
import stat
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernelfleet.launchers import envrecv
from kernelfleet.launchers.envrecv import (
    DIR,
    FILE,
    HARDLINK,
    OTHER,
    SYMLINK,
    MemberChecker,
    Refused,
    check_host_path,
    member_name,
    safe_mode,
)

# -- archives made in memory ---------------------------------------------------------------------

Member = tuple[str, str, str]  # (kind, name, linkname)


def tar_bytes(members: Sequence[Member], data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for kind, name, linkname in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == DIR:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == FILE:
                info.size, info.mode = len(data), 0o6777  # setuid, world-writable: stripped
                tar.addfile(info, io.BytesIO(data))
            elif kind == SYMLINK:
                info.type, info.linkname = tarfile.SYMTYPE, linkname
                tar.addfile(info)
            elif kind == HARDLINK:
                info.type, info.linkname = tarfile.LNKTYPE, linkname
                tar.addfile(info)
            else:
                info.type = tarfile.CHRTYPE
                tar.addfile(info)
    return buf.getvalue()


def unpack_bytes(archive: bytes, root: str) -> int:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r|gz") as tar:
        return envrecv.unpack(tar, root)


VENV: list[Member] = [
    (DIR, "bin", ""),
    (SYMLINK, "bin/python", "/usr/bin/python3.11"),
    (SYMLINK, "bin/python3", "python"),
    (SYMLINK, "bin/python3.11", "python"),
    (FILE, "bin/activate", ""),
    (DIR, "lib", ""),
    (DIR, "lib/python3.11/site-packages", ""),
    (FILE, "lib/python3.11/site-packages/six.py", ""),
    (HARDLINK, "lib/python3.11/site-packages/six_copy.py", "lib/python3.11/site-packages/six.py"),
    (SYMLINK, "lib64", "lib"),
    (FILE, "pyvenv.cfg", ""),
]


def test_a_relocatable_venv_unpacks_with_its_interpreter_links(tmp_path: Path) -> None:
    root = tmp_path / "env"
    root.mkdir()
    assert unpack_bytes(tar_bytes(VENV), str(root)) == 8
    assert os.readlink(root / "bin" / "python") == "/usr/bin/python3.11"
    assert os.readlink(root / "lib64") == "lib"
    six = root / "lib/python3.11/site-packages/six.py"
    assert six.read_bytes() == b"x"
    assert os.stat(six).st_ino == os.stat(root / "lib/python3.11/site-packages/six_copy.py").st_ino
    assert six.stat().st_mtime == 1_700_000_000  # .pyc files stay valid
    assert stat.S_IMODE(six.stat().st_mode) == 0o755  # no setuid, no group/other write


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ([(FILE, "/etc/cron.d/x", "")], "absolute path"),
        ([(FILE, "../x", "")], "leaves the environment"),
        ([(FILE, "lib/../../x", "")], "leaves the environment"),
        ([(OTHER, "dev/sda", "")], "device file"),
        ([(SYMLINK, "etc", "/etc")], "points outside"),
        ([(SYMLINK, "bin/python3", "/usr/lib/../../etc/python3")], "points outside"),
        ([(SYMLINK, "lib/python", "/usr/bin/python3")], "points outside"),  # not in bin/
        ([(SYMLINK, "up", "../outside")], "points outside"),
        ([(SYMLINK, "a/b/up", "../../..")], "points outside"),
        ([(HARDLINK, "passwd", "/etc/passwd")], "absolute path"),
        ([(HARDLINK, "x", "missing")], "not to an earlier regular file"),
        ([(SYMLINK, "l", "lib"), (HARDLINK, "x", "l")], "not to an earlier regular file"),
        ([(SYMLINK, "lib64", "lib"), (FILE, "lib64/x.py", "")], "below the non-directory"),
        ([(FILE, "a", ""), (FILE, "a", "")], "second member"),
        ([(FILE, "a/b", ""), (SYMLINK, "a", "b")], "second member"),
        ([(FILE, ".kf-env.json", "")], "marker"),
        ([(FILE, ".", "")], "root"),
    ],
)
def test_unsafe_members_are_refused(tmp_path: Path, members: list[Member], words: str) -> None:
    root = tmp_path / "env"
    root.mkdir()
    with pytest.raises(Refused, match=words) as caught:
        unpack_bytes(tar_bytes(members), str(root))
    assert caught.value.kind == "unsafe"


def test_a_symlink_to_an_outside_directory_named_like_python_cannot_be_written_through(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "python3"  # a directory an absolute "interpreter" link may point at
    outside.mkdir()
    root = tmp_path / "env"
    root.mkdir()
    members = [(SYMLINK, "bin/python3", str(outside)), (FILE, "bin/python3/evil.py", "")]
    with pytest.raises(Refused, match="below the non-directory"):
        unpack_bytes(tar_bytes(members), str(root))
    assert list(outside.iterdir()) == []


# -- properties ----------------------------------------------------------------------------------

PLAIN = st.sampled_from(["a", "b", "bin", "python3"])
PARTS = PLAIN | st.sampled_from(["..", ".", "", ".kf-env.json", "/"])
NAMES = (
    st.lists(PLAIN, min_size=1, max_size=3).map("/".join)
    | st.lists(PARTS, min_size=1, max_size=4).map("/".join)
    | st.text(max_size=12)
)
KINDS = st.sampled_from([FILE, DIR, SYMLINK, FILE, SYMLINK, HARDLINK, OTHER])


def link_targets(outside: str) -> st.SearchStrategy[str]:
    fixed = ["a", "b", "bin", "..", "../..", "a/..", "/usr/bin/python3.11", "/etc", outside, "/"]
    return st.sampled_from(fixed) | st.lists(PARTS, min_size=1, max_size=3).map("/".join)


@given(name=st.text())
def test_an_accepted_member_name_stays_inside_the_root(name: str) -> None:
    try:
        rel = member_name(name)
    except Refused:
        return
    assert not rel.startswith("/")
    assert ".." not in rel.split("/")
    joined = posixpath.normpath(posixpath.join("/root", rel))
    assert joined == "/root" or joined.startswith("/root/")


@given(path=st.text() | st.lists(PARTS, max_size=5).map(lambda p: "/" + "/".join(p)))
def test_an_accepted_host_path_is_absolute_normalized_and_below_the_top(path: str) -> None:
    try:
        checked = check_host_path(path)
    except Refused as exc:
        assert exc.kind == "request"
        return
    assert checked.startswith("/") and posixpath.normpath(checked) == checked
    assert posixpath.dirname(checked) not in ("/", "")


@given(kind=st.sampled_from([DIR, FILE]), mode=st.integers(0, 0o7777))
def test_unpacked_modes_are_shared_readable_and_never_special(kind: str, mode: int) -> None:
    out = safe_mode(kind, mode)
    assert out & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH) == 0
    assert out & 0o444 == 0o444
    if kind == DIR:
        assert out & 0o111 == 0o111


def snapshot(path: Path) -> dict[str, tuple[int, bytes]]:
    """Every entry under *path* (without following links) with its mode and content."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st_ = os.lstat(full)
            content = Path(full).read_bytes() if stat.S_ISREG(st_.st_mode) else b""
            out[full] = (st_.st_mode, content)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_whatever_an_archive_holds_nothing_outside_the_root_changes(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        outside = base / "python3"  # an interpreter-named directory: the sneakiest target
        outside.mkdir()
        (outside / "victim").write_bytes(b"keep")
        root = base / "env"
        root.mkdir()
        before = snapshot(outside)
        members = data.draw(
            st.lists(st.tuples(KINDS, NAMES, link_targets(str(outside))), max_size=8)
        )
        try:
            archive = tar_bytes(members)
        except (ValueError, UnicodeError):  # names tarfile itself cannot write
            return
        with contextlib.suppress(Refused):
            unpack_bytes(archive, str(root))
        assert snapshot(outside) == before
        assert sorted(os.listdir(base)) == ["env", "python3"]
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                full = Path(dirpath, name)
                if full.is_symlink():
                    continue
                assert full.resolve().is_relative_to(root.resolve())


@given(st.lists(st.tuples(KINDS, NAMES, st.text(max_size=20)), max_size=10))
def test_the_checker_never_accepts_two_members_at_one_path(members: list[Member]) -> None:
    checker = MemberChecker()
    taken: set[str] = set()
    for kind, name, linkname in members:
        try:
            rel = checker.check(kind, name, linkname)
        except Refused:
            continue
        if kind != DIR:
            assert rel not in taken
            taken.add(rel)
        for i in range(1, rel.count("/") + 1):
            assert "/".join(rel.split("/")[:i]) not in checker.links | checker.files


# -- the protocol, in-process --------------------------------------------------------------------


def request(dest: Path, archive: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "op": "ship",
        "dest": str(dest),
        "sha256": hashlib.sha256(archive).hexdigest(),
        "size": len(archive),
        "name": dest.parent.name,
        **extra,
    }


def run_ship(req: dict[str, Any], stream: bytes) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    said: list[dict[str, Any]] = []
    try:
        answer = envrecv.ship(req, io.BytesIO(stream), said.append)
    except Refused as exc:
        answer = {"ok": False, "kind": exc.kind, "error": exc.message}
    return said, answer


def temp_entries(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".kf-")]


def test_a_shipped_environment_gets_its_marker_and_is_cached_the_second_time(
    tmp_path: Path,
) -> None:
    archive = tar_bytes(VENV)
    dest = tmp_path / "envs" / "demo" / "0123456789ab"
    said, answer = run_ship(request(dest, archive), archive)
    assert said == [{"status": "send"}]
    assert answer["ok"] and answer["status"] == "shipped" and answer["files"] == 8
    marker = json.loads((dest / ".kf-env.json").read_text())
    assert marker == {"sha256": hashlib.sha256(archive).hexdigest(), "name": "demo", "files": 8}
    said, answer = run_ship(request(dest, archive), b"")
    assert said == [] and answer == {"ok": True, "status": "cached"}
    assert temp_entries(dest.parent) == []


def test_a_wrong_checksum_leaves_no_temp_dir_and_no_destination(tmp_path: Path) -> None:
    archive = tar_bytes(VENV)
    dest = tmp_path / "envs" / "demo" / "0123456789ab"
    _, answer = run_ship(request(dest, archive, sha256="0" * 64), archive)
    assert answer["kind"] == "checksum" and "sha256" in answer["error"]
    assert not dest.exists() and temp_entries(dest.parent) == []


def test_a_transfer_cut_short_is_a_checksum_error_and_leaves_nothing(tmp_path: Path) -> None:
    archive = tar_bytes(VENV, data=os.urandom(200_000))
    dest = tmp_path / "envs" / "demo" / "0123456789ab"
    _, answer = run_ship(request(dest, archive), archive[: len(archive) // 2])
    assert answer["kind"] == "checksum" and "cut short" in answer["error"]
    assert not dest.exists() and temp_entries(dest.parent) == []


def test_garbage_with_the_right_checksum_is_an_archive_error(tmp_path: Path) -> None:
    garbage = gzip.compress(b"not a tar file" * 100)
    dest = tmp_path / "envs" / "demo" / "0123456789ab"
    _, answer = run_ship(request(dest, garbage), garbage)
    assert answer["kind"] in ("archive", "unsafe")
    assert not dest.exists() and temp_entries(dest.parent) == []


def test_a_new_build_replaces_a_destination_without_the_same_marker(tmp_path: Path) -> None:
    dest = tmp_path / "envs" / "demo" / "0123456789ab"
    dest.mkdir(parents=True)
    (dest / "stale.txt").write_text("half of something")
    archive = tar_bytes(VENV)
    _, answer = run_ship(request(dest, archive), archive)
    assert answer["status"] == "shipped"
    assert not (dest / "stale.txt").exists() and (dest / "pyvenv.cfg").exists()
    assert temp_entries(dest.parent) == []


def test_a_second_receiver_racing_for_the_same_destination_keeps_the_first_copy(
    tmp_path: Path,
) -> None:
    archive = tar_bytes(VENV)
    dest = tmp_path / "envs" / "demo" / "0123456789ab"
    run_ship(request(dest, archive), archive)
    late = dest.parent / ".kf-tmp-0123456789ab-late"
    late.mkdir()
    (late / "pyvenv.cfg").write_text("the late copy")
    sha = hashlib.sha256(archive).hexdigest()
    assert envrecv.install(str(late), str(dest), sha) is False
    assert not late.exists() and (dest / "pyvenv.cfg").read_bytes() == b"x"


def test_remove_deletes_shipped_builds_and_refuses_foreign_files(tmp_path: Path) -> None:
    archive = tar_bytes(VENV)
    parent = tmp_path / "envs" / "demo"
    run_ship(request(parent / "0123456789ab", archive), archive)
    (parent / "notes.txt").write_text("mine")
    with pytest.raises(Refused, match="not a shipped kernel environment"):
        envrecv.remove({"path": str(parent)})
    assert (parent / "0123456789ab" / ".kf-env.json").exists()
    (parent / "notes.txt").unlink()
    assert envrecv.remove({"path": str(parent)}) == {"ok": True, "status": "removed"}
    assert os.listdir(parent.parent) == []
    assert envrecv.remove({"path": str(parent)}) == {"ok": True, "status": "absent"}


def test_remove_deletes_one_build_and_keeps_the_others(tmp_path: Path) -> None:
    archive = tar_bytes(VENV)
    parent = tmp_path / "envs" / "demo"
    run_ship(request(parent / "0123456789ab", archive), archive)
    run_ship(request(parent / "ba9876543210", archive), archive)
    assert envrecv.remove({"path": str(parent / "0123456789ab")})["status"] == "removed"
    assert os.listdir(parent) == ["ba9876543210"]


def test_the_receiver_parses_as_python_3_8() -> None:
    source = Path(envrecv.__file__).read_text()
    ast.parse(source, feature_version=(3, 8))
