"""Checksums of a kernelspec directory, to compare copies on different hosts (pure + local I/O).

The format is the one of the host probe (``kernelfleet/launchers/probe.py``, which cannot import
this module on a host): ``{relative path: [sha256 hex, permission bits]}`` for regular files,
in-progress ``.kf-*`` directories left out. A test keeps the two implementations in step.
"""

from __future__ import annotations

import hashlib
import os

Manifest = dict[str, list[object]]


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def local_manifest(root: str) -> Manifest:
    """The manifest of *root* on this machine (empty if it does not exist)."""
    out: Manifest = {}
    if not os.path.isdir(root):
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".kf-"))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            out[os.path.relpath(path, root)] = [file_sha256(path), os.stat(path).st_mode & 0o777]
    return out


def diff_manifests(primary: Manifest, other: Manifest) -> tuple[list[str], list[str], list[str]]:
    """(changed, missing on *other*, extra on *other*) relative paths, sorted."""
    changed = sorted(p for p in primary if p in other and list(other[p]) != list(primary[p]))
    missing = sorted(p for p in primary if p not in other)
    extra = sorted(p for p in other if p not in primary)
    return changed, missing, extra
