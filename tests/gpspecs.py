"""Gateway Provisioners' own spec installers, for the migration tests.

GP's package (from PyPI, at the version below) is installed at test time into an environment
of its own under the test cache, made once per machine with uv, and its installers
(``jupyter ssh-spec install``, ``yarn-spec``, ``k8s-spec``, ``docker-spec``) render kernelspecs
into a prefix the test owns. Nothing of GP is in the repository. Enterprise Gateway ships no
process-proxy kernelspecs in its package; :func:`eg_spec` writes one by hand from its
documented format (``metadata.process_proxy`` with ``class_name`` and ``config``, argv running
EG's launcher with ``--RemoteProcessProxy.*`` options).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

GP_VERSION = "0.5.0"
CACHE = Path(os.environ.get("KF_TEST_CACHE", "/opt/kernelfleet-test"))
GP_VENV = CACHE / f"gateway-provisioners-{GP_VERSION}"
EG_PROXIES = "enterprise_gateway.services.processproxies"


def _uv() -> str:
    here = Path(sys.executable).parent / "uv"
    return str(here) if here.exists() else shutil.which("uv") or "uv"


def gp_venv() -> Path:
    """GP's environment (made once per machine: about 10 s with a warm uv cache)."""
    marker = GP_VENV / ".complete"
    if marker.exists():
        return GP_VENV
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".gp-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return GP_VENV
        shutil.rmtree(GP_VENV, ignore_errors=True)
        uv = _uv()
        subprocess.run(
            [uv, "venv", "-q", "--python", sys.executable, str(GP_VENV)],
            check=True,
            timeout=120,
        )
        subprocess.run(
            [
                uv, "pip", "install", "-q", "--python", str(GP_VENV / "bin" / "python"),
                f"gateway_provisioners[yarn,k8s,docker]=={GP_VERSION}",
            ],
            check=True,
            timeout=600,
        )  # fmt: skip
        marker.touch()
    return GP_VENV


def render(installer: str, prefix: Path, *args: str) -> Path:
    """Run ``jupyter <installer> install --prefix PREFIX ARGS`` from GP's environment; return
    the kernels directory it wrote into."""
    venv = gp_venv()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "KF_"))}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    done = subprocess.run(
        [str(venv / "bin" / f"jupyter-{installer}"), "install", "--prefix", str(prefix), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return prefix / "share" / "jupyter" / "kernels"


def eg_argv(*head: str, **options: str) -> list[str]:
    """EG's launcher argv: *head* (the interpreter and script, or ``run.sh``), the options its
    process proxies fill in, then *options* (``spark_context_initialization_mode="none"``), all
    spelled ``--RemoteProcessProxy.name``."""
    argv = list(head)
    plumbing = {
        "kernel-id": "{kernel_id}",
        "response-address": "{response_address}",
        "public-key": "{public_key}",
        "port-range": "{port_range}",
    }
    extra = {name.replace("_", "-"): value for name, value in options.items()}
    for opt, value in {**plumbing, **extra}.items():
        argv += [f"--RemoteProcessProxy.{opt}", value]
    return argv


def eg_spec(
    kernels: Path,
    name: str,
    proxy: str,
    *,
    config: dict[str, Any] | None = None,
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
    language: str = "python",
    display_name: str = "",
) -> Path:
    """Write an EG kernelspec *name* under *kernels* with process proxy class *proxy*
    (``distributed.DistributedProcessProxy``); argv defaults to EG's Python launcher."""
    spec_dir = kernels / name
    (spec_dir / "scripts").mkdir(parents=True, exist_ok=True)
    launcher = spec_dir / "scripts" / "launch_ipykernel.py"
    launcher.write_text("# stands for EG's launcher: migrate never runs it\n")
    if argv is None:
        argv = eg_argv("python", str(launcher), spark_context_initialization_mode="none")
    stanza: dict[str, Any] = {"class_name": f"{EG_PROXIES}.{proxy}"}
    if config:
        stanza["config"] = config
    kernel_json = {
        "display_name": display_name or f"EG {name}",
        "language": language,
        "metadata": {"process_proxy": stanza, "debugger": True},
        "env": env or {},
        "argv": argv,
    }
    (spec_dir / "kernel.json").write_text(json.dumps(kernel_json, indent=2))
    return spec_dir


def load(spec_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((spec_dir / "kernel.json").read_text())
    return data


def migrate_cli(dest: Path, *names: str, jupyter_path: str | None = None) -> dict[str, Any]:
    """``kernelfleet spec migrate NAMES --prefix DEST --json`` as an admin runs it (the
    originals found on the Jupyter path: this process's, or *jupyter_path*): its report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KF_")}
    env["KF_CONFIG_DIR"] = str(dest / "no-config")  # no admin config file of this machine
    if jupyter_path is not None:
        env["JUPYTER_PATH"] = jupyter_path
    done = subprocess.run(
        [str(Path(sys.executable).parent / "kernelfleet"), "spec", "migrate", *names,
         f"--prefix={dest}", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def findings(report: dict[str, Any], name: str, kind: str) -> dict[str, tuple[str, str]]:
    """Spec *name*'s findings in a migrate report, by field; it must have been written as a
    *kind* spec with nothing unmappable."""
    (out,) = [m for m in report["migrated"] if m["name"] == name]
    assert out["written"] and out["kind"] == kind, out
    assert not [f for f in out["findings"] if f["level"] == "unmappable"], out
    return {f["field"]: (f["level"], f["text"]) for f in out["findings"]}
