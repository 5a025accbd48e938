"""An environment as an image layer: a kernel image plus one layer holding a built environment.

API (the environment service calls these; the archive is loaded like any other, with
``ctr images import`` or ``docker load``)::

    env_layer_tar(env_dir: Path, image_path: str, out: Path) -> None
        # the tar of a built environment directory, placed at image_path inside the image
    add_layer(base_archive: Path, layer_tar: Path, out: Path, ref: str, *,
              env: Mapping[str, str] | None = None, compresslevel: int = 1) -> str
        # base image + that tar as one more gzip layer, named ref; the manifest digest

For example, environment ``pandas`` built at ``<root>/pandas/3f2a…`` on the python image::

    path = "/opt/kernelfleet/envs/pandas/3f2a9c0d1e2b"
    env_layer_tar(root / "pandas/3f2a9c0d1e2b", path, tmp / "layer.tar")
    add_layer(python_archive, tmp / "layer.tar", out, "kernelfleet.test/env-pandas:3f2a9c0d1e2b")

The new archive keeps the base's layers byte for byte (their digests are checked while they
are copied), appends the layer, and writes a config that is the base's plus the layer's diff id,
a history entry and the *env* additions (a variable the base sets is replaced in place, a new one
is appended), in :mod:`kernelfleet.images.oci`'s layout. The same inputs give the same bytes.

What a layer may hold, since an environment is built by running other people's code (checked by
:func:`check_layer_tar` before anything is written, so a refused layer writes no file):
directories, regular files, symlinks and hard links to an earlier file of the same layer; names
relative and normalised (no ``/`` at the start, no ``.`` or ``..``), UTF-8, no ``.wh.`` whiteout
(which would delete a file of the base image), none below a symlink of the layer (whose target
is resolved in the image); no setuid or setgid bit (the kernel runs unprivileged in the
container, and must stay so). A symlink's target is not checked: it resolves inside the
container's root filesystem.

:func:`env_layer_tar` reads the environment directory without following symlinks anywhere: it
walks with directory descriptors and opens every file ``O_NOFOLLOW``, so a process that swaps a
file or directory for a symlink while the tar is written (a build's straggler) gets an error,
not a gateway file into the image. Members are owned by root with mtime 0, in name order, modes
kept except that the setuid and setgid bits are dropped and the owner's read and execute bits
are given to group and others too (the owner is root in the image; the kernel is not).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import tempfile
from collections.abc import Generator, Mapping
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast

from kernelfleet.errors import PublicError
from kernelfleet.images.oci import (
    EPOCH,
    ArchiveError,
    Blob,
    gzip_layer,
    parse_ref,
    read_oci_archive,
    write_image_archive,
)

#: ``created_by`` of the history entry a layer adds.
HISTORY = "kernelfleet images.layer.add_layer"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ALLOWED_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE)


class LayerError(PublicError):
    """A layer (or its environment directory, or its *env*) that cannot go into an image; the
    message says which member and why, and what to do."""

    status = 400
    reason = "Environment Layer Refused"


# --- what a layer may hold --------------------------------------------------------------------


def member_problem(name: str) -> str | None:
    """Why *name* cannot be a member of a layer, or None when it can."""
    if not name:
        return "the name is empty"
    if "\0" in name:
        return "the name holds a NUL byte"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not UTF-8"
    if name.startswith("/"):
        return "the name is absolute"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "the name is not a normalised relative path (an empty, '.' or '..' part)"
    if parts[-1].startswith(".wh."):
        return "the name is a whiteout (it would delete a file of the base image)"
    return None


def check_layer_tar(layer_tar: Path) -> int:
    """Check every member of *layer_tar* against the rules of the module docstring; return how
    many members it has. Raises :class:`LayerError` naming the first member refused."""
    try:
        with tarfile.open(layer_tar, "r:") as tar:
            return _check_members(tar)
    except tarfile.TarError as exc:
        raise LayerError(
            f"the layer {layer_tar.name} is not an uncompressed tar ({exc}): write it with "
            "env_layer_tar"
        ) from exc


def _check_members(tar: tarfile.TarFile) -> int:
    seen: set[str] = set()
    files: set[str] = set()
    symlinks: set[str] = set()
    count = 0
    for member in tar:
        count += 1
        name = member.name

        def refuse(why: str, name: str = name) -> LayerError:
            return LayerError(
                f"layer member {name!r} refused: {why}; rebuild the environment without it"
            )

        why = member_problem(name)
        if why:
            raise refuse(why)
        if name in seen:
            raise refuse("it appears twice")
        if member.type not in (*_ALLOWED_TYPES, tarfile.LNKTYPE):
            raise refuse("not a directory, regular file, symlink or hard link")
        if member.mode & (stat.S_ISUID | stat.S_ISGID):
            raise refuse("setuid or setgid bit")
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in symlinks:
                raise refuse(f"below the symlink {'/'.join(parts[:i])!r} of the layer")
        if member.islnk():
            target_problem = member_problem(member.linkname)
            if target_problem or member.linkname not in files:
                raise refuse(
                    f"a hard link to {member.linkname!r}, which is not an earlier file of the layer"
                )
        seen.add(name)
        if member.isreg():
            files.add(name)
        elif member.issym():
            symlinks.add(name)
    return count


def _check_env(env: Mapping[str, str]) -> None:
    for key, value in env.items():
        if not _ENV_NAME.fullmatch(key):
            raise LayerError(
                f"environment variable name {key!r} refused: use letters, digits and '_' "
                "(not starting with a digit)"
            )
        if "\0" in value:
            raise LayerError(f"environment variable {key} refused: its value holds a NUL byte")


# --- the environment directory as a tar -------------------------------------------------------


def _image_parts(image_path: str) -> list[str]:
    path = PurePosixPath(image_path)
    relative = image_path.removeprefix("/")
    why = "it is not absolute" if not path.is_absolute() else member_problem(relative)
    if why:
        raise LayerError(
            f"image path {image_path!r} refused: {why}; pass an absolute path such as "
            "/opt/kernelfleet/envs/NAME/DIGEST12"
        )
    return relative.split("/")


def _mode(st_mode: int) -> int:
    """The member's mode: setuid/setgid dropped, the owner's r and x given to all."""
    mode = stat.S_IMODE(st_mode) & ~(stat.S_ISUID | stat.S_ISGID)
    owner_rx = mode & 0o500
    return mode | owner_rx >> 3 | owner_rx >> 6


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.uid = info.gid = info.mtime = 0
    info.uname = info.gname = ""
    return info


def env_layer_tar(env_dir: Path, image_path: str, out: Path) -> None:
    """Write *out*: the tar of the directory *env_dir* placed at the absolute *image_path* in
    the image (its parent directories first, mode 0755), ready for :func:`add_layer`. *out*
    appears complete or not at all. Raises :class:`LayerError` for a bad *image_path* or an
    entry a layer may not hold (a device, socket or fifo, or a name that is not UTF-8)."""
    parts = _image_parts(image_path)
    try:
        root_fd = os.open(env_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise LayerError(
            f"the environment directory {env_dir} cannot be opened ({exc.strerror}): build "
            "the environment first"
        ) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
            for i in range(1, len(parts)):
                tar.addfile(_info("/".join(parts[:i]), tarfile.DIRTYPE, 0o755))
            prefix = "/".join(parts)
            tar.addfile(_info(prefix, tarfile.DIRTYPE, _mode(os.fstat(root_fd).st_mode)))
            walk = _walk(root_fd, prefix, {})
            with contextlib.closing(walk):  # its open directories are closed on an error too
                for info, content in walk:
                    if content is None:
                        tar.addfile(info)
                    else:
                        with content:
                            tar.addfile(info, content)
        tmp.chmod(0o644)
        os.replace(tmp, out)
    finally:
        os.close(root_fd)
        tmp.unlink(missing_ok=True)


def _walk(
    dir_fd: int, prefix: str, inodes: dict[tuple[int, int], str]
) -> Generator[tuple[tarfile.TarInfo, IO[bytes] | None], None, None]:
    """The members under the open directory *dir_fd*, named *prefix*/…, depth first in name
    order; each regular file with an open file to copy (the caller closes it). *inodes* maps
    the files seen so far (with more than one link) to their member names."""
    for name in sorted(os.listdir(dir_fd)):
        member = f"{prefix}/{name}"
        why = member_problem(member)
        if why:
            raise LayerError(f"environment file {member!r} refused: {why}; remove it")
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            link = os.readlink(name, dir_fd=dir_fd)
            yield _info(member, tarfile.SYMTYPE, 0o777, link=link), None
        elif stat.S_ISDIR(st.st_mode):
            child = _open_same(name, dir_fd, st, os.O_DIRECTORY, member)
            try:
                yield _info(member, tarfile.DIRTYPE, _mode(st.st_mode)), None
                yield from _walk(child, member, inodes)
            finally:
                os.close(child)
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in inodes:
                yield _info(member, tarfile.LNKTYPE, _mode(st.st_mode), link=inodes[key]), None
                continue
            if st.st_nlink > 1:
                inodes[key] = member
            fd = _open_same(name, dir_fd, st, 0, member)
            yield _info(member, tarfile.REGTYPE, _mode(st.st_mode), st.st_size), os.fdopen(fd, "rb")
        else:
            raise LayerError(
                f"environment file {member!r} refused: not a directory, regular file or "
                "symlink (a device, socket or fifo); remove it and rebuild"
            )


def _open_same(name: str, dir_fd: int, st: os.stat_result, flags: int, member: str) -> int:
    """Open *name* (never through a symlink), and check it is the file *st* described."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | flags, dir_fd=dir_fd)
    except OSError as exc:
        raise LayerError(
            f"environment file {member!r} changed while being read ({exc.strerror}): "
            "rebuild the environment"
        ) from exc
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise LayerError(
            f"environment file {member!r} changed while being read: rebuild the environment"
        )
    return fd


# --- the layered image ------------------------------------------------------------------------


class _CheckedBlob(io.RawIOBase):
    """Reads a base layer out of its archive, and raises :class:`ArchiveError` on the read that
    reaches its end if what was read does not hash to its digest (before the new archive is
    renamed into place)."""

    def __init__(self, source: IO[bytes], blob: Blob, archive: Path) -> None:
        self.source, self.blob, self.archive = source, blob, archive
        self.hash = hashlib.sha256()
        self.done = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.hash.update(data)
        self.done += len(data)
        if self.done == self.blob.size and "sha256:" + self.hash.hexdigest() != self.blob.digest:
            raise ArchiveError(
                f"{self.archive}: layer {self.blob.digest} does not match its digest; rebuild "
                "the base image (kernelfleet image build --rebuild)"
            )
        return data


def _layered_config(
    base: Mapping[str, Any], diff_id: str, env: Mapping[str, str]
) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(json.dumps(base))  # a deep copy of plain JSON
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), diff_id]
    config["history"] = [*config.get("history", []), {"created": EPOCH, "created_by": HISTORY}]
    if env:
        runtime = config.setdefault("config", {})
        merged = {str(item).partition("=")[0]: str(item) for item in runtime.get("Env") or []}
        merged.update({key: f"{key}={value}" for key, value in env.items()})
        runtime["Env"] = list(merged.values())  # a base variable keeps its place
    return config


def add_layer(
    base_archive: Path,
    layer_tar: Path,
    out: Path,
    ref: str,
    *,
    env: Mapping[str, str] | None = None,
    compresslevel: int = 1,
) -> str:
    """Write *out*: the image of *base_archive* (an archive of
    :func:`kernelfleet.images.oci.write_oci_archive` or of this function, any number of layers)
    with *layer_tar* (uncompressed, as :func:`env_layer_tar` writes it) as one more gzip layer,
    named *ref*, with *env* merged into its ``Env``; return its manifest digest.

    Refused before anything is written: a bad *ref* (:class:`~kernelfleet.images.oci.
    InvalidReference`), a bad *env* or layer member (:class:`LayerError`), a base that is not
    such an archive (:class:`~kernelfleet.images.oci.ArchiveError`, also raised when a base
    layer's bytes do not match their digest, before *out* appears). *out* appears complete or
    not at all. *compresslevel* 1 is the image build's choice: fast, a few per cent larger."""
    parsed = parse_ref(ref)
    _check_env(env or {})
    base = read_oci_archive(base_archive, verify=False)
    check_layer_tar(layer_tar)
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryFile(dir=out.parent) as gz_out,
        tarfile.open(base_archive, "r:") as base_tar,
    ):
        layer, diff_id = gzip_layer(layer_tar, gz_out, compresslevel)
        gz_out.seek(0)
        layers: list[tuple[Blob, IO[bytes]]] = []
        for blob in base.layers:
            source = base_tar.extractfile(blob.member)
            if source is None:
                raise ArchiveError(f"{base_archive}: layer {blob.digest} is not a regular file")
            layers.append((blob, cast(IO[bytes], _CheckedBlob(source, blob, base_archive))))
        layers.append((layer, gz_out))
        config = _layered_config(base.config, diff_id, env or {})
        return write_image_archive(out, parsed, config, layers)
