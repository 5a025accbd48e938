"""The previous released gateway, as a source tree a replica of tests/ha can run.

The previous release is a commit of this repository (:data:`PREVIOUS`, pinned by its full sha;
move it forward at each release). Its ``kernelfleet`` package is taken from the repository's own
history, never from the network: ``git archive <sha> kernelfleet`` unpacked once into
``$KF_TEST_CACHE/kernelfleet-previous-<sha>`` (else ``~/.cache/kernelfleet-test/…``), unpacked
beside it and renamed into place, so that a half-written tree is never used and concurrent test
runs do not collide.

A replica runs it as ``python -m kernelfleet serve`` with ``PYTHONPATH=<tree>`` and the tree as
its working directory. Both matter: ``python -m`` puts the working directory first on
``sys.path``, so a replica started from a checkout would import the checkout's package; and
``PYTHONPATH`` entries come before the editable install, whose finder setuptools appends to
``sys.meta_path`` (it is consulted only when no ``sys.path`` entry has the package).
:func:`check_runs_previous` proves this on the interpreter the replicas use.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

#: The previous released version of the gateway: before schema versions and replica leases.
PREVIOUS = "bb4bc2d0939a9a424462a76beac22db2b16688ce"
#: The repository this file belongs to.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: A module the current version has and the previous one has not (replica leases).
NEW_ONLY_MODULE = "kernelfleet.kernels.replicas"


class Unavailable(Exception):
    """The previous version's source cannot be had here (the message says why)."""


def cache_root() -> Path:
    """``$KF_TEST_CACHE``, else ``~/.cache/kernelfleet-test``."""
    configured = os.environ.get("KF_TEST_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "kernelfleet-test"


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    git = shutil.which("git")
    if git is None:
        raise Unavailable("git is not installed: cannot read the previous version from history")
    return subprocess.run([git, "-C", str(REPO_ROOT), *args], capture_output=True, timeout=120)


def previous_tree(sha: str = PREVIOUS) -> Path:
    """The directory holding the ``kernelfleet`` package of commit *sha* (for ``PYTHONPATH``),
    unpacked on first use. Raises :class:`Unavailable` without git history."""
    tree = cache_root() / f"kernelfleet-previous-{sha}"
    if (tree / "kernelfleet" / "__init__.py").is_file():
        return tree
    if not (REPO_ROOT / ".git").exists():
        raise Unavailable(
            f"{REPO_ROOT} is not a git checkout (a source tarball?): the previous version "
            f"{sha[:12]} comes from the repository's history"
        )
    found = _git("rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}")
    if found.returncode != 0:
        raise Unavailable(
            f"commit {sha[:12]} (the previous release) is not in the repository's history "
            f"(a shallow clone?): {found.stderr.decode(errors='replace').strip() or 'not found'}"
        )
    archive = _git("archive", "--format=tar", sha, "kernelfleet")
    if archive.returncode != 0:
        raise Unavailable(
            f"git archive {sha[:12]} failed: {archive.stderr.decode(errors='replace').strip()}"
        )
    tree.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{tree.name}-", dir=tree.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(staging, filter="data")
        if not (staging / "kernelfleet" / "__init__.py").is_file():
            raise Unavailable(f"commit {sha[:12]} has no kernelfleet package")
        try:
            staging.rename(tree)
        except OSError:
            if not (tree / "kernelfleet" / "__init__.py").is_file():
                raise
            # another test run unpacked it meanwhile: use theirs
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tree


def replica_env(tree: Path) -> dict[str, str]:
    """What a process needs in its environment to import the package of *tree* first."""
    inherited = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([str(tree), inherited] if inherited else [str(tree)])}


def check_runs_previous(tree: Path) -> None:
    """Assert that this interpreter, started as the replicas are (environment, working
    directory), imports ``kernelfleet`` from *tree* and lacks the current version's modules."""
    probe = (
        "import importlib.util, kernelfleet; "
        f"print(kernelfleet.__file__); print(importlib.util.find_spec({NEW_ONLY_MODULE!r}))"
    )
    env = {**os.environ, **replica_env(tree)}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=tree, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    origin, new_module = done.stdout.splitlines()
    assert Path(origin).resolve().is_relative_to(tree.resolve()), (
        f"with PYTHONPATH={tree}, kernelfleet is imported from {origin}"
    )
    assert new_module == "None", f"the previous version's tree has {NEW_ONLY_MODULE}: {new_module}"
