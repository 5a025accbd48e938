"""``kernelfleet spec sync``: copy kernelspecs to every host, at the same path, over SFTP.

What hosts need of kernelfleet travels inside the kernelspec directory (``bin/run.sh`` and the
launcher scripts under ``scripts/``); the host agent itself is sent by the gateway when it
connects. So a sync is: for each host (all at once, one asyncssh connection each), for each
spec whose files differ there,

1. ask the host probe for the manifest (sha256 + mode per file) of the spec directory;
2. build the new directory next to it (``.kf-tmp-<name>-<token>``): files whose checksum and
   mode already match are hard-linked from the current copy (no transfer), the others are
   uploaded with their modes;
3. rename the current copy to ``.kf-backup-<name>-<token>``, rename the new one into place,
   delete the backup. If the second rename fails the backup is renamed back.

Readers see the old spec or the new one, never a mix (between the two renames the spec is
briefly absent: a launch in that instant fails cleanly and can be retried). An unchanged spec
is not touched at all. A host that fails is reported with the reason and a fix; the others
carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import posixpath
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from kernelfleet.specs.hostcheck import probe_source, python_command, run_command, ssh_options
from kernelfleet.specs.manifest import Manifest, local_manifest
from kernelfleet.transport.agent_client import SSHTarget, describe_connect_error

Progress = Callable[[str, str, str], None]


@dataclass(frozen=True)
class LocalSpec:
    """One kernelspec on this machine (the primary), with its manifest."""

    name: str
    path: str
    manifest: Manifest
    sizes: dict[str, int]

    @classmethod
    def read(cls, name: str, path: str) -> LocalSpec:
        manifest = local_manifest(path)
        sizes = {rel: os.path.getsize(os.path.join(path, rel)) for rel in manifest}
        return cls(name, os.path.abspath(path), manifest, sizes)


@dataclass
class SyncResult:
    host: str
    spec: str
    status: str  # "copied", "unchanged" or "failed"
    sent: int = 0
    linked: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    error: str = ""
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "spec": self.spec,
            "status": self.status,
            "sent": self.sent,
            "linked": self.linked,
            "bytes_sent": self.bytes_sent,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "fix": self.fix,
        }


@dataclass
class _Plan:
    spec: LocalSpec
    remote: Manifest | None
    upload: list[str] = field(default_factory=list)
    link: list[str] = field(default_factory=list)

    @property
    def unchanged(self) -> bool:
        return self.remote is not None and _same(self.spec.manifest, self.remote)


def _same(a: Manifest, b: Manifest) -> bool:
    return a.keys() == b.keys() and all(list(a[k]) == list(b[k]) for k in a)


def plan(spec: LocalSpec, remote: Manifest | None) -> _Plan:
    """Which files to upload and which to hard-link from the host's current copy (pure)."""
    out = _Plan(spec, remote)
    for rel, entry in sorted(spec.manifest.items()):
        if remote is not None and list(remote.get(rel) or []) == list(entry):
            out.link.append(rel)
        else:
            out.upload.append(rel)
    return out


async def _remote_manifests(
    conn: asyncssh.SSHClientConnection, target: SSHTarget, paths: Sequence[str]
) -> dict[str, Manifest | None]:
    code = python_command(target.agent_python, probe_source())
    status, out, err = await run_command(conn, code, json.dumps({"spec_dirs": list(paths)}) + "\n")
    if status != 0:
        raise SyncError(
            f"{target.agent_python} does not run on {target.host}: "
            f"{(err or out).strip()[-300:] or f'exit status {status}'}",
            f"install Python 3.9+ on {target.host} or set KF_AGENT_PYTHON",
        )
    answer = json.loads(out.strip().splitlines()[-1])
    manifests = answer.get("manifests") or {}
    return {p: manifests.get(p) for p in paths}


class SyncError(Exception):
    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.message = message
        self.fix = fix


async def _apply(
    sftp: asyncssh.SFTPClient, step: _Plan, host: str, progress: Progress
) -> SyncResult:
    spec = step.spec
    started = time.monotonic()
    result = SyncResult(host, spec.name, "copied")
    parent, base = posixpath.split(spec.path)
    token = secrets.token_hex(4)
    tmp = posixpath.join(parent, f".kf-tmp-{base}-{token}")
    backup = posixpath.join(parent, f".kf-backup-{base}-{token}")
    await sftp.makedirs(parent, exist_ok=True)
    await sftp.mkdir(tmp)
    moved_old = False
    try:
        made: set[str] = set()
        for rel in step.link + step.upload:
            sub = posixpath.dirname(rel)
            if sub and sub not in made:
                await sftp.makedirs(posixpath.join(tmp, sub), exist_ok=True)
                made.add(sub)
        for rel in step.link:
            try:
                await sftp.link(posixpath.join(spec.path, rel), posixpath.join(tmp, rel))
                result.linked += 1
            except (asyncssh.SFTPError, OSError):
                step.upload.append(rel)  # no hard links there: send it instead
        for rel in step.upload:
            local = os.path.join(spec.path, rel)
            remote = posixpath.join(tmp, rel)
            await sftp.put(local, remote, preserve=True)
            mode = int(str(spec.manifest[rel][1]))
            await sftp.chmod(remote, mode)
            result.sent += 1
            result.bytes_sent += spec.sizes.get(rel, 0)
            progress(host, spec.name, f"sent {rel}")
        for sub in sorted(made | {""}):
            await sftp.chmod(posixpath.join(tmp, sub) if sub else tmp, 0o755)
        if step.remote is not None:
            await sftp.rename(spec.path, backup)
            moved_old = True
        try:
            await sftp.rename(tmp, spec.path)
        except BaseException:
            if moved_old:
                await sftp.rename(backup, spec.path)
                moved_old = False
            raise
    except BaseException:
        with contextlib.suppress(Exception):
            await sftp.rmtree(tmp, ignore_errors=True)
        raise
    if moved_old:
        with contextlib.suppress(Exception):
            await sftp.rmtree(backup, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


async def sync_host(
    target: SSHTarget, specs: Sequence[LocalSpec], progress: Progress
) -> list[SyncResult]:
    """Bring every spec of *specs* up to date on one host; never raises for host problems."""
    host = target.host
    try:
        async with asyncio.timeout(target.connect_timeout * 2):
            conn = await asyncssh.connect(host, **ssh_options(target))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        fix = "run 'kernelfleet hosts check --hosts " + host + "' for what to fix"
        reason = describe_connect_error(target, exc)
        return [SyncResult(host, s.name, "failed", error=reason, fix=fix) for s in specs]
    results: list[SyncResult] = []
    try:
        try:
            remote = await _remote_manifests(conn, target, [s.path for s in specs])
        except SyncError as exc:
            return [
                SyncResult(host, s.name, "failed", error=exc.message, fix=exc.fix) for s in specs
            ]
        try:
            sftp = await conn.start_sftp_client()
        except asyncssh.ChannelOpenError as exc:
            reason = f"the SSH server offers no SFTP ({exc.reason})"
            fix = (
                f"enable SFTP in sshd_config on {host}: 'Subsystem sftp internal-sftp' "
                "(or /usr/lib/openssh/sftp-server), then reload sshd"
            )
            return [SyncResult(host, s.name, "failed", error=reason, fix=fix) for s in specs]
        for spec in specs:
            step = plan(spec, remote[spec.path])
            if step.unchanged:
                results.append(SyncResult(host, spec.name, "unchanged", linked=0))
                progress(host, spec.name, "unchanged")
                continue
            try:
                result = await _apply(sftp, step, host, progress)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                text = str(exc) or type(exc).__name__
                results.append(
                    SyncResult(
                        host,
                        spec.name,
                        "failed",
                        error=f"copying to {spec.path} failed: {text}",
                        fix=f"check that the SSH user may write {posixpath.dirname(spec.path)} "
                        f"on {host} (and that its disk is not full), then sync again",
                    )
                )
                progress(host, spec.name, f"failed: {text}")
                continue
            results.append(result)
            progress(host, spec.name, f"done: {result.sent} sent, {result.linked} linked")
        sftp.exit()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        done = {r.spec for r in results}
        text = f"{type(exc).__name__}: {exc}"
        results += [
            SyncResult(host, s.name, "failed", error=text, fix="run the sync again")
            for s in specs
            if s.name not in done
        ]
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await conn.wait_closed()
    return results


async def sync(
    work: dict[str, tuple[SSHTarget, list[LocalSpec]]], progress: Progress
) -> list[SyncResult]:
    """Sync every host of *work* (host → target and its specs) in parallel."""
    per_host = await asyncio.gather(
        *(sync_host(target, specs, progress) for target, specs in work.values())
    )
    return [r for results in per_host for r in results]


def no_progress(host: str, spec: str, text: str) -> None:
    return None
