"""The images we build, as data: what goes in, how it runs, and the hash that keys the cache.

Pure: the inputs that live in files (our launcher scripts, the busybox binary and its applet
list, the digest of the source tree a gateway wheel is built from) are read by
:mod:`kernelfleet.images.build` and passed in. The recipe hash covers every input that
changes the image — suite, variant, packages, dpkg filters, hooks, added files' contents, the
runtime config, the kernelfleet version and :data:`BUILDER_VERSION` — so a changed recipe is a
new cache entry and a new tag (``<kernelfleet version>-<hash[:8]>``), never a stale image under
an old name. Debian package *versions* are not in it: a cached image keeps the Debian packages
of the day it was built (delete the cache to refresh them). PyPI requirements are pinned
(``name==version``) and are in it.

Images (``RECIPE_NAMES``):

``python``  ``kernelfleet.test/kernel-python``: Debian's python3 with a venv at ``/opt/kernel``
            (first on PATH) of the pinned ipykernel (:data:`PYTHON_KERNEL_REQUIREMENTS`), and
            our launchers in ``/opt/kernelfleet/launchers``.
``r``       ``kernelfleet.test/kernel-r``: R with IRkernel, plus python3 for the launcher.
``busybox`` ``kernelfleet.test/busybox``: a static busybox and its applet links (no Debian).
``gateway`` ``kernelfleet.test/gateway``: kernelfleet itself in ``/opt/kernelfleet`` (a venv).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from kernelfleet.images.oci import ImageConfig, TarEntry, canonical_json, parse_ref

#: Bump when the way a recipe becomes an image changes (hooks, tar post-processing), so that
#: every cached image is rebuilt.
BUILDER_VERSION = 1
REGISTRY = "kernelfleet.test"
SUITE = "bookworm"
RECIPE_NAMES = ("python", "r", "busybox", "gateway")
LAUNCHER_DIR = "/opt/kernelfleet/launchers"
LAUNCHER_FILES = ("kernel_launcher.py", "respond.py")
#: Fixed file times in the rootfs (mmdebstrap clamps to it): the same packages give the same tar.
SOURCE_DATE_EPOCH = 1_700_000_000
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KERNEL_UID = 1000
KERNEL_USER = "kernel"
#: The kernel user's home and working directory: the one directory every runtime makes writable.
KERNEL_HOME = "/tmp"  # noqa: S108 - a path inside the image
WHEELS_DIR = "/opt/kernelfleet-wheels"
#: The python image's kernel venv; its ``bin`` comes first on the image's PATH, so ``python3``
#: (the kernelspec's and the launcher's) is the venv's.
KERNEL_VENV = "/opt/kernel"
#: The python image's kernel: ipykernel and its whole dependency closure for Python 3.11 on
#: Linux, pinned (the versions of our development venv), installed from PyPI wheels. Debian's
#: python3-ipykernel (6.17) lacks what the conformance suite checks: the debugger in
#: ``supported_features``, comms opened by the kernel, ``interrupt_request`` on control.
PYTHON_KERNEL_REQUIREMENTS = (
    "ipykernel==7.4.0",
    "jupyter_client==8.10.0",
    "jupyter_core==5.9.1",
    "pyzmq==27.3.0",
    "debugpy==1.8.22",
    "comm==0.2.3",
    "ipython==9.18.1",
    "ipython_pygments_lexers==1.1.1",
    "traitlets==5.16.1",
    "tornado==6.6.1",
    "psutil==7.2.2",
    "packaging==26.4",
    "platformdirs==4.14.9",
    "python_dateutil==4.0.0",
    "tzdata==2026.6",
    "matplotlib_inline==0.2.2",
    "nest_asyncio2==1.7.4",
    "jedi==0.20.1",
    "parso==0.8.7",
    "pexpect==4.9.0",
    "ptyprocess==0.7.0",
    "prompt_toolkit==3.0.53",
    "wcwidth==0.9.4",
    "pygments==2.21.0",
    "stack_data==0.6.3",
    "asttokens==3.0.2",
    "executing==2.3.0",
    "pure_eval==0.2.4",
    "typing_extensions==4.16.0",
)
#: Python and glibc of the suite's python3 and libc6: the dependency wheels must suit them
#: (bookworm's stay 3.11.2 and 2.36 through point releases).
DEBIAN_PYTHON = "3.11.2"
DEBIAN_GLIBC = "2.36"
LAUNCHER_ENTRYPOINT = ("python3", f"{LAUNCHER_DIR}/kernel_launcher.py")
#: The kernels' argv as their kernelspecs write it (``python3``: the python image's venv's).
PYTHON_KERNEL_ARGV = ("python3", "-m", "ipykernel_launcher", "-f", "{connection_file}")
R_KERNEL_ARGV = ("R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}")
#: Kept small: documentation, manuals and translations are never installed (licences are).
DPKG_FILTERS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
)
#: Run last, outside the chroot, with the chroot's path as $1.
CLEANUP_HOOKS = (
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old',
    'rm -rf "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log',
    # mmdebstrap copies the host's: a runtime mounts its own over these (they must exist).
    ': > "$1/etc/resolv.conf" && chmod 0644 "$1/etc/resolv.conf"',
    ': > "$1/etc/hostname" && chmod 0644 "$1/etc/hostname"',
)


class RecipeError(ValueError):
    """A recipe name or input that cannot make an image (the message says what to use)."""


@dataclass(frozen=True)
class AddFile:
    """A file our build adds to the image at *dest* (absolute), owner root."""

    dest: str
    content: bytes
    mode: int = 0o644

    def fingerprint(self) -> list[Any]:
        return [self.dest, oct(self.mode), hashlib.sha256(self.content).hexdigest()]


@dataclass(frozen=True)
class UserEntry:
    """A ``/etc/passwd`` and ``/etc/group`` line (group named like the user, gid = uid)."""

    name: str
    uid: int
    home: str = KERNEL_HOME
    shell: str = "/usr/sbin/nologin"

    def passwd_line(self) -> str:
        return f"{self.name}:x:{self.uid}:{self.uid}:{self.name}:{self.home}:{self.shell}"

    def group_line(self) -> str:
        return f"{self.name}:x:{self.uid}:"


@dataclass(frozen=True)
class Recipe:
    """One image. ``base="debian"`` is a ``mmdebstrap`` rootfs of *suite* with *packages*;
    ``base="static"`` is only *files* and *links* (no package manager at all)."""

    name: str
    image: str
    base: Literal["debian", "static"]
    packages: tuple[str, ...] = ()
    files: tuple[AddFile, ...] = ()
    #: (link path, target) symlinks, for the static base.
    links: tuple[tuple[str, str], ...] = ()
    #: (input name, absolute dir): a directory the build produces, copied in before *commands*
    #: run: ``wheels`` (kernelfleet's wheel and its dependencies') or ``requirements`` (the
    #: wheels of *requirements*). Its contents are not hashed: name what they derive from in
    #: *inputs* or *requirements*.
    staged_dirs: tuple[tuple[str, str], ...] = ()
    #: Pinned PyPI requirements (``name==version``, the whole dependency closure) whose wheels
    #: for Debian's Python the build downloads on the host into the ``requirements`` dir.
    requirements: tuple[str, ...] = ()
    #: Digests of inputs that are not files of the recipe (the source tree of a wheel).
    inputs: Mapping[str, str] = field(default_factory=dict)
    users: tuple[UserEntry, ...] = ()
    #: Shell commands run in the chroot (as ``chroot "$1" sh -c CMD``) after files are added.
    commands: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    user: str = ""
    working_dir: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    suite: str = SUITE
    variant: str = "apt"

    def fingerprint(self, kernelfleet_version: str) -> dict[str, Any]:
        """Everything the hash covers, as JSON-able data."""
        extra: dict[str, Any] = {}
        if self.requirements:  # absent when empty: the other recipes keep their hashes
            extra["requirements"] = sorted(requirement_key(r) for r in self.requirements)
        return {
            "builder": BUILDER_VERSION,
            "kernelfleet": kernelfleet_version,
            "name": self.name,
            "image": self.image,
            "base": self.base,
            "suite": self.suite if self.base == "debian" else "",
            "variant": self.variant if self.base == "debian" else "",
            "packages": sorted(self.packages),
            "dpkg": list(DPKG_FILTERS) if self.base == "debian" else [],
            "cleanup": list(CLEANUP_HOOKS) if self.base == "debian" else [],
            "epoch": SOURCE_DATE_EPOCH,
            "files": sorted(f.fingerprint() for f in self.files),
            "links": sorted(list(link) for link in self.links),
            "staged_dirs": [list(d) for d in self.staged_dirs],
            "inputs": dict(self.inputs),
            "users": [[u.passwd_line(), u.group_line()] for u in self.users],
            "commands": list(self.commands),
            "env": dict(self.env),
            "entrypoint": list(self.entrypoint),
            "cmd": list(self.cmd),
            "user": self.user,
            "working_dir": self.working_dir,
            "labels": dict(self.labels),
            **extra,
        }


def recipe_hash(recipe: Recipe, kernelfleet_version: str) -> str:
    """The hex sha256 of *recipe*'s fingerprint: equal recipes, equal hashes."""
    return hashlib.sha256(canonical_json(recipe.fingerprint(kernelfleet_version))).hexdigest()


def image_tag(recipe_digest: str, kernelfleet_version: str) -> str:
    """``0.1.0-1a2b3c4d``: a valid tag (``+`` of a local version becomes ``.``)."""
    return f"{kernelfleet_version.replace('+', '.')}-{recipe_digest[:8]}"


def image_ref(recipe: Recipe, kernelfleet_version: str) -> str:
    ref = (
        f"{recipe.image}:{image_tag(recipe_hash(recipe, kernelfleet_version), kernelfleet_version)}"
    )
    parse_ref(ref)  # a recipe with a bad image name fails here, not in the runtime
    return ref


def image_config(recipe: Recipe, kernelfleet_version: str) -> ImageConfig:
    digest = recipe_hash(recipe, kernelfleet_version)
    labels = {
        "org.opencontainers.image.title": recipe.image,
        "org.opencontainers.image.version": image_tag(digest, kernelfleet_version),
        "io.kernelfleet.recipe": recipe.name,
        "io.kernelfleet.recipe-hash": digest,
        **recipe.labels,
    }
    return ImageConfig(
        entrypoint=recipe.entrypoint,
        cmd=recipe.cmd,
        env=dict(recipe.env),
        user=recipe.user,
        working_dir=recipe.working_dir,
        labels=labels,
    )


def archive_name(recipe: Recipe, kernelfleet_version: str) -> str:
    """The cache file's name: ``<image>-<recipe hash>.oci.tar``."""
    short = recipe.image.rsplit("/", 1)[-1]
    return f"{short}-{recipe_hash(recipe, kernelfleet_version)}.oci.tar"


# --- the recipes ------------------------------------------------------------------------------


def _kernel_user() -> UserEntry:
    return UserEntry(KERNEL_USER, KERNEL_UID)


def _launcher_files(launchers: Mapping[str, bytes]) -> tuple[AddFile, ...]:
    missing = [name for name in LAUNCHER_FILES if name not in launchers]
    if missing:
        raise RecipeError(f"launcher files missing: {', '.join(missing)}")
    return tuple(
        AddFile(f"{LAUNCHER_DIR}/{name}", launchers[name], 0o755 if name.endswith(".py") else 0o644)
        for name in LAUNCHER_FILES
    )


def _kernel_runtime(path: str = PATH) -> dict[str, Any]:
    return {
        "env": {
            "PATH": path,
            "HOME": KERNEL_HOME,
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
        },
        "user": f"{KERNEL_UID}:{KERNEL_UID}",
        "working_dir": KERNEL_HOME,
        "users": (_kernel_user(),),
    }


def python_recipe(launchers: Mapping[str, bytes]) -> Recipe:
    """The pinned ipykernel (:data:`PYTHON_KERNEL_REQUIREMENTS`) in a venv of Debian's python3
    at :data:`KERNEL_VENV`, installed offline from the wheels the build downloads on the host
    (see :func:`gateway_recipe`); pip and setuptools are removed from it afterwards. The venv
    comes first on PATH, so ``python3`` runs both our launcher and the kernel. The entrypoint is
    the launcher and the default command the kernel's argv, so a container given the
    ``KF_RESPONSE_*`` variables starts a kernel and reports it; a pod may replace the argv (its
    ``args``) or the whole command."""
    pip = f"{KERNEL_VENV}/bin/pip"
    pins = " ".join(shlex.quote(r) for r in PYTHON_KERNEL_REQUIREMENTS)
    # Unchecked-hash .pyc files: an import reads the .pyc alone, not the source too (half the
    # reads of a first import, which a pod on a slow disk with a cold page cache pays); the
    # launcher's module too (a kernel user cannot write __pycache__: it was compiled anew at
    # every start).
    # Completion without jedi: IPython's own completer answers at once, where jedi's first
    # completion reads hundreds of stub files (seconds to minutes on a cold, slow disk); a
    # kernelspec re-enables it with IPYTHON config or `%config Completer.use_jedi = True`.
    ipython_config = f"{KERNEL_VENV}/etc/ipython/ipython_config.py"
    install = (
        f"python3 -m venv {KERNEL_VENV} && {pip} install -q --no-index --find-links "
        f"{WHEELS_DIR} {pins} && {pip} uninstall -q -y pip setuptools "
        f"&& rm -rf {WHEELS_DIR} /root/.cache "
        f"&& {KERNEL_VENV}/bin/python3 -m compileall -q -f --invalidation-mode unchecked-hash "
        f"{KERNEL_VENV}/lib {LAUNCHER_DIR} "
        f"&& mkdir -p {KERNEL_VENV}/etc/ipython "
        f"&& echo 'c.Completer.use_jedi = False' > {ipython_config}"
    )
    return Recipe(
        name="python",
        image=f"{REGISTRY}/kernel-python",
        base="debian",
        packages=("python3", "python3-venv"),
        files=_launcher_files(launchers),
        inputs={"python": DEBIAN_PYTHON, "glibc": DEBIAN_GLIBC},
        staged_dirs=(("requirements", WHEELS_DIR),),
        requirements=PYTHON_KERNEL_REQUIREMENTS,
        commands=(install,),
        entrypoint=LAUNCHER_ENTRYPOINT,
        cmd=("--", *PYTHON_KERNEL_ARGV),
        **_kernel_runtime(f"{KERNEL_VENV}/bin:{PATH}"),
    )


def r_recipe(launchers: Mapping[str, bytes]) -> Recipe:
    """IRkernel (``R --slave -e 'IRkernel::main()' --args {connection_file}``) and python3."""
    return Recipe(
        name="r",
        image=f"{REGISTRY}/kernel-r",
        base="debian",
        packages=("python3", "r-base-core", "r-cran-irkernel"),
        files=_launcher_files(launchers),
        entrypoint=LAUNCHER_ENTRYPOINT,
        cmd=("--", *R_KERNEL_ARGV),
        **_kernel_runtime(),
    )


def busybox_recipe(busybox: bytes, applets: Iterable[str]) -> Recipe:
    """A static *busybox* at ``/bin/busybox`` and a link per applet (``usr/bin/env`` …, as
    ``busybox --list-full`` prints them)."""
    if not busybox.startswith(b"\x7fELF"):
        raise RecipeError("the busybox binary is not an ELF executable")
    links = sorted(
        {(a.strip().lstrip("/"), "/bin/busybox") for a in applets if a.strip()}
        - {("bin/busybox", "/bin/busybox")}
    )
    user = _kernel_user()
    return Recipe(
        name="busybox",
        image=f"{REGISTRY}/busybox",
        base="static",
        files=(
            AddFile("/bin/busybox", busybox, 0o755),
            AddFile(
                "/etc/passwd", f"root:x:0:0:root:/root:/bin/sh\n{user.passwd_line()}\n".encode()
            ),
            AddFile("/etc/group", f"root:x:0:\n{user.group_line()}\n".encode()),
        ),
        links=tuple(links),
        env={"PATH": PATH},
        cmd=("sh",),
    )


def gateway_recipe(source_digest: str) -> Recipe:
    """kernelfleet in a venv at ``/opt/kernelfleet``, installed offline (no PyPI from the
    chroot) from the wheels the build stages in :data:`WHEELS_DIR`: kernelfleet's, of the
    checkout whose files hash to *source_digest*, and its dependencies' for Debian's Python
    (:data:`DEBIAN_PYTHON`, glibc :data:`DEBIAN_GLIBC`), downloaded on the host."""
    install = (
        "python3 -m venv /opt/kernelfleet && /opt/kernelfleet/bin/pip install -q --no-index "
        f"--find-links {WHEELS_DIR} kernelfleet && rm -rf {WHEELS_DIR} /root/.cache"
    )
    return Recipe(
        name="gateway",
        image=f"{REGISTRY}/gateway",
        base="debian",
        packages=("python3", "python3-venv"),
        inputs={"source": source_digest, "python": DEBIAN_PYTHON, "glibc": DEBIAN_GLIBC},
        staged_dirs=(("wheels", WHEELS_DIR),),
        commands=(install,),
        entrypoint=("/opt/kernelfleet/bin/kernelfleet",),
        cmd=("serve", "--ip=0.0.0.0"),
        **_kernel_runtime(),
    )


def wheel_platforms(glibc: str = DEBIAN_GLIBC, arch: str = "x86_64") -> list[str]:
    """Every manylinux tag a glibc *glibc* system accepts, newest first, for ``pip download
    --platform`` (which does not infer the older ones): ``manylinux_2_36_x86_64`` …
    ``manylinux_2_5_x86_64`` and the legacy ``manylinux2014``/``2010``/``1`` aliases."""
    major, minor = (int(part) for part in glibc.split("."))
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    return tags + [f"{name}_{arch}" for m, name in legacy.items() if m <= minor]


def requirement_key(requirement: str) -> str:
    """``name==version`` with the name normalised as PyPI does (``Jupyter_Client==8.10.0`` →
    ``jupyter-client==8.10.0``); anything else is a :class:`RecipeError`."""
    name, sep, version = requirement.partition("==")
    if not sep or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or not version.strip():
        raise RecipeError(f"requirement {requirement!r} is not pinned as name==version")
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version.strip()}"


def wheel_key(filename: str) -> str:
    """The :func:`requirement_key` of a wheel file (``pyzmq-27.3.0-cp311-….whl``)."""
    parts = filename.removesuffix(".whl").split("-")
    if not filename.endswith(".whl") or len(parts) < 5:
        raise RecipeError(f"{filename!r} is not a wheel file name")
    return requirement_key(f"{parts[0]}=={parts[1]}")


def wheels_cache_key(requirements: Iterable[str], python: str, platforms: Sequence[str]) -> str:
    """The hex sha256 naming a download of *requirements*' wheels for *python* and *platforms*
    (implementation ``cp``): equal requirement sets, equal keys, whatever their order."""
    data = {
        "requirements": sorted(requirement_key(r) for r in requirements),
        "python": python,
        "implementation": "cp",
        "platforms": list(platforms),
    }
    return hashlib.sha256(canonical_json(data)).hexdigest()


# --- mmdebstrap -------------------------------------------------------------------------------


def mmdebstrap_argv(
    recipe: Recipe, staged: Mapping[str, str], out_tar: str, mirrors: Sequence[str] = ()
) -> list[str]:
    """The ``mmdebstrap`` command line for a Debian *recipe*, writing *out_tar*.

    *staged* maps each added file's destination, and each staged directory's input name, to
    the host path holding it; the hooks install them (root-owned, files with the recipe's
    modes), append the users, run the recipe's commands in the chroot, then clean up.
    *mirrors* default to mmdebstrap's own choice (deb.debian.org, with -updates and
    -security for a stable suite)."""
    if recipe.base != "debian":
        raise RecipeError(f"recipe {recipe.name} is not built with mmdebstrap")
    q = shlex.quote
    argv = [
        "mmdebstrap",
        f"--variant={recipe.variant}",
        "--mode=root",
        "--format=tar",
        "--include=" + ",".join(recipe.packages),
    ]
    argv += [f"--dpkgopt={f}" for f in DPKG_FILTERS]
    hooks: list[str] = []
    for f in recipe.files:
        dest = PurePosixPath(f.dest)
        if not dest.is_absolute() or ".." in dest.parts:
            raise RecipeError(f"recipe {recipe.name}: {f.dest!r} is not an absolute path")
        hooks.append(f'install -D -o 0 -g 0 -m {f.mode:o} {q(staged[f.dest])} "$1"{q(str(dest))}')
    for name, dest_dir in recipe.staged_dirs:
        hooks.append(f'mkdir -p "$1"{q(dest_dir)} && cp -R {q(staged[name])}/. "$1"{q(dest_dir)}/')
    for u in recipe.users:
        hooks.append(f'echo {q(u.passwd_line())} >> "$1/etc/passwd"')
        hooks.append(f'echo {q(u.group_line())} >> "$1/etc/group"')
    # A clean environment: the host's PIP_*, proxies and locale do not leak into the image.
    # SOURCE_DATE_EPOCH makes pip write hash-based .pyc files (no install time in them).
    clean = f"env -i PATH={PATH} HOME=/root LANG=C.UTF-8 SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH}"
    hooks += [f'chroot "$1" {clean} sh -ec {q(cmd)}' for cmd in recipe.commands]
    hooks += CLEANUP_HOOKS
    argv += [f"--customize-hook={h}" for h in hooks]
    return [*argv, recipe.suite, out_tar, *mirrors]


def static_entries(recipe: Recipe) -> list[TarEntry]:
    """The rootfs of a static *recipe*: standard directories, its files, its links."""
    if recipe.base != "static":
        raise RecipeError(f"recipe {recipe.name} is not a static image")
    entries = [TarEntry.dir(d) for d in ("bin", "dev", "etc", "proc", "sys", "usr", "usr/bin")]
    entries += [TarEntry.dir("usr/sbin"), TarEntry.dir("sbin"), TarEntry.dir("root", 0o700)]
    entries.append(TarEntry("tmp", "dir", mode=0o1777))
    entries += [TarEntry.file(f.dest, f.content, f.mode) for f in recipe.files]
    entries += [TarEntry.symlink(path, target) for path, target in recipe.links]
    return entries
