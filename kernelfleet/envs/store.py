"""Environments on the gateway's disk: one directory per environment under the env root.

::

    <root>/<name>/env.json          the record (:class:`~kernelfleet.envs.model.EnvRecord`)
    <root>/<name>/<digest12>/       the built environment (relocatable venv)
    <root>/archives/<sha256>.tar.gz its archive (what is shipped), shared by equal builds
    <root>/.lock                    taken while a name is claimed or released
    <scratch>/b-<token>/            a build in progress (removed whatever its outcome)
    <scratch>/uv-cache-<uid>/       uv's cache, shared by the wheels-only builds of one user

The scratch directory is apart from the root because the build user must reach it (the root
is usually under the gateway user's private data directory).

A name is claimed by writing a ``building`` record under the lock, so quotas count a build
in progress and two creators cannot take one name; the CLI and the gateway share the lock
(``flock``). Writes are atomic (temp file, then rename). The functions block (small files):
call them through ``asyncio.to_thread`` from the server.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kernelfleet.envs.model import EnvRecord

RECORD = "env.json"
ARCHIVES = "archives"


class EnvStore:
    def __init__(self, root: str | Path, scratch: str | Path):
        self.root = Path(root)
        self.scratch = Path(scratch)

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o755)
        (self.root / ARCHIVES).mkdir(exist_ok=True, mode=0o755)
        self.scratch.mkdir(parents=True, exist_ok=True, mode=0o711)
        os.chmod(self.scratch, 0o711)  # noqa: S103 - the build user enters its own build directory only

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.prepare()
        with open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def env_dir(self, name: str) -> Path:
        return self.root / name

    def archive_path(self, sha256: str) -> Path:
        return self.root / ARCHIVES / f"{sha256}.tar.gz"

    def venv_dir(self, record: EnvRecord) -> Path:
        return self.root / record.name / record.digest12

    def read(self, name: str) -> EnvRecord | None:
        try:
            return EnvRecord.from_json((self.root / name / RECORD).read_text())
        except (OSError, ValueError, TypeError):
            return None

    def all(self) -> list[EnvRecord]:
        if not self.root.is_dir():
            return []
        out = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or entry.name == ARCHIVES or not entry.is_dir():
                continue
            record = self.read(entry.name)
            if record is not None:
                out.append(record)
        return out

    def write(self, record: EnvRecord) -> None:
        directory = self.root / record.name
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".env-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(record.to_json())
            os.chmod(tmp, 0o644)
            os.replace(tmp, directory / RECORD)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def delete(self, name: str) -> None:
        """Remove the environment's directory (record and builds)."""
        shutil.rmtree(self.root / name, ignore_errors=True)

    def delete_build(self, record: EnvRecord, keep: str = "") -> None:
        """Remove the builds of *record* but *keep* (a digest12)."""
        directory = self.root / record.name
        if not directory.is_dir():
            return
        for entry in directory.iterdir():
            if entry.is_dir() and entry.name != keep and not entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)

    def prune_archives(self) -> list[str]:
        """Delete archives no record names; the deleted names."""
        wanted = {r.sha256 for r in self.all() if r.sha256}
        gone = []
        archives = self.root / ARCHIVES
        if archives.is_dir():
            for entry in archives.iterdir():
                sha = entry.name.removesuffix(".tar.gz")
                if entry.name.endswith(".tar.gz") and sha not in wanted:
                    with contextlib.suppress(OSError):
                        entry.unlink()
                        gone.append(entry.name)
        return gone

    def new_build_dir(self) -> Path:
        self.prepare()
        return Path(tempfile.mkdtemp(dir=self.scratch, prefix="b-"))

    def uv_cache(self, uid: int) -> Path:
        """uv's cache of the builds that run as *uid* (one each: a cache is written only by
        the user whose builds read it)."""
        return self.scratch / f"uv-cache-{uid}"
