"""Receive a kernel environment archive on a host and unpack it in place (``env`` shipping).

This file runs on the host (standard library only, Python 3.8+), started over SSH by
``kernelfleet/envs/ship.py`` as ``python3 -I -c <this file>``. Parameters arrive as one JSON
line on stdin (never on the command line); every answer is one JSON line on stdout.

``{"op": "ship", "dest": D, "sha256": S, "size": N, "name": NAME}``:

1. If ``D/.kf-env.json`` records sha256 *S*, answer ``{"ok": true, "status": "cached"}``: no
   byte of the archive is sent.
2. Otherwise make a temp dir next to *D* (``.kf-tmp-<digest12>-<random>``) and answer
   ``{"status": "send"}``. The gateway writes the archive's *N* bytes and closes stdin.
3. The gzip stream is unpacked while it arrives (``tarfile`` stream mode), every byte hashed on
   the way. Each member is checked before anything is written (:class:`MemberChecker`).
4. At the end of the stream the sha256 and the size must be *S* and *N*. Then directory modes
   are set, the marker ``.kf-env.json`` is written (last: a directory with the marker is
   complete) and the temp dir is renamed to *D* (a previous *D* without the same marker is
   moved aside and deleted). Answer ``{"ok": true, "status": "shipped", "files": F, ...}``.

``{"op": "remove", "path": P}``: rename *P* aside (``.kf-rm-...``, so no half-deleted
environment keeps its marker) and delete it. Refused if *P* holds anything but shipped
environments and kernelfleet's own temp entries.

Crash rules: any failure (bad member, checksum mismatch, stdin closed early, disk full) deletes
the temp dir before answering ``{"ok": false, "kind": K, "error": E}``, so nothing half-shipped
is left. A receiver killed outright leaves its temp dir; the next ship into the same parent
deletes ``.kf-*`` temp entries older than a day.

What may be unpacked: directories, regular files, hard links to earlier regular files, and
symbolic links that stay inside the environment - or, for ``bin/python*`` style links, an
absolute link to an interpreter (a relocatable venv's ``bin/python`` points at e.g.
``/usr/bin/python3.11``). Never absolute names, ``..``, device files or FIFOs, two members at one
path, or a member below a symbolic link. Modes lose setuid/setgid/sticky and group/other write
bits and gain read for everyone (an environment is shared by the kernels of all users).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import re
import secrets
import shutil
import sys
import tarfile
import time

MARKER = ".kf-env.json"
TEMP_PREFIXES = (".kf-tmp-", ".kf-old-", ".kf-rm-")
STALE_SECONDS = 24 * 3600
CHUNK = 1 << 18
INTERPRETER = re.compile(r"(python|pypy)(\d+(\.\d+)*)?t?")
DIR, FILE, SYMLINK, HARDLINK, OTHER = "dir", "file", "symlink", "hardlink", "other"


class Refused(Exception):
    """A request or archive member that must not be acted on; ``kind`` names the class."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


# -- pure checks ---------------------------------------------------------------------------------


def check_host_path(path: object) -> str:
    """*path* if it is an absolute, normalized POSIX path at least two levels deep."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise Refused("request", "the path must be a non-empty string")
    if not path.startswith("/") or posixpath.normpath(path) != path or path.startswith("//"):
        raise Refused("request", f"the path {path!r} is not absolute and normalized")
    if posixpath.dirname(path) == "/":
        raise Refused("request", f"the path {path!r} is too close to / to be an environment")
    return path


def member_name(name: str) -> str:
    """The normalized relative path of archive member *name* ("" for the root itself)."""
    if "\x00" in name:
        raise Refused("unsafe", f"member name {name!r} contains NUL")
    if name.startswith("/"):
        raise Refused("unsafe", f"member {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Refused("unsafe", f"member {name!r} leaves the environment (..)")
    return "/".join(parts)


def interpreter_link(name: str, target: str) -> bool:
    """Whether symlink *name* -> absolute *target* is a venv's link to its base interpreter."""
    return (
        posixpath.dirname(name) == "bin"
        and target.startswith("/")
        and not target.startswith("//")
        and posixpath.normpath(target) == target
        and INTERPRETER.fullmatch(posixpath.basename(target)) is not None
    )


def link_inside(name: str, target: str) -> bool:
    """Whether relative symlink *name* -> *target* resolves (lexically) inside the root."""
    if not target or target.startswith("/") or "\x00" in target:
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    return resolved != ".." and not resolved.startswith("../") and not resolved.startswith("/")


def safe_mode(kind: str, mode: int) -> int:
    """The mode to give an unpacked file or directory (see the module docstring)."""
    base = mode & 0o755
    return base | (0o755 if kind == DIR else 0o644)


class MemberChecker:
    """Decides, member by member in archive order, what may be unpacked (pure: no I/O)."""

    def __init__(self) -> None:
        self.dirs: set[str] = {""}
        self.files: set[str] = set()
        self.links: set[str] = set()

    def check(self, kind: str, name: str, linkname: str = "") -> str:
        """The normalized path to create for this member; :class:`Refused` if unsafe."""
        rel = member_name(name)
        if kind == OTHER:
            raise Refused("unsafe", f"member {name!r} is a device file, FIFO or other special file")
        if rel == "":
            if kind == DIR:
                return rel
            raise Refused("unsafe", f"member {name!r} would replace the environment's root")
        if rel == MARKER:
            raise Refused("unsafe", f"member {name!r} has the name of kernelfleet's marker")
        parents = rel.split("/")[:-1]
        for i in range(1, len(parents) + 1):
            prefix = "/".join(parents[:i])
            if prefix in self.links or prefix in self.files:
                raise Refused("unsafe", f"member {name!r} lies below the non-directory {prefix!r}")
        if rel in self.files or rel in self.links or (rel in self.dirs and kind != DIR):
            raise Refused("unsafe", f"member {name!r} is a second member at the same path")
        if kind == SYMLINK:
            if not (link_inside(rel, linkname) or interpreter_link(rel, linkname)):
                raise Refused(
                    "unsafe",
                    f"symbolic link {name!r} -> {linkname!r} points outside the environment",
                )
        elif kind == HARDLINK:
            source = member_name(linkname)
            if source not in self.files:
                raise Refused(
                    "unsafe",
                    f"hard link {name!r} -> {linkname!r} is not to an earlier regular file",
                )
        elif kind not in (DIR, FILE):
            raise Refused("unsafe", f"member {name!r} has an unknown type {kind!r}")
        for i in range(1, len(parents) + 1):
            self.dirs.add("/".join(parents[:i]))
        if kind == DIR:
            self.dirs.add(rel)
        elif kind == SYMLINK:
            self.links.add(rel)
        else:
            self.files.add(rel)
        return rel


def member_kind(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return DIR
    if member.isreg():
        return FILE
    if member.issym():
        return SYMLINK
    if member.islnk():
        return HARDLINK
    return OTHER


def read_marker(path: str) -> dict | None:
    try:
        with open(os.path.join(path, MARKER), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -- I/O -----------------------------------------------------------------------------------------


class HashingReader:
    """stdin as a file for tarfile, hashing and counting every byte read; at most *limit*."""

    def __init__(self, raw, limit: int) -> None:
        self.raw = raw
        self.limit = limit
        self.sha = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(CHUNK if n is None or n < 0 else n)
        self.sha.update(data)
        self.count += len(data)
        if self.count > self.limit:
            raise Refused("size", f"more than the announced {self.limit} bytes arrived")
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def sweep_stale(parent: str, now: float) -> None:
    """Delete temp entries an earlier receiver left when it was killed (older than a day)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(TEMP_PREFIXES):
            continue
        path = os.path.join(parent, name)
        try:
            if now - os.lstat(path).st_mtime > STALE_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def unpack(tar: tarfile.TarFile, root: str) -> int:
    """Unpack the members of stream *tar* under *root* (fresh and empty); the number of members
    other than directories."""
    checker = MemberChecker()
    dir_modes = {root: 0o755}
    count = 0
    for member in tar:
        kind = member_kind(member)
        rel = checker.check(kind, member.name, member.linkname)
        path = os.path.join(root, rel) if rel else root
        parent = os.path.dirname(path)
        if parent != root and not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        if kind == DIR:
            if rel:
                if not os.path.isdir(path):
                    os.mkdir(path, 0o700)
                dir_modes[path] = safe_mode(DIR, member.mode)
            continue
        if os.path.lexists(path):  # the checker's rules make this impossible; never write through
            raise Refused("unsafe", f"member {member.name!r} is a second member at the same path")
        if kind == SYMLINK:
            os.symlink(member.linkname, path)
        elif kind == HARDLINK:
            os.link(os.path.join(root, member_name(member.linkname)), path)
        else:
            source = tar.extractfile(member)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(path, flags, 0o600)
            with os.fdopen(fd, "wb") as out:
                if source is not None:
                    shutil.copyfileobj(source, out, CHUNK)
                os.fchmod(out.fileno(), safe_mode(FILE, member.mode))
            os.utime(path, (member.mtime, member.mtime))  # keeps .pyc files valid
        count += 1
    for path in sorted(dir_modes, reverse=True):
        os.chmod(path, dir_modes[path])
    return count


def install(tmp: str, dest: str, sha256: str) -> bool:
    """Rename *tmp* to *dest*; False if another receiver put the same environment there first."""
    try:
        os.rename(tmp, dest)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise
    if (read_marker(dest) or {}).get("sha256") == sha256:
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    parent, base = os.path.split(dest)
    old = os.path.join(parent, f".kf-old-{base}-{secrets.token_hex(4)}")
    os.rename(dest, old)
    os.rename(tmp, dest)
    if os.path.isdir(old) and not os.path.islink(old):
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.unlink(old)
    return True


def ship(request: dict, inp, say) -> dict:
    dest = check_host_path(request.get("dest"))
    sha256 = request.get("sha256")
    size = request.get("size")
    if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise Refused("request", "sha256 must be 64 lowercase hex digits")
    if not isinstance(size, int) or size < 0:
        raise Refused("request", "size must be a non-negative integer")
    if (read_marker(dest) or {}).get("sha256") == sha256:
        return {"ok": True, "status": "cached"}
    started = time.monotonic()
    parent = os.path.dirname(dest)
    os.makedirs(parent, 0o755, exist_ok=True)
    sweep_stale(parent, time.time())
    tmp = os.path.join(parent, f".kf-tmp-{sha256[:12]}-{secrets.token_hex(4)}")
    os.mkdir(tmp, 0o700)
    try:
        say({"status": "send"})
        reader = HashingReader(inp, size)
        try:
            # tarfile's default buffer: with a large one its stream reader copies the whole
            # decompressed buffer for every 512-byte header (measured: +0.35 s CPU per 90 MB).
            with tarfile.open(fileobj=reader, mode="r|gz") as tar:
                files = unpack(tar, tmp)
            reader.drain()
        except Exception as exc:
            # Read the whole stream first: a damaged transfer must be reported as such, not as
            # whatever its garbage looked like to tarfile or the member checks.
            if not (isinstance(exc, Refused) and exc.kind == "size"):
                reader.drain()
            if reader.count != size or reader.sha.hexdigest() != sha256:
                raise Refused("checksum", _mismatch(reader, size, sha256)) from exc
            if isinstance(exc, (tarfile.TarError, EOFError, ValueError)):
                raise Refused("archive", f"the archive cannot be unpacked: {exc}") from exc
            raise
        if reader.count != size or reader.sha.hexdigest() != sha256:
            raise Refused("checksum", _mismatch(reader, size, sha256))
        marker = {"sha256": sha256, "name": str(request.get("name") or ""), "files": files}
        with open(os.path.join(tmp, MARKER), "w", encoding="utf-8") as f:
            json.dump(marker, f)
        os.chmod(os.path.join(tmp, MARKER), 0o644)
        placed = install(tmp, dest, sha256)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "ok": True,
        "status": "shipped" if placed else "cached",
        "files": files,
        "bytes": reader.count,
        "seconds": round(time.monotonic() - started, 3),
    }


def _mismatch(reader: HashingReader, size: int, sha256: str) -> str:
    if reader.count != size:
        return f"{reader.count} bytes arrived, {size} were announced (the transfer was cut short)"
    return f"the archive's sha256 is {reader.sha.hexdigest()}, expected {sha256}"


def remove(request: dict) -> dict:
    path = check_host_path(request.get("path"))
    if not os.path.lexists(path):
        return {"ok": True, "status": "absent"}
    if os.path.islink(path) or not os.path.isdir(path):
        raise Refused("foreign", f"{path} is not a directory")
    # one build (it has the marker), or the directory of an environment's builds
    for entry in [] if read_marker(path) is not None else os.listdir(path):
        full = os.path.join(path, entry)
        if entry.startswith(TEMP_PREFIXES):
            continue
        if os.path.islink(full) or read_marker(full) is None:
            raise Refused(
                "foreign", f"{path} holds {entry!r}, which is not a shipped kernel environment"
            )
    parent, base = os.path.split(path)
    doomed = os.path.join(parent, f".kf-rm-{base}-{secrets.token_hex(4)}")
    os.rename(path, doomed)
    shutil.rmtree(doomed)
    return {"ok": True, "status": "removed"}


def main() -> int:
    inp = sys.stdin.buffer

    def say(answer: dict) -> None:
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()

    try:
        try:
            request = json.loads(inp.readline() or b"null")
        except ValueError:
            request = None
        if not isinstance(request, dict):
            raise Refused("request", "the first line must be a JSON object")
        op = request.get("op")
        if op == "ship":
            say(ship(request, inp, say))
        elif op == "remove":
            say(remove(request))
        else:
            raise Refused("request", f"unknown op {op!r}")
    except Refused as exc:
        say({"ok": False, "kind": exc.kind, "error": exc.message})
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        code = errno.errorcode.get(exc.errno or 0, "")
        say({"ok": False, "kind": "os", "errno": code, "error": f"{exc.strerror or exc}{where}"})
        return 1
    except Exception as exc:
        say({"ok": False, "kind": "internal", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
