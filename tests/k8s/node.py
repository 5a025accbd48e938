"""The node side of tests/k8s: names and addresses, the built-in images, and the host state the
cluster changes (bridge, sysctls, mounts, cgroups, a few host paths), kept apart from the
daemons' lifecycle in ``cluster.py`` and their configuration in ``confs.py``. Every name and
address here is the testbed's own (10.98/10.99, ``kfcni0``, ``kf-node0``), so it runs beside
the repository's other testbeds."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from kernelfleet.images.oci import ImageConfig, TarEntry, write_oci_archive, write_rootfs_tar

BRIDGE = "kfcni0"
NODE_IP = "10.98.0.1"
POD_CIDR = "10.98.0.0/24"
SERVICE_CIDR = "10.99.0.0/24"
API_PORT = 16443
REGISTRY = f"{NODE_IP}:5000"
NODE_NAME = "kf-node0"
CNI_NETWORK = "kfcni"
PAUSE_IMAGE = "kernelfleet.test/pause:3.10"
BUSYBOX_IMAGE = "kernelfleet.test/busybox:1.35"

#: What the kubelet sets at start (no opt-out) and the bridge CNI plugin (ip_forward): recorded
#: before, restored after node Ready and at teardown.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
)

#: The sandbox ("pause") process: PID 1 of each pod, holding its namespaces. It reaps orphans
#: (SIGCHLD) and exits on SIGINT/SIGTERM, like build/pause/linux/pause.c of Kubernetes.
PAUSE_C = r"""
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { (void)sig; _exit(0); }

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction stop = {.sa_handler = on_stop};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
  if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0)
    return 1;
  for (;;)
    pause();
  return 42;
}
"""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


# -- images -------------------------------------------------------------------------------------
def build_pause_image(work: Path, out: Path) -> Path:
    """Compile :data:`PAUSE_C` (``gcc -Os -static``) into a one-file image, ``/pause``."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "pause.c").write_text(PAUSE_C)
    run("gcc", "-Os", "-static", "-s", "-o", str(work / "pause"), str(work / "pause.c"))
    entries = [TarEntry.file("pause", (work / "pause").read_bytes(), mode=0o755)]
    write_rootfs_tar(work / "pause-rootfs.tar", entries)
    write_oci_archive(
        work / "pause-rootfs.tar", out, PAUSE_IMAGE, ImageConfig(entrypoint=("/pause",))
    )
    return out


def build_busybox_image(work: Path, out: Path, ref: str = BUSYBOX_IMAGE) -> Path:
    """Debian's static busybox with a link in ``/bin`` for each applet (``sh``, ``nc``,
    ``httpd``, ``wget``…) and an empty ``/tmp``; command ``/bin/sh``."""
    busybox = Path("/bin/busybox")
    entries = [TarEntry.dir(p) for p in ("bin", "etc", "proc", "sys", "dev", "root")]
    entries.append(TarEntry.dir("tmp", mode=0o1777))
    entries.append(TarEntry.file("bin/busybox", busybox.read_bytes(), mode=0o755))
    entries += [
        TarEntry.symlink(f"bin/{applet}", "busybox")
        for applet in run(str(busybox), "--list").stdout.split()
        if applet != "busybox"
    ]
    entries.append(TarEntry.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"))
    entries.append(TarEntry.file("etc/group", b"root:x:0:\n"))
    work.mkdir(parents=True, exist_ok=True)
    write_rootfs_tar(work / "busybox-rootfs.tar", entries)
    config = ImageConfig(cmd=("/bin/sh",), env={"PATH": "/bin"})
    write_oci_archive(work / "busybox-rootfs.tar", out, ref, config)
    return out


# -- host state ---------------------------------------------------------------------------------
def read_sysctls() -> dict[str, str]:
    return {
        key: Path("/proc/sys", *key.split(".")).read_text().strip().replace("\t", " ")
        for key in SYSCTLS
    }


def write_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        path = Path("/proc/sys", *key.split("."))
        if path.read_text().strip().replace("\t", " ") != value:
            path.write_text(value)


def bridge_up() -> None:
    """``kfcni0`` with 10.98.0.1/24, up (before the apiserver binds that address)."""
    bridge_down()
    run("ip", "link", "add", BRIDGE, "type", "bridge")
    run("sysctl", "-qw", f"net.ipv6.conf.{BRIDGE}.disable_ipv6=1", check=False)
    run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")


def bridge_down() -> None:
    """Delete the pods' veths still on the bridge, then the bridge."""
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        return
    for port in Path(f"/sys/class/net/{BRIDGE}/brif").iterdir():
        run("ip", "link", "del", port.name, check=False)
    run("ip", "link", "del", BRIDGE, check=False)


#: Host paths the daemons use whatever their flags say: the kubelet's device-plugin socket and
#: container log links, libcni's result cache, the shims' socket dir. ``up`` records which did
#: not exist (``host-paths.json``); ``down`` removes our files in them and those it created,
#: if empty.
HOST_PATHS = ("/var/lib/kubelet", "/var/log/containers", "/var/lib/cni", "/run/containerd")


def missing_host_paths() -> list[str]:
    return [p for p in HOST_PATHS if not os.path.lexists(p)]


def clean_host_paths(d: Path, created: list[str]) -> None:
    """Remove what the cluster under *d* left in :data:`HOST_PATHS`: the kubelet's socket,
    log links into *d*, the CNI results of our network and sandboxes; then the directories of
    *created* that are empty (bottom-up; never a non-empty one)."""
    Path("/var/lib/kubelet/device-plugins/kubelet.sock").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        for link in Path("/var/log/containers").iterdir():
            if link.is_symlink() and os.readlink(link).startswith(f"{d}/"):
                link.unlink()
    sandboxes = d / "containerd" / "io.containerd.grpc.v1.cri" / "sandboxes"
    ours = {p.name for p in sandboxes.iterdir()} if sandboxes.is_dir() else set()
    for cached in Path("/var/lib/cni/results").glob("*"):
        # <network>-<sandbox id>-<interface>: our network's, and the CRI's loopback results
        # of our sandboxes (left behind when a crash skipped the CNI DEL)
        parts = cached.name.split("-")
        if cached.name.startswith(f"{CNI_NETWORK}-") or ours.intersection(parts):
            cached.unlink(missing_ok=True)
    for top in created:
        for root, _, _ in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(root)


def mounts_under(d: Path) -> list[str]:
    """Mount points at or below *d* (deepest first), from /proc/self/mountinfo."""
    prefix = str(d).rstrip("/")
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def unmount_under(d: Path) -> list[str]:
    """Unmount everything at or below *d*; return what is still mounted."""
    for _ in range(3):
        points = mounts_under(d)
        if not points:
            return []
        for point in points:
            if run("umount", point, check=False).returncode != 0:
                run("umount", "-l", point, check=False)
    return mounts_under(d)


def kubepods_cgroups() -> list[Path]:
    """Every ``kubepods*`` cgroup of every v1 hierarchy, leaves first."""
    found: list[Path] = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        for top in hierarchy.glob("kubepods*"):
            for root, dirs, _ in os.walk(top, topdown=False):
                found.extend(Path(root) / name for name in dirs)
            found.append(top)
    return found


def kill_kubepods_processes() -> int:
    """SIGKILL every process in a ``kubepods`` cgroup (containers the runtime left running)."""
    pids: set[int] = set()
    for cgroup in kubepods_cgroups():
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (cgroup / "cgroup.procs").read_text().split())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def remove_kubepods_cgroups() -> list[Path]:
    """rmdir the ``kubepods`` cgroups leaves-first; return those that would not go."""
    left = []
    for cgroup in kubepods_cgroups():
        try:
            cgroup.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            left.append(cgroup)
    return left


# -- processes ----------------------------------------------------------------------------------
def alive(pid: int) -> bool:
    """Whether *pid* runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def rss_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def kill_processes(d: Path, executables: frozenset[str]) -> None:
    """SIGKILL every process running one of *executables* with a path under *d* among its
    arguments: the daemons of a crashed run, or containerd's shims that outlived it."""
    marker = f"{d}/".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            name = os.path.basename(argv[0]).decode(errors="replace")
            if name in executables and any(marker in arg for arg in argv):
                os.kill(int(proc.name), signal.SIGKILL)
    time.sleep(0.1)
