"""The OCI archive writer and reader, image references, and recipe hashing (no Debian, no root)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import string
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kernelfleet.images import build, oci, recipes
from kernelfleet.images.build import is_static_elf
from kernelfleet.images.oci import (
    ArchiveError,
    ImageConfig,
    InvalidReference,
    TarEntry,
    parse_ref,
    read_oci_archive,
    write_oci_archive,
    write_rootfs_tar,
)

REF = "kernelfleet.test/busybox:1.0-abc"
CONFIG = ImageConfig(
    entrypoint=("/bin/sh",),
    cmd=("-c", "echo hi"),
    env={"PATH": "/bin", "HOME": "/tmp"},
    user="1000:1000",
    working_dir="/tmp",
    labels={"a": "b"},
)
LAUNCHERS = {"kernel_launcher.py": b"print('launcher')\n", "respond.py": b"print('respond')\n"}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    path = tmp_path / "rootfs.tar"
    write_rootfs_tar(
        path,
        [
            TarEntry.file("bin/sh", b"\x7fELF fake shell", 0o755),
            TarEntry.symlink("usr/bin/env", "/bin/sh"),
            TarEntry("tmp", "dir", mode=0o1777),
            TarEntry.file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        ],
    )
    return path


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        out = {}
        for m in tar.getmembers():
            if m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
        return out


def test_archive_digests_sizes_and_annotations_agree(rootfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "img.oci.tar"
    digest = write_oci_archive(rootfs, out, REF, CONFIG)
    files = members(out)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    assert index["mediaType"] == oci.MEDIA_INDEX and index["schemaVersion"] == 2
    (desc,) = index["manifests"]
    assert desc["digest"] == digest
    assert desc["annotations"] == {
        "io.containerd.image.name": REF,
        "org.opencontainers.image.ref.name": "1.0-abc",
    }
    assert desc["platform"] == {"architecture": "amd64", "os": "linux"}

    def blob(d: dict[str, Any]) -> bytes:
        data = files["blobs/sha256/" + d["digest"].removeprefix("sha256:")]
        assert sha(data) == d["digest"] and len(data) == d["size"]
        return data

    manifest = json.loads(blob(desc))
    assert manifest["mediaType"] == oci.MEDIA_MANIFEST
    config = json.loads(blob(manifest["config"]))
    (layer_desc,) = manifest["layers"]
    assert layer_desc["mediaType"] == oci.MEDIA_LAYER_GZIP
    layer = blob(layer_desc)
    assert gzip.decompress(layer) == rootfs.read_bytes()
    assert config["rootfs"] == {"type": "layers", "diff_ids": [sha(rootfs.read_bytes())]}
    assert config["config"] == {
        "Entrypoint": ["/bin/sh"],
        "Cmd": ["-c", "echo hi"],
        "Env": ["PATH=/bin", "HOME=/tmp"],
        "User": "1000:1000",
        "WorkingDir": "/tmp",
        "Labels": {"a": "b"},
    }
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    # Docker's manifest.json names the same blobs
    (docker,) = json.loads(files["manifest.json"])
    assert docker["RepoTags"] == [REF]
    assert docker["Config"] == "blobs/sha256/" + manifest["config"]["digest"][7:]
    assert docker["Layers"] == ["blobs/sha256/" + layer_desc["digest"][7:]]
    # and the reader agrees
    info = read_oci_archive(out)
    assert (info.ref, info.tag, info.manifest_digest) == (REF, "1.0-abc", digest)
    assert info.config == config and info.docker_repo_tags == (REF,)
    assert info.size == len(layer)


def test_archive_is_reproducible_and_its_digest_follows_the_config(
    rootfs: Path, tmp_path: Path
) -> None:
    a, b, c = (tmp_path / f"{n}.oci.tar" for n in "abc")
    da = write_oci_archive(rootfs, a, REF, CONFIG)
    db = write_oci_archive(rootfs, b, REF, CONFIG)
    assert da == db and a.read_bytes() == b.read_bytes()
    dc = write_oci_archive(rootfs, c, REF, ImageConfig(entrypoint=("/bin/sh",)))
    assert dc != da


def test_archive_is_readable_by_others_and_leaves_no_temp_files(
    rootfs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "img.oci.tar"
    write_oci_archive(rootfs, out, REF, CONFIG)
    assert out.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in out.parent.iterdir()] == ["img.oci.tar"]
    with pytest.raises(FileNotFoundError):
        write_oci_archive(tmp_path / "missing.tar", tmp_path / "out" / "x.oci.tar", REF, CONFIG)
    assert [p.name for p in out.parent.iterdir()] == ["img.oci.tar"]


def test_bad_reference_fails_before_any_file_is_written(rootfs: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidReference, match="latest"):
        write_oci_archive(rootfs, tmp_path / "x" / "a.tar", "kernelfleet.test/a:latest", CONFIG)
    assert not (tmp_path / "x").exists()


def test_reader_detects_a_corrupted_layer(rootfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "img.oci.tar"
    write_oci_archive(rootfs, out, REF, CONFIG)
    layer = read_oci_archive(out).layers[0]
    with tarfile.open(out) as tar:
        offset = tar.getmember(layer.member).offset_data
    data = bytearray(out.read_bytes())
    data[offset + layer.size // 2] ^= 0xFF
    bad = tmp_path / "bad.oci.tar"
    bad.write_bytes(bytes(data))
    read_oci_archive(bad, verify=False)  # sizes still agree
    with pytest.raises(ArchiveError):
        read_oci_archive(bad)
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    with pytest.raises(ArchiveError):
        read_oci_archive(tmp_path / "junk.tar")


def test_extract_layer_gives_the_rootfs_back(rootfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "img.oci.tar"
    write_oci_archive(rootfs, out, REF, CONFIG)
    buf = io.BytesIO()
    oci.extract_layer(out, buf)
    assert buf.getvalue() == rootfs.read_bytes()


def test_rootfs_entries_get_their_parents_modes_and_links(rootfs: Path) -> None:
    with tarfile.open(rootfs) as tar:
        by_name = {m.name: m for m in tar.getmembers()}
    assert by_name["usr"].isdir() and by_name["usr/bin"].isdir()
    assert by_name["usr/bin/env"].issym() and by_name["usr/bin/env"].linkname == "/bin/sh"
    assert by_name["bin/sh"].mode == 0o755 and by_name["tmp"].mode == 0o1777
    assert {(m.uid, m.gid, m.mtime) for m in by_name.values()} == {(0, 0, 0)}


# --- references -------------------------------------------------------------------------------

components = st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}", fullmatch=True)
domains = st.one_of(
    st.just(""),
    st.just("localhost"),
    st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){1,2}(:[0-9]{1,5})?", fullmatch=True),
)
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True).filter(
    lambda t: t != "latest"
)


@given(domains, st.lists(components, min_size=1, max_size=3), tags)
def test_valid_references_parse_and_round_trip(domain: str, path: list[str], tag: str) -> None:
    assume(domain or "." not in path[0])  # a first component with a dot is a registry
    text = "/".join([domain, *path] if domain else path) + ":" + tag
    ref = parse_ref(text)
    assert str(ref) == text and ref.tag == tag
    assert parse_ref(ref.normalized).normalized == ref.normalized
    assert ref.normalized.endswith(f"/{'/'.join(path)}:{tag}")


@given(st.text(alphabet=string.printable, max_size=60))
@settings(max_examples=300)
def test_any_text_parses_or_is_refused_with_a_reason(text: str) -> None:
    try:
        ref = parse_ref(text)
    except InvalidReference as exc:
        assert repr(text) in str(exc)
    else:
        assert ref.tag and ref.tag != "latest" and str(ref) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("kernelfleet.test/a:latest", "latest"),
        ("kernelfleet.test/a", "tag is missing"),
        ("busybox", "tag is missing"),
        ("kernelfleet.test/a@sha256:" + "0" * 64, "digests"),
        ("kernelfleet.test/Upper:1", "lowercase"),
        ("kernelfleet.test/a:", "expected"),
        ("", "tag is missing"),
    ],
)
def test_unusable_references_say_why(text: str, why: str) -> None:
    with pytest.raises(InvalidReference, match=why):
        parse_ref(text)


def test_a_reference_without_registry_normalises_like_the_kubelet() -> None:
    assert parse_ref("pause:3.10").normalized == "docker.io/library/pause:3.10"
    assert parse_ref("team/pause:3.10").normalized == "docker.io/team/pause:3.10"
    assert parse_ref("localhost:5000/pause:1").normalized == "localhost:5000/pause:1"
    assert parse_ref("kernelfleet.test/pause:3.10").normalized == "kernelfleet.test/pause:3.10"


# --- recipes ----------------------------------------------------------------------------------


def test_recipe_hash_is_stable_and_covers_every_input() -> None:
    base = recipes.python_recipe(LAUNCHERS)
    h = recipes.recipe_hash(base, "0.1.0")
    assert h == recipes.recipe_hash(recipes.python_recipe(dict(LAUNCHERS)), "0.1.0")
    assert len(h) == 64
    changed = {**LAUNCHERS, "respond.py": b"print('respond!')\n"}
    others = [
        recipes.recipe_hash(recipes.python_recipe(changed), "0.1.0"),
        recipes.recipe_hash(base, "0.2.0"),
        recipes.recipe_hash(recipes.r_recipe(LAUNCHERS), "0.1.0"),
        recipes.recipe_hash(
            recipes.Recipe(**{**base.__dict__, "env": {**base.env, "X": "1"}}), "0.1.0"
        ),
        recipes.recipe_hash(
            recipes.Recipe(**{**base.__dict__, "packages": (*base.packages, "less")}), "0.1.0"
        ),
    ]
    assert len({h, *others}) == len(others) + 1
    reordered = recipes.Recipe(**{**base.__dict__, "packages": tuple(reversed(base.packages))})
    assert recipes.recipe_hash(reordered, "0.1.0") == h


def test_image_ref_and_cache_name_carry_the_hash() -> None:
    recipe = recipes.python_recipe(LAUNCHERS)
    h = recipes.recipe_hash(recipe, "0.1.0")
    ref = recipes.image_ref(recipe, "0.1.0")
    assert ref == f"kernelfleet.test/kernel-python:0.1.0-{h[:8]}"
    assert recipes.archive_name(recipe, "0.1.0") == f"kernel-python-{h}.oci.tar"
    assert recipes.image_tag(h, "0.1.0+local.1") == f"0.1.0.local.1-{h[:8]}"
    parse_ref(recipes.image_ref(recipe, "0.1.0+local.1"))
    config = recipes.image_config(recipe, "0.1.0")
    assert config.user == "1000:1000" and config.working_dir == "/tmp"
    assert config.env["HOME"] == "/tmp" and config.env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert config.entrypoint == ("python3", "/opt/kernelfleet/launchers/kernel_launcher.py")
    assert config.cmd == ("--", *recipes.PYTHON_KERNEL_ARGV)
    assert config.labels["io.kernelfleet.recipe-hash"] == h


def test_mmdebstrap_argv_installs_files_users_and_cleans_up() -> None:
    recipe = recipes.python_recipe(LAUNCHERS)
    staged = {f.dest: f"/stage/it's {i}" for i, f in enumerate(recipe.files)}
    staged["requirements"] = "/stage/wheels"
    argv = recipes.mmdebstrap_argv(recipe, staged, "/out/rootfs.tar")
    assert argv[:2] == ["mmdebstrap", "--variant=apt"]
    assert argv[-2:] == ["bookworm", "/out/rootfs.tar"]
    assert "--include=python3,python3-venv" in argv
    assert "--dpkgopt=path-exclude=/usr/share/man/*" in argv
    hooks = [a.removeprefix("--customize-hook=") for a in argv if a.startswith("--customize")]
    assert (
        "install -D -o 0 -g 0 -m 755 '/stage/it'\"'\"'s 0' "
        '"$1"/opt/kernelfleet/launchers/kernel_launcher.py'
    ) in hooks
    assert 'echo kernel:x:1000:1000:kernel:/tmp:/usr/sbin/nologin >> "$1/etc/passwd"' in hooks
    assert hooks[-len(recipes.CLEANUP_HOOKS) :] == list(recipes.CLEANUP_HOOKS)
    with pytest.raises(recipes.RecipeError):
        recipes.mmdebstrap_argv(recipes.busybox_recipe(b"\x7fELF", ["bin/sh"]), {}, "/x.tar")


def test_gateway_recipe_stages_wheels_and_hashes_the_source() -> None:
    a, b = recipes.gateway_recipe("a" * 64), recipes.gateway_recipe("b" * 64)
    assert recipes.recipe_hash(a, "0.1.0") != recipes.recipe_hash(b, "0.1.0")
    argv = recipes.mmdebstrap_argv(a, {"wheels": "/stage/wheels"}, "/o.tar")
    hooks = [x.removeprefix("--customize-hook=") for x in argv if x.startswith("--customize")]
    assert any('cp -R /stage/wheels/. "$1"/opt/kernelfleet-wheels/' in h for h in hooks)
    (install,) = [h for h in hooks if "pip install" in h]
    assert install.startswith('chroot "$1" env -i PATH=')  # no host PIP_* in the chroot
    assert "--no-index" in install and "sh -ec" in install
    assert recipes.wheel_platforms("2.17")[0] == "manylinux_2_17_x86_64"
    assert "manylinux2014_x86_64" in recipes.wheel_platforms("2.17")
    assert "manylinux2014_x86_64" not in recipes.wheel_platforms("2.12")


def test_python_recipe_installs_the_pinned_kernel_offline_into_a_venv_first_on_path() -> None:
    recipe = recipes.python_recipe(LAUNCHERS)
    pins = dict(r.split("==") for r in recipe.requirements)
    assert pins["ipykernel"] == "7.4.0" and pins["jupyter_client"] == "8.10.0"
    assert (pins["pyzmq"], pins["debugpy"], pins["comm"]) == ("27.3.0", "1.8.22", "0.2.3")
    assert pins["ipython"].startswith("9.")
    assert len({recipes.requirement_key(r) for r in recipe.requirements}) == len(pins)
    assert not any("ipykernel" in p or "zmq" in p for p in recipe.packages)
    assert recipe.env["PATH"].startswith("/opt/kernel/bin:")
    assert recipe.user == "1000:1000" and recipe.env["HOME"] == "/tmp"
    argv = recipes.mmdebstrap_argv(
        recipe, {**{f.dest: "/f" for f in recipe.files}, "requirements": "/w"}, "/o.tar"
    )
    hooks = [x.removeprefix("--customize-hook=") for x in argv if x.startswith("--customize")]
    assert 'mkdir -p "$1"/opt/kernelfleet-wheels && cp -R /w/. "$1"/opt/kernelfleet-wheels/' in (
        hooks
    )
    (install,) = [h for h in hooks if "pip install" in h]
    assert "SOURCE_DATE_EPOCH=1700000000" in install  # hash-based .pyc: reproducible
    assert "python3 -m venv /opt/kernel" in install and "--no-index" in install
    assert all(r in install for r in recipe.requirements)
    # the pins are hashed: another ipykernel is another image
    other = recipes.Recipe(
        **{**recipe.__dict__, "requirements": ("ipykernel==7.3.0", *recipe.requirements[1:])}
    )
    assert recipes.recipe_hash(other, "0.1.0") != recipes.recipe_hash(recipe, "0.1.0")
    # recipes without requirements hash as before (their cached images stay current)
    assert "requirements" not in recipes.r_recipe(LAUNCHERS).fingerprint("0.1.0")


def test_requirement_and_wheel_keys_normalise_names() -> None:
    assert recipes.requirement_key("Jupyter_Client==8.10.0") == "jupyter-client==8.10.0"
    assert recipes.wheel_key("jupyter_client-8.10.0-py3-none-any.whl") == "jupyter-client==8.10.0"
    assert recipes.wheel_key("pyzmq-27.3.0-cp311-cp311-manylinux_2_28_x86_64.whl") == (
        "pyzmq==27.3.0"
    )
    for bad in ("ipykernel", "ipykernel>=7", "==7", "ipykernel=="):
        with pytest.raises(recipes.RecipeError, match="not pinned"):
            recipes.requirement_key(bad)
    with pytest.raises(recipes.RecipeError):
        recipes.wheel_key("ipykernel-7.4.0.tar.gz")
    key = recipes.wheels_cache_key(["a==1", "B==2"], "3.11.2", ["p"])
    assert key == recipes.wheels_cache_key(["b==2", "a==1"], "3.11.2", ["p"])
    assert key != recipes.wheels_cache_key(["a==1", "b==3"], "3.11.2", ["p"])
    assert key != recipes.wheels_cache_key(["a==1", "b==2"], "3.12.0", ["p"])


def test_requirement_wheels_are_downloaded_once_and_must_be_the_pins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    brings = ["a-1.0-py3-none-any.whl", "b_c-2.0-cp311-abi3-manylinux_2_17_x86_64.whl"]

    def fake_pip(argv: list[str], log_path: Path) -> None:  # what pip download leaves
        calls.append(argv)
        dest = Path(argv[argv.index("--dest") + 1])
        for name in brings:
            (dest / name).write_bytes(b"")

    monkeypatch.setattr(build, "_run_logged", fake_pip)
    log = tmp_path / "log"
    wheels = build.requirement_wheels(["a==1.0", "b-c==2.0"], tmp_path / "w", log)
    assert sorted(p.name for p in wheels.iterdir()) == brings
    assert calls[0][-2:] == ["a==1.0", "b-c==2.0"] and "--only-binary=:all:" in calls[0]
    assert build.requirement_wheels(["b-c==2.0", "a==1.0"], tmp_path / "w", log) == wheels
    assert len(calls) == 1  # cached by the pin set
    brings.append("d-3.0-py3-none-any.whl")  # a dependency nobody pinned
    with pytest.raises(build.ImageBuildError, match=r"unpinned: d==3\.0"):
        build.requirement_wheels(["a==1.0", "b-c==2.0"], tmp_path / "w2", log)
    assert list((tmp_path / "w2").iterdir()) == []  # nothing half-downloaded stays


def test_busybox_recipe_links_every_applet(tmp_path: Path) -> None:
    recipe = recipes.busybox_recipe(b"\x7fELF...", ["/bin/sh", "usr/bin/env", "/bin/busybox", ""])
    assert recipe.links == (("bin/sh", "/bin/busybox"), ("usr/bin/env", "/bin/busybox"))
    write_rootfs_tar(tmp_path / "bb.tar", recipes.static_entries(recipe))
    with tarfile.open(tmp_path / "bb.tar") as tar:
        names = tar.getnames()
        passwd = tar.extractfile("etc/passwd")
        assert passwd is not None and b"kernel:x:1000:1000" in passwd.read()
    assert {"bin/busybox", "bin/sh", "usr/bin/env", "tmp", "etc/group"} <= set(names)
    with pytest.raises(recipes.RecipeError):
        recipes.busybox_recipe(b"#!/bin/sh", [])


def test_unknown_launcher_inputs_are_refused() -> None:
    with pytest.raises(recipes.RecipeError, match=r"respond\.py"):
        recipes.python_recipe({"kernel_launcher.py": b""})


# --- ELF check (parses input) -----------------------------------------------------------------


def elf(phdr_types: list[int]) -> bytes:
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    header[0x20:0x28] = (64).to_bytes(8, "little")  # e_phoff
    header[0x36:0x38] = (56).to_bytes(2, "little")  # e_phentsize
    header[0x38:0x3A] = len(phdr_types).to_bytes(2, "little")  # e_phnum
    body = b"".join(t.to_bytes(4, "little") + bytes(52) for t in phdr_types)
    return bytes(header) + body


def test_static_elf_is_told_from_a_dynamic_one() -> None:
    assert is_static_elf(elf([1, 1, 4]))
    assert not is_static_elf(elf([6, 3, 1]))  # PT_INTERP
    assert not is_static_elf(b"#!/bin/sh\n" + bytes(100))


@given(st.binary(max_size=300))
def test_elf_check_never_crashes(data: bytes) -> None:
    assert isinstance(is_static_elf(data), bool)
    assert isinstance(is_static_elf(b"\x7fELF\x02\x01" + data), bool)
