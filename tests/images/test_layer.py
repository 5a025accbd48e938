"""An environment as an image layer (kernelfleet/images/layer.py), without any container runtime:
the layered archive is a valid archive of one more layer whose config follows it, the same inputs
give the same bytes, an environment directory becomes a tar under its image path (symlinks, hard
links and modes kept, setuid dropped), and hostile inputs (references, env, layer members, a
corrupted base) are refused before any file is written."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import string
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelfleet.images import oci
from kernelfleet.images.layer import (
    HISTORY,
    LayerError,
    add_layer,
    check_layer_tar,
    env_layer_tar,
    member_problem,
)
from kernelfleet.images.oci import (
    ArchiveError,
    ImageConfig,
    InvalidReference,
    TarEntry,
    read_oci_archive,
    write_oci_archive,
    write_rootfs_tar,
)

BASE_REF = "kernelfleet.test/kernel-python:1.0-abc"
REF = "kernelfleet.test/env-six:0123456789ab"
IMAGE_PATH = "/opt/kernelfleet/envs/six/0123456789ab"
BASE_CONFIG = ImageConfig(
    entrypoint=("python3", "/opt/kernelfleet/launchers/kernel_launcher.py"),
    cmd=("--", "python3", "-m", "ipykernel_launcher"),
    env={"PATH": "/opt/kernel/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"},
    user="1000:1000",
    working_dir="/tmp",
    labels={"io.kernelfleet.recipe": "python"},
)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_bytes(archive: Path, digest: str) -> bytes:
    with tarfile.open(archive) as tar:
        f = tar.extractfile("blobs/sha256/" + digest.removeprefix("sha256:"))
        assert f is not None
        return f.read()


def no_leftovers(directory: Path, *expected: str) -> None:
    assert sorted(p.name for p in directory.iterdir()) == sorted(expected)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A one-layer kernel image archive, as the image build writes them."""
    rootfs = tmp_path / "rootfs.tar"
    write_rootfs_tar(
        rootfs,
        [
            TarEntry.file("usr/bin/python3.11", b"\x7fELF python", 0o755),
            TarEntry.symlink("usr/bin/python3", "python3.11"),
            TarEntry("tmp", "dir", mode=0o1777),
            TarEntry.dir("opt/kernelfleet/launchers"),
        ],
    )
    out = tmp_path / "base.oci.tar"
    write_oci_archive(rootfs, out, BASE_REF, BASE_CONFIG)
    return out


@pytest.fixture
def env_dir(tmp_path: Path) -> Path:
    """A small environment directory shaped like a relocatable venv."""
    env = tmp_path / "env"
    site = env / "lib/python3.11/site-packages"
    (site / "six").mkdir(parents=True)
    (env / "bin").mkdir()
    (env / "bin/python").symlink_to("/usr/bin/python3.11")
    (env / "bin/python3").symlink_to("python")
    (env / "bin/tool").write_text("#!/bin/sh\necho tool\n")
    (env / "bin/tool").chmod(0o700)
    (site / "six/__init__.py").write_text("VERSION = '1.17.0'\n")
    (site / "six/copy.py").hardlink_to(site / "six/__init__.py")
    (site / "private").mkdir(mode=0o700)
    (site / "private/data.bin").write_bytes(bytes(range(256)) * 10)
    (site / "private/data.bin").chmod(0o600)
    (env / "pyvenv.cfg").write_text("home = /usr/bin\nrelocatable = true\n")
    return env


@pytest.fixture
def layer_tar(env_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "layer.tar"
    env_layer_tar(env_dir, IMAGE_PATH, out)
    return out


def hostile_tar(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(
    name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    return info


# --- the layered archive ----------------------------------------------------------------------


@pytest.mark.parametrize("base_layers", [1, 2])
def test_layered_archive_is_the_base_plus_one_verified_layer(
    base: Path, layer_tar: Path, tmp_path: Path, base_layers: int
) -> None:
    if base_layers == 2:  # a base that is itself layered
        other = tmp_path / "other.tar"
        hostile_tar(other, (member("etc/motd"), b"hello\n"))
        layered = tmp_path / "two.oci.tar"
        add_layer(base, other, layered, "kernelfleet.test/two:1", env={"A": "1"})
        base = layered
    before = read_oci_archive(base)
    assert len(before.layers) == base_layers
    out = tmp_path / "out" / "env.oci.tar"

    digest = add_layer(base, layer_tar, out, REF, env={"HOME": "/home/k", "KF_ENV": "six"})

    info = read_oci_archive(out, verify=True)  # every blob and diff id re-hashed
    assert (info.manifest_digest, info.ref, info.tag) == (digest, REF, "0123456789ab")
    assert info.docker_repo_tags == (REF,)
    assert info.layers[:-1] == before.layers  # the base's blobs, byte for byte
    assert len(info.layers) == base_layers + 1
    added = blob_bytes(out, info.layers[-1].digest)
    assert gzip.decompress(added) == layer_tar.read_bytes()
    assert info.diff_ids == (*before.diff_ids, sha(layer_tar.read_bytes()))
    assert info.config["rootfs"]["diff_ids"] == list(info.diff_ids)
    runtime, base_runtime = info.config["config"], before.config["config"]
    assert runtime["Env"] == [
        *[e if not e.startswith("HOME=") else "HOME=/home/k" for e in base_runtime["Env"]],
        "KF_ENV=six",
    ]
    for key in ("Entrypoint", "Cmd", "User", "WorkingDir", "Labels"):
        assert runtime[key] == base_runtime[key]
    assert info.config["history"] == [
        *before.config["history"],
        {"created": oci.EPOCH, "created_by": HISTORY},
    ]
    # Docker's manifest.json lists the same layers, in order
    with tarfile.open(out) as tar:
        f = tar.extractfile("manifest.json")
        assert f is not None
        (docker,) = json.loads(f.read())
    assert docker["Layers"] == [layer.member for layer in info.layers]
    assert out.stat().st_mode & 0o777 == 0o644
    no_leftovers(out.parent, "env.oci.tar")


def test_without_env_the_config_keeps_the_base_env(
    base: Path, layer_tar: Path, tmp_path: Path
) -> None:
    add_layer(base, layer_tar, tmp_path / "a.oci.tar", REF)
    info = read_oci_archive(tmp_path / "a.oci.tar")
    assert info.config["config"]["Env"] == read_oci_archive(base).config["config"]["Env"]


def test_the_same_inputs_give_the_same_bytes(base: Path, env_dir: Path, tmp_path: Path) -> None:
    env_layer_tar(env_dir, IMAGE_PATH, tmp_path / "l1.tar")
    for path in env_dir.rglob("*"):  # new mtimes, same content
        os.utime(path, (1e9, 1e9), follow_symlinks=False)
    env_layer_tar(env_dir, IMAGE_PATH, tmp_path / "l2.tar")
    assert (tmp_path / "l1.tar").read_bytes() == (tmp_path / "l2.tar").read_bytes()
    env = {"KF_ENV": "six"}
    d1 = add_layer(base, tmp_path / "l1.tar", tmp_path / "a.oci.tar", REF, env=env)
    d2 = add_layer(base, tmp_path / "l2.tar", tmp_path / "b.oci.tar", REF, env=env)
    assert d1 == d2
    assert (tmp_path / "a.oci.tar").read_bytes() == (tmp_path / "b.oci.tar").read_bytes()
    d3 = add_layer(base, tmp_path / "l1.tar", tmp_path / "c.oci.tar", REF, env={"KF_ENV": "x"})
    assert d3 != d1


def test_a_layered_image_is_not_extracted_as_if_its_first_layer_were_its_rootfs(
    base: Path, layer_tar: Path, tmp_path: Path
) -> None:
    add_layer(base, layer_tar, tmp_path / "a.oci.tar", REF)
    with pytest.raises(ArchiveError, match="2 layers"):
        oci.extract_layer(tmp_path / "a.oci.tar", io.BytesIO())


# --- the environment directory as a tar -------------------------------------------------------


def test_env_layer_tar_places_the_environment_at_its_image_path(layer_tar: Path) -> None:
    with tarfile.open(layer_tar) as tar:
        members = tar.getmembers()
        by_name = {m.name: m for m in members}
        prefix = IMAGE_PATH.lstrip("/")
        assert [m.name for m in members[:5]] == [
            "opt",
            "opt/kernelfleet",
            "opt/kernelfleet/envs",
            "opt/kernelfleet/envs/six",
            prefix,
        ]
        assert all(m.name == prefix or m.name.startswith(prefix + "/") for m in members[4:])
        assert [m.name for m in members] == sorted(m.name for m in members)
        assert {(m.uid, m.gid, m.mtime, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
        python = by_name[f"{prefix}/bin/python"]
        assert python.issym() and python.linkname == "/usr/bin/python3.11"
        assert by_name[f"{prefix}/bin/python3"].linkname == "python"
        site = f"{prefix}/lib/python3.11/site-packages"
        # hard links stay hard links, to the first name in order
        copy, init = by_name[f"{site}/six/copy.py"], by_name[f"{site}/six/__init__.py"]
        assert init.isreg() and copy.islnk() and copy.linkname == init.name
        # modes kept, but owner-only bits opened to all (the kernel user is not root)
        assert by_name[f"{prefix}/bin/tool"].mode == 0o755
        assert by_name[f"{site}/private"].mode == 0o755
        data = by_name[f"{site}/private/data.bin"]
        assert data.mode == 0o644
        f = tar.extractfile(data)
        assert f is not None and f.read() == bytes(range(256)) * 10
    assert check_layer_tar(layer_tar) == len(members)


def test_env_layer_tar_drops_setuid_and_setgid(env_dir: Path, tmp_path: Path) -> None:
    (env_dir / "bin/tool").chmod(0o6755)
    env_layer_tar(env_dir, IMAGE_PATH, tmp_path / "l.tar")
    with tarfile.open(tmp_path / "l.tar") as tar:
        assert tar.getmember(IMAGE_PATH.lstrip("/") + "/bin/tool").mode == 0o755


def test_env_layer_tar_refuses_a_fifo_and_writes_nothing(env_dir: Path, tmp_path: Path) -> None:
    os.mkfifo(env_dir / "bin/pipe")
    (tmp_path / "out").mkdir()
    with pytest.raises(LayerError, match=r"bin/pipe.*fifo"):
        env_layer_tar(env_dir, IMAGE_PATH, tmp_path / "out" / "l.tar")
    no_leftovers(tmp_path / "out")


def test_env_layer_tar_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="build the environment first"):
        env_layer_tar(tmp_path / "nope", IMAGE_PATH, tmp_path / "l.tar")


@pytest.mark.parametrize(
    "image_path", ["opt/envs/x", "/", "/opt/../etc", "/opt/x/", "/opt/./x", "//opt/x", "/opt/.wh.x"]
)
def test_env_layer_tar_refuses_bad_image_paths(
    env_dir: Path, tmp_path: Path, image_path: str
) -> None:
    with pytest.raises(LayerError, match="image path"):
        env_layer_tar(env_dir, image_path, tmp_path / "l.tar")
    assert not (tmp_path / "l.tar").exists()


# --- hostile inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    ["kernelfleet.test/env:latest", "kernelfleet.test/env", "Env:1", "env@sha256:" + "0" * 64],
)
def test_a_bad_reference_is_refused_before_anything_is_written(
    base: Path, layer_tar: Path, tmp_path: Path, ref: str
) -> None:
    with pytest.raises(InvalidReference):
        add_layer(base, layer_tar, tmp_path / "out" / "a.oci.tar", ref)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("env", [{"A=B": "1"}, {"": "1"}, {"1A": "1"}, {"A B": "1"}, {"A": "x\0y"}])
def test_a_bad_env_is_refused(
    base: Path, layer_tar: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    with pytest.raises(LayerError, match="environment variable"):
        add_layer(base, layer_tar, tmp_path / "out" / "a.oci.tar", REF, env=env)
    assert not (tmp_path / "out").exists()


def _dev() -> tarfile.TarInfo:
    info = member("opt/env/sda", tarfile.BLKTYPE)
    info.devmajor, info.devminor = 8, 0
    return info


HOSTILE: dict[str, tuple[list[tuple[tarfile.TarInfo, bytes | None]], str]] = {
    "absolute": ([(member("/etc/passwd"), b"x")], "absolute"),
    "dot-dot": ([(member("opt/../etc/passwd"), b"x")], "normalised"),
    "whiteout": ([(member("usr/bin/.wh.python3.11"), b"")], "whiteout"),
    "opaque whiteout": ([(member("opt/kernelfleet/.wh..wh..opq"), b"")], "whiteout"),
    "device": ([(_dev(), None)], "not a directory"),
    "fifo": ([(member("opt/env/p", tarfile.FIFOTYPE), None)], "not a directory"),
    "setuid": ([(member("opt/env/su", mode=0o4755), b"x")], "setuid"),
    "setgid": ([(member("opt/env/sg", mode=0o2755), b"x")], "setgid"),
    "below a symlink": (
        [
            (member("opt/env", tarfile.SYMTYPE, 0o777, "/etc"), None),
            (member("opt/env/passwd"), b"root::0:0::/:/bin/sh\n"),
        ],
        "below the symlink",
    ),
    "hard link out": (
        [(member("opt/env/shadow", tarfile.LNKTYPE, link="etc/shadow"), None)],
        "hard link",
    ),
    "hard link up": (
        [
            (member("opt/env/a"), b"x"),
            (member("opt/env/b", tarfile.LNKTYPE, link="opt/env/../env/a"), None),
        ],
        "hard link",
    ),
    "twice": ([(member("opt/env/a"), b"x"), (member("opt/env/a"), b"y")], "twice"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_layer_member_is_refused_before_anything_is_written(
    base: Path, tmp_path: Path, case: str
) -> None:
    members, why = HOSTILE[case]
    bad = hostile_tar(tmp_path / "bad.tar", *members)
    with pytest.raises(LayerError, match=why) as raised:
        add_layer(base, bad, tmp_path / "out" / "a.oci.tar", REF)
    assert "refused" in str(raised.value) and "rebuild" in str(raised.value)
    assert not (tmp_path / "out").exists()


def test_a_layer_that_is_not_a_tar_is_refused(base: Path, tmp_path: Path) -> None:
    (tmp_path / "junk.tar").write_bytes(gzip.compress(b"not a tar"))
    with pytest.raises(LayerError, match="not an uncompressed tar"):
        add_layer(base, tmp_path / "junk.tar", tmp_path / "out" / "a.oci.tar", REF)
    assert not (tmp_path / "out").exists()


def test_a_base_that_is_not_an_archive_is_refused(layer_tar: Path, tmp_path: Path) -> None:
    (tmp_path / "junk.oci.tar").write_bytes(b"junk")
    with pytest.raises(ArchiveError):
        add_layer(tmp_path / "junk.oci.tar", layer_tar, tmp_path / "a.oci.tar", REF)
    with pytest.raises(ArchiveError):
        add_layer(tmp_path / "missing.oci.tar", layer_tar, tmp_path / "a.oci.tar", REF)
    assert not (tmp_path / "a.oci.tar").exists()


def test_a_corrupted_base_layer_leaves_no_archive(
    base: Path, layer_tar: Path, tmp_path: Path
) -> None:
    layer = read_oci_archive(base).layers[0]
    with tarfile.open(base) as tar:
        offset = tar.getmember(layer.member).offset_data
    data = bytearray(base.read_bytes())
    data[offset + layer.size // 2] ^= 0xFF
    (tmp_path / "out").mkdir()
    bad = tmp_path / "bad.oci.tar"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="does not match its digest"):
        add_layer(bad, layer_tar, tmp_path / "out" / "a.oci.tar", REF)
    no_leftovers(tmp_path / "out")


# --- the member-name check (parses untrusted names) -------------------------------------------

names = st.one_of(
    st.text(alphabet=string.printable, max_size=40),
    st.lists(st.sampled_from(["a", "b.c", ".", "..", "", ".wh.x", "/"]), max_size=5).map("/".join),
)


@given(names)
@settings(max_examples=400)
def test_a_member_name_is_normalised_relative_or_refused_with_a_reason(name: str) -> None:
    why = member_problem(name)
    if why is None:
        path = PurePosixPath(name)
        assert not path.is_absolute() and str(path) == name
        assert ".." not in path.parts and not path.name.startswith(".wh.")
    else:
        assert why.startswith("the name")


@given(st.binary(max_size=2048))
@settings(max_examples=200)
def test_any_bytes_as_a_layer_are_accepted_or_refused_with_a_layer_error(data: bytes) -> None:
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        try:
            count = check_layer_tar(Path(f.name))
        except LayerError as exc:
            assert "layer" in str(exc)
        else:
            assert count >= 0


KINDS: list[bytes] = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]


@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(["opt", "env", "..", ".wh.x", "a"]), min_size=1, max_size=4),
            st.sampled_from(KINDS),
            st.sampled_from([0o644, 0o755, 0o4755, 0o2755, 0o1777]),
            st.sampled_from(["opt/env", "/etc", "opt/a", "../x"]),
        ),
        max_size=8,
    )
)
@settings(max_examples=200)
def test_an_accepted_layer_has_only_what_a_layer_may_hold(
    spec: list[tuple[list[str], bytes, int, str]],
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for parts, kind, mode, link in spec:
            tar.addfile(member("/".join(parts), kind, mode, link))
    with tempfile.NamedTemporaryFile() as f:
        f.write(buf.getvalue())
        f.flush()
        try:
            check_layer_tar(Path(f.name))
        except LayerError:
            return
    seen: set[str] = set()
    files: set[str] = set()
    for parts, kind, mode, link in spec:
        name = "/".join(parts)
        assert member_problem(name) is None and name not in seen
        assert not mode & 0o6000
        if kind == tarfile.LNKTYPE:
            assert link in files
        seen.add(name)
        if kind == tarfile.REGTYPE:
            files.add(name)
