"""OCI image archives written from a root-filesystem tar, without Docker or a registry.

Stable API (for test fixtures too: a pause image is three lines, below)::

    from kernelfleet.images.oci import ImageConfig, TarEntry, write_oci_archive, write_rootfs_tar

    write_rootfs_tar(rootfs: Path, entries: Iterable[TarEntry]) -> None
        # a small root filesystem from bytes in memory (a static binary, symlinks, dirs)
    write_oci_archive(rootfs_tar: Path, out: Path, ref: str, config: ImageConfig,
                      *, compresslevel: int = 6) -> str
        # the archive at *out* (written to a temp name, then renamed); returns the manifest
        # digest "sha256:…". Raises InvalidReference for a bad *ref* (no tag, ":latest", …).
    read_oci_archive(path: Path, *, verify: bool = True) -> ArchiveInfo
        # what an archive holds (ref, digests, config); verify=True re-hashes every blob
    parse_ref(ref: str) -> ImageRef
        # [domain/]path:tag; .normalized is the name the kubelet asks for
    extract_layer(archive: Path, dest: IO[bytes]) -> None
        # the rootfs tar back (uncompressed), e.g. into ``tar -x``; single-layer images only
    gzip_layer(tar_path: Path, dest: IO[bytes], compresslevel: int) -> tuple[Blob, str]
    write_image_archive(out: Path, ref: ImageRef, config: Mapping[str, Any],
                        layers: Sequence[tuple[Blob, IO[bytes]]]) -> str
        # the two steps of write_oci_archive, for images of several layers
        # (kernelfleet.images.layer.add_layer: a base image plus an environment's layer)

For example, the pause image::

    write_rootfs_tar(tmp / "pause.tar", [TarEntry.file("pause", pause_binary, mode=0o755)])
    write_oci_archive(tmp / "pause.tar", tmp / "pause.oci.tar", "kernelfleet.test/pause:3.10",
                      ImageConfig(entrypoint=("/pause",)))

The archive is one tar holding an OCI image layout (``oci-layout``, ``index.json``,
``blobs/sha256/…``) with gzip layers (one, the rootfs tar as it is, from
:func:`write_oci_archive`; more from :func:`kernelfleet.images.layer.add_layer`), and Docker's
``manifest.json``, so both ``ctr -n k8s.io images import ARCHIVE`` (verified with containerd
1.6.20) and ``docker load -i ARCHIVE`` (Docker 20.10 reads only ``manifest.json``; not yet
verified here) name the image. The index descriptor
carries ``io.containerd.image.name`` (the full, normalised reference: what ``ctr`` names the
image and what the kubelet asks the CRI for) and ``org.opencontainers.image.ref.name`` (the tag,
as ``docker save`` writes it).

Determinism: the same rootfs tar and config give the same bytes (gzip mtime 0 and no file name,
a fixed ``created`` time, sorted JSON keys, archive members with mtime 0 and owner root).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
#: ``created`` of every image: a fixed time keeps the config (and so the digests) reproducible.
EPOCH = "1970-01-01T00:00:00Z"
_CHUNK = 1 << 20


class InvalidReference(ValueError):
    """An image reference that cannot name an image we build (the message says why)."""


class ArchiveError(ValueError):
    """An archive that is not an OCI image archive as :func:`write_oci_archive` writes them."""


# --- references -------------------------------------------------------------------------------

# distribution/reference's grammar, restricted to name:tag (no digests).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_REF_RE = re.compile(
    rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*):(?P<tag>{_TAG})",
    re.ASCII,
)
_MAX_NAME = 255


@dataclass(frozen=True)
class ImageRef:
    """``[domain/]path:tag``; :attr:`normalized` is what containerd and the kubelet use."""

    domain: str
    path: str
    tag: str

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def normalized(self) -> str:
        """The reference the kubelet asks for: ``pause:1`` is ``docker.io/library/pause:1``."""
        if self.domain:
            return f"{self.domain}/{self.path}:{self.tag}"
        path = self.path if "/" in self.path else f"library/{self.path}"
        return f"docker.io/{path}:{self.tag}"

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"


def parse_ref(ref: str) -> ImageRef:
    """Parse ``[domain/]path:tag``. The tag is required and is never ``latest``: a ``:latest``
    image gets ``imagePullPolicy: Always``, a pull from a registry that does not exist here."""
    m = _REF_RE.fullmatch(ref)
    if m is None:
        if "@" in ref:
            why = "digests are not supported; use name:tag"
        elif ":" not in ref.rsplit("/", 1)[-1]:
            why = "the tag is missing; write name:tag (never :latest)"
        else:
            why = "expected [domain/]name:tag with a lowercase name"
        raise InvalidReference(f"invalid image reference {ref!r}: {why}")
    domain, path, tag = m.group("domain") or "", m.group("path"), m.group("tag")
    # 'localhost' and names with a dot or a port are registries; else it is a path component.
    if domain and not ("." in domain or ":" in domain or domain == "localhost"):
        if re.fullmatch(_COMPONENT, domain, re.ASCII) is None:
            raise InvalidReference(
                f"invalid image reference {ref!r}: {domain!r} is neither a registry "
                "(it has no dot or port) nor a lowercase name component"
            )
        domain, path = "", f"{domain}/{path}"
    if tag == "latest":
        raise InvalidReference(
            f"invalid image reference {ref!r}: ':latest' makes the kubelet pull it from a "
            "registry (imagePullPolicy Always); use an explicit version tag"
        )
    parsed = ImageRef(domain, path, tag)
    if len(parsed.name) > _MAX_NAME:
        raise InvalidReference(f"invalid image reference {ref!r}: name longer than {_MAX_NAME}")
    return parsed


# --- image config -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image's config. *env* is used as given (add ``PATH`` yourself);
    *user* is ``uid[:gid]`` or a name from the image's ``/etc/passwd``."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    user: str = ""
    working_dir: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    architecture: str = "amd64"
    os: str = "linux"

    def to_json(self, diff_ids: Iterable[str]) -> dict[str, Any]:
        runtime: dict[str, Any] = {"Env": [f"{k}={v}" for k, v in self.env.items()]}
        if self.entrypoint:
            runtime["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            runtime["Cmd"] = list(self.cmd)
        if self.user:
            runtime["User"] = self.user
        if self.working_dir:
            runtime["WorkingDir"] = self.working_dir
        if self.labels:
            runtime["Labels"] = dict(self.labels)
        return {
            "architecture": self.architecture,
            "os": self.os,
            "created": EPOCH,
            "config": runtime,
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
            "history": [{"created": EPOCH, "created_by": "kernelfleet image build"}],
        }


def canonical_json(value: Any) -> bytes:
    """Compact JSON with sorted keys: equal values give equal bytes, hence equal digests."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- small root filesystems -------------------------------------------------------------------


@dataclass(frozen=True)
class TarEntry:
    """One member of a root filesystem written by :func:`write_rootfs_tar` (path relative to
    ``/``, without a leading slash; owner root unless *uid*/*gid* say otherwise)."""

    path: str
    kind: Literal["file", "dir", "symlink"]
    data: bytes = b""
    mode: int = 0o644
    target: str = ""
    uid: int = 0
    gid: int = 0

    @classmethod
    def file(cls, path: str, data: bytes, mode: int = 0o644) -> TarEntry:
        return cls(path.lstrip("/"), "file", data=data, mode=mode)

    @classmethod
    def dir(cls, path: str, mode: int = 0o755) -> TarEntry:
        return cls(path.lstrip("/"), "dir", mode=mode)

    @classmethod
    def symlink(cls, path: str, target: str) -> TarEntry:
        return cls(path.lstrip("/"), "symlink", mode=0o777, target=target)


def tar_entry_info(entry: TarEntry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, 0
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, entry.target
    else:
        info.size = len(entry.data)
    return info


def add_entries(tar: tarfile.TarFile, entries: Iterable[TarEntry]) -> None:
    """Append *entries* to an open tar, parent directories first when a caller forgot them."""
    seen = {m.name.removeprefix("./").rstrip("/") for m in tar.getmembers()}
    for entry in entries:
        parts = entry.path.strip("/").split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in seen:
                tar.addfile(tar_entry_info(TarEntry.dir(parent)))
                seen.add(parent)
        tar.addfile(tar_entry_info(entry), io.BytesIO(entry.data) if entry.kind == "file" else None)
        seen.add(entry.path.strip("/"))


def write_rootfs_tar(rootfs: Path, entries: Iterable[TarEntry]) -> None:
    """Write a root filesystem tar of *entries* (in the order given, parents added as needed)."""
    with tarfile.open(rootfs, "w", format=tarfile.PAX_FORMAT) as tar:
        add_entries(tar, entries)


# --- the archive ------------------------------------------------------------------------------


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what passes through on its way to *sink*."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.hash.update(view)
        self.size += len(view)
        self.sink.write(view)
        return len(view)


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str

    @property
    def member(self) -> str:
        return "blobs/sha256/" + self.digest.removeprefix("sha256:")

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def gzip_layer(tar_path: Path, dest: IO[bytes], compresslevel: int) -> tuple[Blob, str]:
    """Gzip the layer tar *tar_path* into *dest* (no file name, mtime 0: reproducible);
    returns the layer blob and its diff id (the digest of the uncompressed tar)."""
    diff = hashlib.sha256()
    counter = _HashingWriter(dest)
    with (
        open(tar_path, "rb") as src,
        gzip.GzipFile(
            filename="", mode="wb", fileobj=counter, compresslevel=compresslevel, mtime=0
        ) as gz,
    ):
        while chunk := src.read(_CHUNK):
            diff.update(chunk)
            gz.write(chunk)
    layer = Blob("sha256:" + counter.hash.hexdigest(), counter.size, MEDIA_LAYER_GZIP)
    return layer, "sha256:" + diff.hexdigest()


def _member(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.type = size, 0, kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_member(name, len(data)), io.BytesIO(data))


def write_oci_archive(
    rootfs_tar: Path, out: Path, ref: str, config: ImageConfig, *, compresslevel: int = 6
) -> str:
    """Write the image of *rootfs_tar* named *ref* to *out*; return its manifest digest.

    *out* appears complete or not at all (written to a temp name beside it, then renamed).
    Raises :class:`InvalidReference` before any work when *ref* is unusable."""
    parsed = parse_ref(ref)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out.parent) as gz_out:
        layer, diff_id = gzip_layer(rootfs_tar, gz_out, compresslevel)
        gz_out.seek(0)
        return write_image_archive(out, parsed, config.to_json([diff_id]), [(layer, gz_out)])


def write_image_archive(
    out: Path, ref: ImageRef, config: Mapping[str, Any], layers: Sequence[tuple[Blob, IO[bytes]]]
) -> str:
    """Write the image of *config* (its JSON, ``rootfs.diff_ids`` matching *layers*) and
    *layers* (each gzip blob and a file positioned at its start, base layer first) to *out*,
    named *ref*; return the manifest digest. Shared by :func:`write_oci_archive` and
    :func:`kernelfleet.images.layer.add_layer`, so every archive has one layout. A blob listed
    twice is stored once. *out* appears complete or not at all."""
    config_bytes = canonical_json(config)
    cfg = Blob(sha256_digest(config_bytes), len(config_bytes), MEDIA_CONFIG)
    manifest_bytes = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": cfg.descriptor(),
            "layers": [layer.descriptor() for layer, _ in layers],
        }
    )
    manifest = Blob(sha256_digest(manifest_bytes), len(manifest_bytes), MEDIA_MANIFEST)
    platform = {"architecture": config["architecture"], "os": config["os"]}
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                **manifest.descriptor(),
                "platform": platform,
                "annotations": {
                    ANNOTATION_CONTAINERD_NAME: ref.normalized,
                    ANNOTATION_REF_NAME: ref.tag,
                },
            }
        ],
    }
    docker_manifest = [
        {
            "Config": cfg.member,
            "RepoTags": [str(ref)],
            "Layers": [layer.member for layer, _ in layers],
        }
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            # Metadata first, the layers last: a reader finds the index without seeking far.
            _add_bytes(tar, "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
            _add_bytes(tar, "index.json", canonical_json(index))
            _add_bytes(tar, "manifest.json", canonical_json(docker_manifest))
            tar.addfile(_member("blobs/", kind=tarfile.DIRTYPE))
            tar.addfile(_member("blobs/sha256/", kind=tarfile.DIRTYPE))
            _add_bytes(tar, manifest.member, manifest_bytes)
            _add_bytes(tar, cfg.member, config_bytes)
            written: set[str] = set()
            for layer, source in layers:
                if layer.digest not in written:
                    tar.addfile(_member(layer.member, layer.size), source)
                    written.add(layer.digest)
        tmp.chmod(0o644)  # mkstemp's 0600 would hide the image from a non-root runtime user
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return manifest.digest


# --- reading an archive back ------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveInfo:
    """What an archive holds. *ref* is the ``io.containerd.image.name`` annotation."""

    ref: str
    tag: str
    manifest_digest: str
    config_digest: str
    layers: tuple[Blob, ...]
    diff_ids: tuple[str, ...]
    config: Mapping[str, Any]
    docker_repo_tags: tuple[str, ...]

    @property
    def size(self) -> int:
        """Compressed size of the layers, in bytes."""
        return sum(blob.size for blob in self.layers)


def _read_json(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Any:
    f = tar.extractfile(member)
    if f is None:
        raise ArchiveError(f"{member.name} is not a regular file")
    try:
        return json.loads(f.read())
    except ValueError as exc:
        raise ArchiveError(f"{member.name} is not JSON: {exc}") from exc


def _hash_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    f = tar.extractfile(member)
    if f is None:
        raise ArchiveError(f"{member.name} is not a regular file")
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return "sha256:" + h.hexdigest()


def read_oci_archive(path: Path, *, verify: bool = True) -> ArchiveInfo:
    """Read *path*'s index, manifest and config. With *verify*, also check that every blob's
    digest and size match its descriptor and that the layer's uncompressed digest is the
    config's diff id (this reads the whole archive)."""
    try:
        with tarfile.open(path, "r:") as tar:
            return _read(tar, verify)
    except (tarfile.TarError, OSError, KeyError, TypeError, EOFError, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"{path}: not a readable OCI archive ({exc})") from exc


def _read(tar: tarfile.TarFile, verify: bool) -> ArchiveInfo:
    small: dict[str, Any] = {}
    blobs: dict[str, tarfile.TarInfo] = {}
    for member in tar.getmembers():
        if member.name in ("oci-layout", "index.json", "manifest.json"):
            small[member.name] = _read_json(tar, member)
        elif member.name.startswith("blobs/sha256/") and member.isfile():
            blobs["sha256:" + member.name.removeprefix("blobs/sha256/")] = member
    if small.get("oci-layout", {}).get("imageLayoutVersion") != "1.0.0":
        raise ArchiveError("no oci-layout with imageLayoutVersion 1.0.0")
    if "index.json" not in small:
        raise ArchiveError("no index.json")
    descriptors = small["index.json"].get("manifests") or []
    if len(descriptors) != 1:
        raise ArchiveError(f"index.json lists {len(descriptors)} manifests, expected 1")
    desc = descriptors[0]
    annotations = desc.get("annotations") or {}

    def load(digest: str, size: int) -> Any:
        member = blobs.get(digest)
        if member is None:
            raise ArchiveError(f"blob {digest} is missing")
        if member.size != size:
            raise ArchiveError(f"blob {digest} is {member.size} bytes, descriptor says {size}")
        f = tar.extractfile(member)
        if f is None:
            raise ArchiveError(f"blob {digest} is not a regular file")
        data = f.read()
        if verify and sha256_digest(data) != digest:
            raise ArchiveError(f"blob {digest} does not match its digest")
        return json.loads(data)

    manifest = load(desc["digest"], desc["size"])
    config = load(manifest["config"]["digest"], manifest["config"]["size"])
    layers = tuple(
        Blob(layer["digest"], layer["size"], layer["mediaType"]) for layer in manifest["layers"]
    )
    diff_ids = tuple(config.get("rootfs", {}).get("diff_ids", ()))
    if len(diff_ids) != len(layers):
        raise ArchiveError(f"{len(layers)} layers but {len(diff_ids)} diff ids")
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        layer_member = blobs.get(layer.digest)
        if layer_member is None or layer_member.size != layer.size:
            raise ArchiveError(f"layer {layer.digest} is missing or has the wrong size")
        if verify:
            _verify_layer(tar, layer_member, layer, diff_id)
    docker = small.get("manifest.json") or [{}]
    return ArchiveInfo(
        ref=annotations.get(ANNOTATION_CONTAINERD_NAME, ""),
        tag=annotations.get(ANNOTATION_REF_NAME, ""),
        manifest_digest=desc["digest"],
        config_digest=manifest["config"]["digest"],
        layers=layers,
        diff_ids=diff_ids,
        config=config,
        docker_repo_tags=tuple(docker[0].get("RepoTags", ())),
    )


def _verify_layer(tar: tarfile.TarFile, member: tarfile.TarInfo, layer: Blob, diff_id: str) -> None:
    if _hash_member(tar, member) != layer.digest:
        raise ArchiveError(f"layer {layer.digest} does not match its digest")
    f = tar.extractfile(member)
    assert f is not None  # _hash_member checked
    diff = hashlib.sha256()
    with gzip.GzipFile(fileobj=f, mode="rb") as gz:
        while chunk := gz.read(_CHUNK):
            diff.update(chunk)
    if "sha256:" + diff.hexdigest() != diff_id:
        raise ArchiveError(f"layer {layer.digest}: uncompressed digest is not diff id {diff_id}")


def extract_layer(archive: Path, dest: IO[bytes]) -> None:
    """Copy the (single) layer of *archive*, uncompressed, to *dest*: the rootfs tar again.
    An image of several layers (:func:`kernelfleet.images.layer.add_layer`) is refused: its
    first layer alone is not its root filesystem."""
    info = read_oci_archive(archive, verify=False)
    if len(info.layers) != 1:
        raise ArchiveError(
            f"{archive}: {len(info.layers)} layers; only a single-layer image's root "
            "filesystem can be extracted (extract the base image's archive instead)"
        )
    with tarfile.open(archive, "r:") as tar:
        f = tar.extractfile(info.layers[0].member)
        if f is None:
            raise ArchiveError(f"{archive}: the layer is not a regular file")
        with gzip.GzipFile(fileobj=f, mode="rb") as gz:
            shutil.copyfileobj(gz, dest, _CHUNK)
