"""Building one environment: resolve, install, freeze, archive — in a scratch directory that
is deleted whatever happens, so a failed build leaves nothing.

**Why uv and not pip**: a new environment of ipykernel + pandas + scikit-learn, bytecode
compiled, took uv 9-10 s with a cold cache and pip 25-31 s (``python -m venv`` + ``pip
install --no-cache-dir``) on our 2-core machine, same index, wheels only (the ``env_ship``
benchmark measures both in each run; without bytecode, uv takes 1.7 s cold and 0.5 s warm).
uv also writes a lock with hashes (``uv pip compile --generate-hashes``) that ``uv pip sync``
installs exactly (``--require-hashes``), which is what a rebuild needs, and makes relocatable
environments (``uv venv --relocatable``), which is what shipping needs. It is one static
executable from PyPI (the ``uv`` package).

The steps, each a ``uv`` process (:mod:`kernelfleet.envs.model` builds the command lines):

1. ``uv venv --relocatable`` on the chosen installed interpreter;
2. ``uv pip install`` the requirements: resolving and downloading overlap (a separate
   ``compile`` first cost a cold build ~9 s more); a rebuild instead ``uv pip sync``-s its
   lock, hashes checked; files are copied, never linked to the cache, and bytecode compiled
   (the environment is read-only to kernels, which could not write ``.pyc`` files);
3. ``uv pip freeze`` (what a user sees, and what a rebuild is compared with); for a new
   environment, ``uv pip compile --generate-hashes`` with the freeze as constraints then
   records the lock of exactly what was installed;
5. the tree is given to the gateway's user (when the build ran as the build user) and made
   read-only for others, then archived (``tar.gz``, members relative to the environment)
   while hashing: the sha256 names the archive and the build.

Builds run in the sandbox (:mod:`kernelfleet.envs.sandbox`) with an environment made from
nothing: no variable of the gateway's (its token, its store key's path) reaches them. The uv
cache is shared by wheels-only builds (installing a wheel runs no package code, so nothing a
build runs can write to it but uv); a build that may compile sources gets a cache of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import logging
import os
import pwd
import shutil
import tarfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kernelfleet.envs import model, sandbox
from kernelfleet.envs.interpreters import Interpreter
from kernelfleet.envs.settings import EnvSettings
from kernelfleet.envs.store import EnvStore
from kernelfleet.errors import PublicError

log = logging.getLogger("kernelfleet.envs")
Say = Callable[[str], None]
#: gzip level of archives: level 1 is ~3x faster than 6 and ~10% larger on environments.
ARCHIVE_LEVEL = 1


@dataclass
class Built:
    venv: Path
    archive: Path
    sha256: str
    lock: str
    freeze: str
    size_bytes: int
    files: int
    seconds: float


class BuildRunner:
    """Runs a build's processes: in the sandbox when the settings and the machine allow."""

    def __init__(self, settings: EnvSettings, store: EnvStore):
        self.settings = settings
        self.store = store
        self.mode = settings.sandbox.strip().lower()
        if self.mode not in ("required", "auto", "off"):
            raise PublicError(
                f"KF_ENV_SANDBOX={settings.sandbox!r} is not one of required, auto, off.",
                status=500,
            )
        self.policy = sandbox.SandboxPolicy(
            user=settings.build_user if os.geteuid() == 0 else None,
            allowed_hosts=settings.index_hosts(),
            isolate_network=True,
        )

    def problem(self) -> str | None:
        if self.mode == "off":
            return None
        return sandbox.sandbox_problem(self.policy)

    @property
    def sandboxed(self) -> bool:
        return self.mode != "off" and self.problem() is None

    def check(self) -> None:
        problem = self.problem()
        if problem and self.mode == "required":
            raise PublicError(f"Builds must run in a sandbox and cannot: {problem}", status=503)

    def owner_ids(self) -> tuple[int, int] | None:
        """uid/gid a build's files must belong to, when it runs as another user."""
        if not self.sandboxed or self.policy.user is None:
            return None
        pw = pwd.getpwnam(self.policy.user)
        return pw.pw_uid, pw.pw_gid

    async def run(self, argv: Sequence[str], cwd: Path, env: dict[str, str], on_line: Say) -> int:
        timeout = self.settings.build_timeout
        if self.sandboxed:
            return await sandbox.run_sandboxed(
                argv, cwd=cwd, env=env, policy=self.policy, on_line=on_line, timeout=timeout
            )
        return await run_plain(argv, cwd, env, on_line, timeout)


async def run_plain(
    argv: Sequence[str], cwd: Path, env: dict[str, str], on_line: Say, seconds: float
) -> int:
    """A build step without the sandbox (``KF_ENV_SANDBOX=off``, or ``auto`` where it cannot
    run): still with the scrubbed environment, in its own process group."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None

    async def pump() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            on_line(sandbox.clean_line(raw.decode("utf-8", "replace")))

    try:
        await asyncio.wait_for(asyncio.gather(pump(), proc.wait()), seconds)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        raise PublicError(
            f"The build took longer than {seconds:g} s and was stopped. An admin can raise "
            "KF_ENV_BUILD_TIMEOUT.",
            status=504,
        ) from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
    return proc.returncode or 0


#: Variables a build inherits: where the machine's CA certificates are (a TLS-inspecting
#: proxy's CA, say). Public paths, never secrets.
INHERITED = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def build_env(work: Path, cache: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a build's processes: nothing inherited from the gateway but
    :data:`INHERITED`."""
    source = os.environ if environ is None else environ
    return {
        **{k: source[k] for k in INHERITED if source.get(k)},
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work / "home"),
        "TMPDIR": str(work / "tmp"),
        "LANG": "C.UTF-8",
        "UV_CACHE_DIR": cache,
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
        "UV_HTTP_RETRIES": "1",  # a host the sandbox refuses fails at once, not after 8 s
        "NO_COLOR": "1",
    }


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.lchown(top, uid, gid)
    for base, dirs, files in os.walk(top):
        for name in dirs + files:
            os.lchown(os.path.join(base, name), uid, gid)


def seal(top: Path) -> tuple[int, int]:
    """Give *top* to this process's user, drop write access for others; (bytes, files)."""
    uid, gid = os.geteuid(), os.getegid()
    size = files = 0
    for base, dirs, names in os.walk(top):
        for name in dirs + names:
            path = os.path.join(base, name)
            st = os.lstat(path)
            if st.st_uid != uid or st.st_gid != gid:
                os.lchown(path, uid, gid)
            if not os.path.islink(path):
                os.chmod(path, (st.st_mode & 0o7755) & ~0o6000)
                if not os.path.isdir(path):
                    size += st.st_size
                    files += 1
    os.chmod(top, 0o755)  # noqa: S103 - kernels of every user run it
    return size, files


class _Hashing:
    def __init__(self, fh: IO[bytes]):
        self.fh = fh
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.mtime = int(info.mtime)  # a float mtime costs a PAX header per member
    info.uname = info.gname = "root"
    return info


def make_archive(venv: Path, dest: Path) -> str:
    """``tar.gz`` of *venv* (members relative to it, symlinks kept) at *dest*; its sha256."""
    with open(dest, "wb") as raw:
        hashing = _Hashing(raw)
        with (
            gzip.GzipFile(
                fileobj=hashing,  # type: ignore[arg-type]
                mode="wb",
                compresslevel=ARCHIVE_LEVEL,
                mtime=0,
            ) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for entry in sorted(os.listdir(venv)):
                tar.add(venv / entry, arcname=entry, filter=_reset)
    return hashing.sha.hexdigest()


async def build(
    runner: BuildRunner,
    interpreter: Interpreter,
    requirements: Sequence[str],
    *,
    lock: str = "",
    source_builds: bool = False,
    say: Say,
) -> tuple[Path, Built]:
    """Build in a new scratch directory; ``(work, built)``. The caller moves what it keeps
    out of *work* and deletes it (:func:`discard`) — also when this raises."""
    started = time.monotonic()
    work = await asyncio.to_thread(runner.store.new_build_dir)
    try:
        plan = _Plan(interpreter, tuple(requirements), lock, source_builds, started)
        return work, await _build(runner, work, plan, say)
    except BaseException:
        await discard(work)
        raise


@dataclass(frozen=True)
class _Plan:
    interp: Interpreter
    requirements: tuple[str, ...]
    lock: str
    source_builds: bool
    started: float


async def _build(runner: BuildRunner, work: Path, plan: _Plan, say: Say) -> Built:
    settings = runner.settings
    interp, requirements, lock = plan.interp, plan.requirements, plan.lock
    source_builds, started = plan.source_builds, plan.started
    owner = runner.owner_ids()
    shared_cache = runner.store.uv_cache(owner[0] if owner else os.geteuid())
    cache = work / "cache" if source_builds else shared_cache
    for sub in ("home", "tmp", "cache"):
        (work / sub).mkdir(exist_ok=True)
    if not shared_cache.exists():
        shared_cache.mkdir(mode=0o700)
        if owner is not None:
            os.chown(shared_cache, *owner)
    (work / "requirements.in").write_text("\n".join(requirements) + "\n")
    if lock:
        (work / "lock.txt").write_text(lock)
    if owner is not None:
        await asyncio.to_thread(_chown_tree, work, *owner)
    problem = runner.problem()
    if problem:
        say(f"building without the sandbox (KF_ENV_SANDBOX={runner.mode}): {problem}")
        log.warning("environment build without the sandbox: %s", problem)
    env = build_env(work, str(cache))
    uv = model.UvArgs(
        settings.uv_path(),
        settings.index_url,
        str(cache),
        source_builds,
        compile_bytecode=settings.compile_bytecode,
    )
    tail: deque[str] = deque(maxlen=40)

    def line(text: str) -> None:
        if text.strip():
            tail.append(text)
            say(text)

    async def step(what: str, argv: list[str]) -> None:
        tail.clear()
        status = await runner.run(argv, work, env, line)
        if status != 0:
            log.info("environment build failed at %s (exit %s): %s", what, status, list(tail))
            raise model.BuildFailed(model.resolver_error(list(tail), settings.index_url))

    venv_python = str(work / "venv" / "bin" / "python")
    await step("venv", model.venv_argv(uv, interp.path, str(work / "venv")))
    if lock:
        say(f"installing {len(model.parse_lock(lock))} packages from the lock")
        await step("install", model.sync_argv(uv, venv_python, "lock.txt"))
    else:
        say(
            f"resolving {len(requirements)} packages and installing them for Python "
            f"{interp.version}"
        )
        await step("install", model.install_argv(uv, venv_python, "requirements.in"))
    freeze_lines: list[str] = []
    status = await runner.run(model.freeze_argv(uv, venv_python), work, env, freeze_lines.append)
    if status != 0:
        raise model.BuildFailed(f"uv pip freeze failed: {' '.join(freeze_lines[-3:])[:300]}")
    freeze = "\n".join(x for x in freeze_lines if "==" in x) + "\n"
    if not lock:
        # the lock of exactly what was installed (the freeze as constraints), with hashes
        (work / "installed.txt").write_text(freeze)
        say("recording the lock (versions and hashes)")
        await step(
            "lock",
            model.compile_argv(uv, interp.path, "requirements.in", "lock.txt", "installed.txt"),
        )
        lock = (work / "lock.txt").read_text()
        if model.parse_lock(lock) != model.parse_lock(freeze):
            raise model.BuildFailed(
                "The index changed while the environment was built (the lock does not match "
                "what was installed). Create it again."
            )
    size, files = await asyncio.to_thread(seal, work / "venv")
    say(f"archiving {size / 1e6:.0f} MB in {files} files")
    sha = await asyncio.to_thread(make_archive, work / "venv", work / "env.tar.gz")
    return Built(
        venv=work / "venv",
        archive=work / "env.tar.gz",
        sha256=sha,
        lock=lock,
        freeze=freeze,
        size_bytes=size,
        files=files,
        seconds=time.monotonic() - started,
    )


async def discard(path: Path) -> None:
    await asyncio.to_thread(shutil.rmtree, path, True)
