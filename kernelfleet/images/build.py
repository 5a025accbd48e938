"""Building the images of :mod:`kernelfleet.images.recipes` into a cache, and loading them.

API (the Kubernetes and Docker test fixtures call these)::

    build_image(name: str, cache_dir: Path | None = None, *, rebuild: bool = False,
                log: Callable[[str], None] | None = None) -> BuiltImage
        # BuiltImage(archive: Path, ref: str); name is "python", "r", "busybox" or "gateway"
    image_ref(name: str) -> str                  # the ref build_image would return, no build
    default_cache_dir(environ=os.environ) -> Path   # $KF_IMAGE_CACHE, else DEFAULT_CACHE_DIR
    import_into_containerd(archive: Path, socket: Path, namespace: str = "k8s.io") -> None
    load_into_docker(archive: Path, host: str | None = None) -> None
    extract_rootfs(archive: Path, dest: Path) -> None
    cached_images(cache_dir: Path) -> list[CachedImage]

Every failure the user can fix is an :class:`ImageBuildError`, one line with the cause and the
fix ("mmdebstrap is missing: apt-get install mmdebstrap").

Cache: ``<cache_dir>/<image>-<recipe hash>.oci.tar``. An archive there is complete (written to
a temp name, then renamed) and is reused as it is; a changed recipe has a new hash, hence a new
file. Builds into one cache directory take turns (an ``flock`` on ``.build.lock``), so two
processes asking for one image build it once. The build's output (mmdebstrap's, pip's) is
kept beside the archive as ``<image>-<hash>.oci.log``. The wheels of a recipe's pinned
requirements are downloaded once per requirement set, into ``<cache_dir>/wheels/<key>``
(:func:`kernelfleet.images.recipes.wheels_cache_key`). Debian images need root (``mmdebstrap
--mode=root``) and the Debian mirror, and those with wheels PyPI (from the host, with its pip
settings); busybox needs none of these, only the host's busybox-static.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from kernelfleet import __version__
from kernelfleet.errors import PublicError
from kernelfleet.images import oci, recipes
from kernelfleet.images.recipes import Recipe

DEFAULT_CACHE_DIR = Path("/var/cache/kernelfleet/images")
CACHE_ENV = "KF_IMAGE_CACHE"
Log = Callable[[str], None]
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: A build's temporary directory in the cache (one left by a killed build is removed by the next).
_BUILD_PREFIX = ".build-"
#: gzip level of the layer: 1 writes the python image in 4 s (110 MB), 6 in 12 s (99 MB).
_GZIP_LEVEL = 1
#: Held (flock) while building: one build per cache directory at a time.
_LOCK = ".build.lock"
#: The cache's subdirectory of downloaded wheels, one directory per requirement set.
_WHEELS = "wheels"


class ImageBuildError(PublicError):
    """An image could not be built or loaded; the message names the cause and the fix."""

    reason = "Image Build Failed"


class BuiltImage(NamedTuple):
    """An image archive in the cache and the reference it carries (``ctr`` and ``docker load``
    name the image so): ``archive, ref = build_image("python")``."""

    archive: Path
    ref: str


@dataclass(frozen=True)
class CachedImage:
    """An archive found in the cache; *current* when today's recipe would build it."""

    archive: Path
    ref: str
    recipe: str
    size: int
    current: bool


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$KF_IMAGE_CACHE``, else :data:`DEFAULT_CACHE_DIR`."""
    env = os.environ if environ is None else environ
    return Path(env.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


# --- recipe inputs ----------------------------------------------------------------------------


def _launchers() -> dict[str, bytes]:
    folder = _PACKAGE_DIR / "launchers"
    return {name: (folder / name).read_bytes() for name in recipes.LAUNCHER_FILES}


def is_static_elf(data: bytes) -> bool:
    """Whether *data* is a 64-bit little-endian ELF without an interpreter (``PT_INTERP``)."""
    if len(data) < 64 or not data.startswith(b"\x7fELF\x02\x01"):
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        start = phoff + i * phentsize
        if start + 4 > len(data):
            return False
        (p_type,) = struct.unpack_from("<I", data, start)
        if p_type == 3:  # PT_INTERP: dynamically linked
            return False
    return True


def _busybox() -> tuple[bytes, list[str]]:
    fix = "busybox-static is missing: apt-get install busybox-static"
    path = Path("/bin/busybox")
    if not path.exists():
        found = shutil.which("busybox")
        if found is None:
            raise ImageBuildError(fix)
        path = Path(found)
    data = path.read_bytes()
    if not is_static_elf(data):
        raise ImageBuildError(f"{path} is not statically linked; {fix}")
    listed = subprocess.run(
        [str(path), "--list-full"], capture_output=True, text=True, check=False, timeout=30
    )
    if listed.returncode != 0:
        raise ImageBuildError(f"{path} --list-full failed; {fix}")
    return data, listed.stdout.split()


def _source_root() -> Path:
    root = _PACKAGE_DIR.parent
    if not (root / "pyproject.toml").is_file():
        raise ImageBuildError(
            "the gateway image is built from a source checkout, and kernelfleet is installed "
            f"from a wheel ({_PACKAGE_DIR}): run it from a checkout (pip install -e .)"
        )
    return root


def source_digest(root: Path) -> str:
    """The hash of what kernelfleet's wheel is made of: pyproject.toml, README.md and the
    package's files (bytecode caches left out)."""
    h = hashlib.sha256()
    paths = [root / "pyproject.toml", root / "README.md"]
    paths += sorted(
        p for p in (root / "kernelfleet").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    for path in paths:
        if path.is_file():
            h.update(str(path.relative_to(root)).encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def load_recipe(name: str) -> Recipe:
    """Today's recipe *name*, with its inputs read from this installation and host."""
    if name == "python":
        return recipes.python_recipe(_launchers())
    if name == "r":
        return recipes.r_recipe(_launchers())
    if name == "busybox":
        return recipes.busybox_recipe(*_busybox())
    if name == "gateway":
        return recipes.gateway_recipe(source_digest(_source_root()))
    raise ImageBuildError(
        f"no image named {name!r}: choose among {', '.join(recipes.RECIPE_NAMES)}"
    )


def image_ref(name: str) -> str:
    """The reference :func:`build_image` gives image *name* today, without building it."""
    return recipes.image_ref(load_recipe(name), __version__)


# --- building ---------------------------------------------------------------------------------


def _quiet(_: str) -> None:
    pass


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _prepare_cache(cache_dir: Path) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageBuildError(
            f"cannot create the image cache {cache_dir} ({exc.strerror}): pass --cache-dir "
            f"or set {CACHE_ENV} to a writable directory"
        ) from exc
    if not os.access(cache_dir, os.W_OK):
        raise ImageBuildError(
            f"the image cache {cache_dir} is not writable: pass --cache-dir or set {CACHE_ENV}"
        )


def build_image(
    name: str, cache_dir: Path | None = None, *, rebuild: bool = False, log: Log | None = None
) -> BuiltImage:
    """The archive of image *name* in *cache_dir* (default :func:`default_cache_dir`), built
    unless it is there already (or *rebuild*). *log* gets one line per step."""
    say = log or _quiet
    recipe = load_recipe(name)
    cache = default_cache_dir() if cache_dir is None else cache_dir
    ref = recipes.image_ref(recipe, __version__)
    archive = cache / recipes.archive_name(recipe, __version__)
    if archive.is_file() and not rebuild:
        return BuiltImage(archive, ref)
    _prepare_cache(cache)
    with _locked(cache / _LOCK):
        if archive.is_file() and not rebuild:  # built by whoever held the lock
            return BuiltImage(archive, ref)
        for stale in cache.glob(f"{_BUILD_PREFIX}*"):  # of a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        log_path = archive.with_suffix(".log")
        log_path.unlink(missing_ok=True)  # the previous attempt's
        say(f"building {ref} ({recipe.base})")
        with tempfile.TemporaryDirectory(prefix=_BUILD_PREFIX, dir=cache) as tmp:
            rootfs = Path(tmp) / "rootfs.tar"
            if recipe.base == "static":
                oci.write_rootfs_tar(rootfs, recipes.static_entries(recipe))
            else:
                _debian_rootfs(recipe, Path(tmp), rootfs, log_path, say, cache=cache)
            say(f"writing {archive.name} ({rootfs.stat().st_size / 1e6:.0f} MB rootfs)")
            config = recipes.image_config(recipe, __version__)
            oci.write_oci_archive(rootfs, archive, ref, config, compresslevel=_GZIP_LEVEL)
        say(
            f"built {ref} in {time.monotonic() - started:.0f} s "
            f"({archive.stat().st_size / 1e6:.0f} MB)"
        )
    return BuiltImage(archive, ref)


def _debian_rootfs(
    recipe: Recipe, tmp: Path, rootfs: Path, log_path: Path, say: Log, *, cache: Path
) -> None:
    if shutil.which("mmdebstrap") is None:
        raise ImageBuildError("mmdebstrap is missing: apt-get install mmdebstrap")
    if os.geteuid() != 0:
        raise ImageBuildError(
            f"building the {recipe.name} image needs root (mmdebstrap --mode=root): run as root"
        )
    staged: dict[str, str] = {}
    for i, f in enumerate(recipe.files):
        path = tmp / f"file{i}"
        path.write_bytes(f.content)
        staged[f.dest] = str(path)
    for input_name, _ in recipe.staged_dirs:
        if input_name == "requirements":
            wheels = requirement_wheels(recipe.requirements, cache / _WHEELS, log_path, say)
        else:
            wheels = _stage_dir(input_name, tmp / input_name, log_path, say)
        staged[input_name] = str(wheels)
    argv = recipes.mmdebstrap_argv(recipe, staged, str(rootfs))
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(recipes.SOURCE_DATE_EPOCH)}
    say(f"mmdebstrap {recipe.suite} + {', '.join(recipe.packages)} (log: {log_path})")
    with open(log_path, "ab") as log_file:
        log_file.write(f"$ {' '.join(argv)}\n".encode())
        log_file.flush()
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env, check=False
        )
    if done.returncode != 0:
        cause = _first_error(log_path)
        network = ("Failed to fetch", "resolv", "Could not connect", "Unable to connect")
        hint = (
            ". Check that the Debian mirror (deb.debian.org) is reachable"
            if any(word in cause for word in network)
            else ""
        )
        raise ImageBuildError(
            f"mmdebstrap failed for the {recipe.name} image (exit {done.returncode}): "
            f"{cause}; the whole log is {log_path}{hint}"
        )


def _first_error(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines()
    marks = ("E:", "W:", "mmdebstrap:", "ERROR:")
    errors = [line.strip() for line in lines if line.startswith(marks)]
    # The first error is the cause; mmdebstrap's later ones only say that it gave up.
    picked = [line for line in errors if line.startswith(("E:", "ERROR:"))] or errors
    picked = picked or lines[-1:]
    return picked[0][:300] if picked else "no output"


def _stage_dir(input_name: str, dest: Path, log_path: Path, say: Log) -> Path:
    """Produce the staged directory *input_name*: ``wheels`` is kernelfleet's wheel of this
    checkout and its dependencies' wheels for Debian's Python (downloaded by the pip of this
    interpreter, with this host's pip settings: index, proxy, certificates)."""
    if input_name != "wheels":
        raise ImageBuildError(f"unknown build input {input_name!r}: a recipe bug")
    root = _source_root()
    dest.mkdir()
    pip = [sys.executable, "-m", "pip"]
    say(f"pip wheel {root}; pip download its dependencies for Python {recipes.DEBIAN_PYTHON}")
    _run_logged([*pip, "wheel", "-q", "--no-deps", "--wheel-dir", str(dest), str(root)], log_path)
    wheels = sorted(dest.glob("kernelfleet-*.whl"))
    if len(wheels) != 1:
        raise ImageBuildError(f"pip wheel made {len(wheels)} kernelfleet wheels; see {log_path}")
    _run_logged([*_pip_download(dest), str(wheels[0])], log_path)
    return dest


def _pip_download(dest: Path) -> list[str]:
    """``pip download`` of wheels for Debian's Python into *dest*, without the requirements."""
    argv = [sys.executable, "-m", "pip", "download", "-q", "--dest", str(dest)]
    argv += ["--only-binary=:all:", "--python-version", recipes.DEBIAN_PYTHON]
    argv += ["--implementation", "cp"]
    for platform in recipes.wheel_platforms():
        argv += ["--platform", platform]
    return argv


def requirement_wheels(
    requirements: Sequence[str], wheels_dir: Path, log_path: Path, say: Log = _quiet
) -> Path:
    """The directory of the wheels of *requirements* (pinned, the whole dependency closure) for
    Debian's Python: ``<wheels_dir>/<key>``, downloaded by this interpreter's pip (the host's
    index, proxy and certificates) unless it is there already. A download that brings a wheel
    of an unpinned package, or misses a pinned one, is refused: the pins must be the closure.
    Callers hold the cache's build lock."""
    platforms = recipes.wheel_platforms()
    key = recipes.wheels_cache_key(requirements, recipes.DEBIAN_PYTHON, platforms)
    dest = wheels_dir / key[:16]
    if dest.is_dir():
        say(f"wheels of {len(requirements)} pinned requirements: cached in {dest}")
        return dest
    wheels_dir.mkdir(parents=True, exist_ok=True)
    for stale in wheels_dir.glob(f"{_BUILD_PREFIX}*"):  # of a download that was killed
        shutil.rmtree(stale, ignore_errors=True)
    say(f"pip download {len(requirements)} pinned requirements for Python {recipes.DEBIAN_PYTHON}")
    tmp = Path(tempfile.mkdtemp(prefix=_BUILD_PREFIX, dir=wheels_dir))
    try:
        _run_logged([*_pip_download(tmp), *requirements], log_path)
        pinned = {recipes.requirement_key(r) for r in requirements}
        got = {recipes.wheel_key(p.name) for p in tmp.glob("*.whl")}
        if got != pinned:
            unpinned = ", ".join(sorted(got - pinned)) or "none"
            missing = ", ".join(sorted(pinned - got)) or "none"
            raise ImageBuildError(
                f"the pinned requirements are not a dependency closure (unpinned: {unpinned}; "
                f"not downloaded: {missing}): pin every package they need in the recipe "
                "(kernelfleet.images.recipes)"
            )
        tmp.chmod(0o755)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _run_logged(argv: list[str], log_path: Path) -> None:
    with open(log_path, "ab") as log_file:
        log_file.write(f"$ {' '.join(argv)}\n".encode())
        log_file.flush()
        done = subprocess.run(argv, stdout=log_file, stderr=log_file, check=False)
    if done.returncode != 0:
        raise ImageBuildError(
            f"{' '.join(argv[2:4])} failed (exit {done.returncode}): {_first_error(log_path)}; "
            f"the log is {log_path}. Check that PyPI is reachable"
        )


# --- the cache --------------------------------------------------------------------------------


def cached_images(cache_dir: Path) -> list[CachedImage]:
    """The archives in *cache_dir*, sorted by name; unreadable files are skipped."""
    if not cache_dir.is_dir():
        return []
    current: set[str] = set()
    for name in recipes.RECIPE_NAMES:
        with contextlib.suppress(ImageBuildError):
            current.add(recipes.archive_name(load_recipe(name), __version__))
    found = []
    for path in sorted(cache_dir.glob("*.oci.tar")):
        try:
            info = oci.read_oci_archive(path, verify=False)
        except (oci.ArchiveError, ValueError, KeyError, TypeError, AttributeError):  # not ours
            continue
        found.append(
            CachedImage(
                archive=path,
                ref=info.ref,
                recipe=str(
                    info.config.get("config", {}).get("Labels", {}).get("io.kernelfleet.recipe", "")
                ),
                size=path.stat().st_size,
                current=path.name in current,
            )
        )
    return found


# --- loading into runtimes --------------------------------------------------------------------


def _run_tool(argv: list[str], what: str, fix: str, timeout: float = 600) -> None:
    if shutil.which(argv[0]) is None:
        raise ImageBuildError(f"{argv[0]} is missing: {fix}")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(f"{what} did not finish in {timeout:.0f} s") from exc
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise ImageBuildError(
            f"{what} failed (exit {done.returncode}): {detail[-1][:300] if detail else ''}"
        )


def _check_archive(archive: Path) -> None:
    if not archive.is_file():
        raise ImageBuildError(
            f"no image archive at {archive}: build it with 'kernelfleet image build'"
        )


def check_containerd_socket(socket: Path) -> None:
    if not socket.is_socket():
        raise ImageBuildError(
            f"no containerd socket at {socket}: start containerd or pass --containerd-socket"
        )


def import_into_containerd(archive: Path, socket: Path, namespace: str = "k8s.io") -> None:
    """``ctr -a SOCKET -n NAMESPACE images import --all-platforms ARCHIVE``: the image under
    the archive's reference, where the kubelet's CRI (namespace ``k8s.io``) finds it."""
    _check_archive(archive)
    check_containerd_socket(socket)
    argv = ["ctr", "-a", str(socket), "-n", namespace, "images", "import", "--all-platforms"]
    _run_tool(
        [*argv, str(archive)], f"ctr images import {archive.name}", "apt-get install containerd"
    )


def load_into_docker(archive: Path, host: str | None = None) -> None:
    """``docker [-H HOST] load -i ARCHIVE`` (Docker reads the archive's ``manifest.json``)."""
    _check_archive(archive)
    argv = ["docker", *(["-H", host] if host else []), "load", "-i", str(archive)]
    _run_tool(argv, f"docker load {archive.name}", "apt-get install docker.io")


def extract_rootfs(archive: Path, dest: Path) -> None:
    """Unpack the image's root filesystem into *dest* with ``tar`` (owners, modes and device
    nodes kept: run as root)."""
    dest.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryFile() as err,
        subprocess.Popen(
            ["tar", "-x", "-p", "--numeric-owner", "-C", str(dest), "-f", "-"],
            stdin=subprocess.PIPE,
            stderr=err,
        ) as proc,
    ):
        assert proc.stdin is not None
        try:
            oci.extract_layer(archive, proc.stdin)
        except BrokenPipeError:
            pass  # tar stopped early: its message follows
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        proc.wait()
        err.seek(0)
        message = err.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        raise ImageBuildError(f"tar could not unpack {archive.name} into {dest}: {message}")
