"""A real one-node Kubernetes for the tests: separate daemons, no mocks (root only).

Layout (docs/resource-managers.md §2, with this testbed's own addresses): everything runs in
the root network namespace. The bridge ``kfcni0`` holds 10.98.0.1/24, made before anything
binds it; the apiserver serves https://10.98.0.1:16443, the kubelet (node ``kf-node0``) its API
on 10.98.0.1:10250, Debian's ``docker-registry`` plain HTTP on 10.98.0.1:5000; etcd listens on
127.0.0.1:23790/23800. Pods get 10.98.0.10-250 from the CNI bridge plugin on ``kfcni0`` and a
default route via 10.98.0.1; Services get 10.99.0.0/24 but nothing routes them (no kube-proxy,
no CoreDNS): the gateway dials pod IPs. A private containerd (Debian's 1.6) with its own root,
state and socket runs the pods; images come from OCI archives imported with ``ctr`` (the pause
image is compiled here) or from the local registry, never from the network.

Identities: static tokens (``--token-auth-file``) for the harness and controllers
(``system:masters``) and the kubelet (``system:node:kf-node0``); everything else is a
ServiceAccount (:meth:`K8sCluster.service_account_token`), so RBAC is real.

The kubelet rewrites a few kernel sysctls at start, with no opt-out; :meth:`K8sCluster.up`
records them first and restores them once the node is Ready, :meth:`K8sCluster.down` again.
Until then a kernel oops would reboot the VM (``kernel.panic_on_oops=1``, ``kernel.panic=10``):
acceptable on disposable CI machines only.

The binaries come from ``scripts/k8s-deps.sh`` (built from the Go module proxy into
``$KF_TEST_CACHE``, never touched here). All state is under :data:`STATE_DIR`; only one cluster
runs at a time (:data:`LOCK`). Started by hand with ``python -m tests.k8s.cluster up`` (``make
k8s-up``) it keeps running after the command; ``down`` (``make k8s-down``) stops it, and so does
the next test session, which always starts a cluster of its own.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from kernelfleet.images.oci import MEDIA_MANIFEST, read_oci_archive
from tests.k8s import confs, node
from tests.k8s.node import API_PORT, BUSYBOX_IMAGE, NODE_IP, NODE_NAME, PAUSE_IMAGE, REGISTRY
from tests.k8s.pki import Pki, make_pki
from tests.testbed import acquire_lock, wait_for

STATE_DIR = Path("/run/kf-k8s")
LOCK = Path("/run/kf-k8s.lock")
REPO = Path(__file__).resolve().parents[2]
SYSTEM_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
#: Start order; stopped in reverse. The kubelet goes first at teardown, etcd last.
DAEMONS: tuple[str, ...] = ("etcd", "registry", "containerd", "kube-apiserver")
DAEMONS += ("kube-controller-manager", "kube-scheduler", "kubelet")
#: Executables that may be ours, for the leftover scan (with the state dir on their argv).
OUR_EXECUTABLES = frozenset({*DAEMONS, "docker-registry", "containerd-shim-runc-v2"})
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def bin_dir() -> Path | str:
    """The built binaries (``scripts/k8s-deps.sh --check``), or why there are none."""
    script = REPO / "scripts" / "k8s-deps.sh"
    proc = subprocess.run(["sh", str(script), "--check"], capture_output=True, text=True)
    if proc.returncode != 0:
        return proc.stderr.strip() or f"{script} --check failed"
    return Path(proc.stdout.strip()) / "bin"


class ApiError(RuntimeError):
    def __init__(self, code: int, body: str):
        super().__init__(f"HTTP {code}: {body[:2000]}")
        self.code = code
        self.body = body


class K8sCluster:
    """See the module docstring. ``up()``, then ``down()``; a person uses the same cluster
    through ``python -m tests.k8s.cluster up|down|status``."""

    def __init__(self, bins: Path, state_dir: Path = STATE_DIR):
        self.bins = bins
        self.dir = state_dir
        self.pki = Pki(state_dir / "pki", "", "")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.timings: dict[str, float] = {}
        self.sysctls_before: dict[str, str] = {}
        self.sysctls_kubelet: dict[str, str] = {}
        self._lock: int | None = None
        self._load_tokens()

    # -- addresses and identities ---------------------------------------------------------------
    api_url = f"https://{NODE_IP}:{API_PORT}"
    registry = REGISTRY  # host:port of the local registry (plain HTTP)
    node_name = NODE_NAME
    node_ip = NODE_IP
    pause_image = PAUSE_IMAGE
    busybox_image = BUSYBOX_IMAGE

    @property
    def ca_file(self) -> Path:
        return self.pki.ca_crt

    @property
    def admin_token(self) -> str:
        return self.pki.admin_token

    @property
    def admin_kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd.sock"

    @property
    def images_dir(self) -> Path:
        """OCI archives of the built-in images: ``pause.tar``, ``busybox.tar``."""
        return self.dir / "images"

    def _load_tokens(self) -> None:
        """The tokens of a cluster already up (started by another process), if any."""
        with contextlib.suppress(OSError, IndexError):
            rows = [line.split(",") for line in self.pki.token_file.read_text().splitlines()]
            self.pki = Pki(self.pki.dir, rows[0][0], rows[1][0])

    # -- lifecycle ------------------------------------------------------------------------------
    def up(self, timeout: float = 90, wait: float = 60) -> K8sCluster:
        """Start everything; ready when the node is Ready, the ``default`` ServiceAccount
        exists and a smoke pod ran. Raises :class:`~tests.testbed.TestbedBusy` if another
        process holds the cluster for more than *wait* s; on failure, tears down and raises
        with the daemons' log tails."""
        self._acquire(wait)
        try:
            self._cleanup()
            self._start(timeout)
        except BaseException:
            try:
                self.down()
            except Exception as exc:  # keep the start's error; say what cleanup left
                print(f"K8sCluster.down() after a failed start: {exc}", file=sys.stderr)
            raise
        return self

    def _start(self, timeout: float) -> None:
        t0 = time.monotonic()
        deadline = t0 + timeout
        d = self.dir
        for sub in ("logs", "run", "cni", f"certs.d/{REGISTRY}", "images", "kubelet", "etcd"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
        self.pki = make_pki(d / "pki")
        self.sysctls_before = node.read_sysctls()
        (d / "sysctls.json").write_text(json.dumps(self.sysctls_before))
        (d / "host-paths.json").write_text(json.dumps(node.missing_host_paths()))
        node.bridge_up()
        self._write_configs()
        self._spawn("etcd", confs.etcd_argv(self.bins, d))
        self._spawn("registry", ["docker-registry", "serve", f"{d}/registry.yml"])
        self._spawn("containerd", ["containerd", "--config", f"{d}/containerd.toml"])
        self._spawn("kube-apiserver", confs.apiserver_argv(self.bins, d, self.pki))
        self._spawn(
            "kube-controller-manager", confs.controller_manager_argv(self.bins, d, self.pki)
        )
        self._spawn("kube-scheduler", confs.scheduler_argv(self.bins, d))
        node.build_pause_image(d / "images", self.images_dir / "pause.tar")
        node.build_busybox_image(d / "images", self.images_dir / "busybox.tar")
        wait_for(self.containerd_socket.exists, 20, "containerd did not start", self.log_tails)
        for archive in ("pause.tar", "busybox.tar"):
            self.import_image(self.images_dir / archive)
        self._spawn("kubelet", confs.kubelet_argv(self.bins, d))

        def left() -> float:
            return max(1.0, deadline - time.monotonic())

        wait_for(self._api_ready, left(), "the apiserver was not ready", self.log_tails)
        self.timings["apiserver_ready_s"] = time.monotonic() - t0
        wait_for(self._node_ready, left(), f"{NODE_NAME} was not Ready", self.log_tails)
        self.timings["node_ready_s"] = time.monotonic() - t0
        self.sysctls_kubelet = node.read_sysctls()
        node.write_sysctls(self.sysctls_before)
        wait_for(
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default"),
            left(),
            "no default ServiceAccount",
            self.log_tails,
        )
        self._smoke_pod(left())
        node.write_sysctls(self.sysctls_before)  # the bridge plugin set ip_forward again
        self.timings["ready_s"] = time.monotonic() - t0

    def _smoke_pod(self, limit: float) -> None:
        t0 = time.monotonic()
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "kf-smoke"},
            "spec": {
                "containers": [{"name": "pause", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}],
                "terminationGracePeriodSeconds": 0,
            },
        }
        self.api("POST", "/api/v1/namespaces/default/pods", pod)
        self.wait_pod("default", "kf-smoke", limit)
        self.timings["smoke_pod_s"] = time.monotonic() - t0
        self.api("DELETE", "/api/v1/namespaces/default/pods/kf-smoke", {"gracePeriodSeconds": 0})

    def _api_ready(self) -> bool:
        return bool(self._get("/readyz", timeout=2) == "ok")

    def _node_ready(self) -> bool:
        nodes = self._get(f"/api/v1/nodes/{NODE_NAME}")
        conditions = (nodes or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def down(self) -> None:
        """Delete the test namespaces (waiting until the namespace controller removed them)
        and every pod (grace 0); stop the daemons, kubelet first, etcd last; kill what the
        runtime left running; unmount what is left under the state dir; remove the
        ``kubepods`` cgroups leaves-first and the bridge; restore the sysctls; remove the
        state dir (the binary cache stays). Also cleans what a crashed earlier run left.
        Safe to call twice, and from another process than ``up()``'s."""
        if self._lock is None:
            self._acquire(60)
        try:
            self._cleanup()
        finally:
            self._release()

    def _cleanup(self) -> None:
        """What :meth:`down` does, under the lock already held."""
        problems: list[str] = []
        if self._pids() and self.admin_token:
            with contextlib.suppress(Exception):
                if self._api_ready():
                    self._delete_api_objects()
        for name in reversed(DAEMONS):
            self._stop(name, grace=10 if name == "kubelet" else 5)
            if name == "kubelet":
                node.kill_kubepods_processes()
        node.kill_processes(self.dir, OUR_EXECUTABLES)
        still = node.unmount_under(self.dir)
        if still:
            problems.append(f"still mounted: {still}")
        for _ in range(10):
            if not node.kubepods_cgroups() or not node.remove_kubepods_cgroups():
                break
            node.kill_kubepods_processes()
            time.sleep(0.3)
        problems += [f"cgroup not removed: {c}" for c in node.kubepods_cgroups()]
        node.bridge_down()
        with contextlib.suppress(OSError, ValueError):
            node.write_sysctls(json.loads((self.dir / "sysctls.json").read_text()))
        created: list[str] = []
        with contextlib.suppress(OSError, ValueError):
            created = json.loads((self.dir / "host-paths.json").read_text())
        node.clean_host_paths(self.dir, created)
        self.procs.clear()
        if still:  # never rmtree through a mount
            raise RuntimeError("; ".join(problems))
        shutil.rmtree(self.dir, ignore_errors=True)
        if problems:
            raise RuntimeError("; ".join(problems))

    def _delete_api_objects(self) -> None:
        names = [
            ns["metadata"]["name"]
            for ns in self._get("/api/v1/namespaces")["items"]
            if ns["metadata"]["name"] not in SYSTEM_NAMESPACES
        ]
        for name in names:
            with contextlib.suppress(ApiError):
                self.api("DELETE", f"/api/v1/namespaces/{name}")
        with contextlib.suppress(RuntimeError):
            wait_for(
                lambda: not any(self._get(f"/api/v1/namespaces/{n}") for n in names),
                30,
                "namespaces still there",
            )
        for pod in self._get("/api/v1/pods")["items"]:
            meta = pod["metadata"]
            with contextlib.suppress(ApiError):
                path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
                self.api("DELETE", path, {"gracePeriodSeconds": 0})
        with contextlib.suppress(RuntimeError):  # let the kubelet stop the sandboxes (CNI DEL)
            wait_for(lambda: not self._tasks(), 10, "tasks still running")

    def _tasks(self) -> list[str]:
        out = self._ctr("tasks", "ls", "-q", check=False).stdout
        return out.split()

    def _acquire(self, wait: float) -> None:
        self._lock = acquire_lock(LOCK, wait, "the Kubernetes testbed")

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # -- daemons --------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.dir / "logs" / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                argv,
                env=ENV,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs[name] = proc
        (self.dir / "run" / f"{name}.pid").write_text(f"{proc.pid}\n")

    def _pids(self) -> dict[str, int]:
        """Running daemons by name, from the pid files (checked against /proc)."""
        pids = {}
        for name in DAEMONS:
            try:
                pid = int((self.dir / "run" / f"{name}.pid").read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if str(self.dir).encode() in cmdline and node.alive(pid):
                pids[name] = pid
        return pids

    def _stop(self, name: str, grace: float) -> None:
        pid = self._pids().get(name)
        proc = self.procs.get(name)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while node.alive(pid) and time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.05)
        if node.alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    def _write_configs(self) -> None:
        d = self.dir
        (d / "containerd.toml").write_text(confs.containerd_config(d))
        (d / "certs.d" / REGISTRY / "hosts.toml").write_text(confs.registry_hosts())
        (d / "cni" / "10-kfcni.conflist").write_text(confs.cni_conflist(d))
        (d / "registry.yml").write_text(confs.registry_config(d))
        (d / "kubelet.yaml").write_text(confs.kubelet_config(d, self.pki.ca_crt))
        self.kubeconfig(self.admin_kubeconfig, self.admin_token)
        self.kubeconfig(d / "kubelet.kubeconfig", self.pki.kubelet_token)

    def log_tails(self, chars: int = 2500) -> str:
        tails = []
        for name in DAEMONS:
            log = self.dir / "logs" / f"{name}.log"
            text = log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"
            tails.append(f"--- {name} ({log}):\n{text}")
        return "\n".join(tails)

    def daemon_rss_mb(self) -> dict[str, float]:
        """Resident memory of each running daemon, in MiB."""
        found = {name: node.rss_mb(pid) for name, pid in self._pids().items()}
        return {name: mb for name, mb in found.items() if mb is not None}

    def status(self) -> dict[str, Any]:
        """Which daemons run (pid), and the node's Ready condition if the apiserver answers."""
        state: dict[str, Any] = {"daemons": self._pids(), "node_ready": None}
        with contextlib.suppress(Exception):
            state["node_ready"] = self._node_ready()
        return state

    # -- API ------------------------------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        timeout: float = 10,
    ) -> Any:
        """One apiserver request (admin unless *token*); the JSON answer (text if not JSON).
        Raises :class:`ApiError` on an HTTP error."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api_url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            kind = "merge-patch+json" if method == "PATCH" else "json"
            req.add_header("Content-Type", f"application/{kind}")
        https = urllib.request.HTTPSHandler(context=self._ssl())
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), https)
        try:
            with opener.open(req, timeout=timeout) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, exc.read().decode(errors="replace")) from None
        try:
            return json.loads(text)
        except ValueError:
            return text

    def _get(self, path: str, timeout: float = 5) -> Any:
        """GET *path*; None on 404."""
        try:
            return self.api("GET", path, timeout=timeout)
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl`` as the admin; raises with stderr if it fails and *check*."""
        argv = [str(self.bins / "kubectl"), f"--kubeconfig={self.admin_kubeconfig}", *args]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, env=ENV)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def kubeconfig(self, path: Path, token: str) -> Path:
        """Write a kubeconfig (mode 0600) for the apiserver, our CA, and bearer *token*."""
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kf",
                    "cluster": {"server": self.api_url, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": "kf", "user": {"token": token}}],
            "contexts": [{"name": "kf", "context": {"cluster": "kf", "user": "kf"}}],
            "current-context": "kf",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A token of ServiceAccount *namespace*/*name* from the TokenRequest API (the account
        is created if missing; the namespace must exist). The apiserver's minimum is 600 s."""
        base = f"/api/v1/namespaces/{namespace}/serviceaccounts"
        if self._get(f"{base}/{name}") is None:
            with contextlib.suppress(ApiError):  # created meanwhile: fine
                self.api("POST", base, {"metadata": {"name": name}})
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        }
        answer = self.api("POST", f"{base}/{name}/token", request)
        return str(answer["status"]["token"])

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod object, or None if it does not exist."""
        pod: dict[str, Any] | None = self._get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        return pod

    def wait_pod(
        self,
        namespace: str,
        name: str,
        timeout: float = 60,
        phases: tuple[str, ...] = ("Running",),
    ) -> dict[str, Any]:
        """Wait until the pod is in one of *phases*; return it. Fails early on a phase not
        asked for among Succeeded/Failed."""

        def reached() -> dict[str, Any] | None:
            pod = self.pod(namespace, name)
            phase = (pod or {}).get("status", {}).get("phase")
            if phase in phases:
                return pod
            if phase in ("Succeeded", "Failed"):
                raise AssertionError(f"pod {namespace}/{name} ended {phase}: {pod}")
            return None

        try:
            return dict(wait_for(reached, timeout, f"pod {namespace}/{name} not {phases}"))
        except RuntimeError as exc:
            if isinstance(exc.__context__, AssertionError):
                raise exc.__context__ from None
            raise RuntimeError(f"{exc}\n{self.pod(namespace, name)}") from None

    # -- images ---------------------------------------------------------------------------------
    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", "-a", str(self.containerd_socket), "-n", "k8s.io", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, env=ENV)
        if check and proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def import_image(self, archive: Path) -> None:
        """Import an OCI (or ``docker save``) archive into the runtime's ``k8s.io`` namespace,
        where the kubelet sees it (``imagePullPolicy: Never`` or ``IfNotPresent``)."""
        self._ctr("images", "import", str(archive))

    def images(self) -> list[str]:
        """The runtime's image names (without the ``sha256:`` aliases the CRI adds)."""
        names = self._ctr("images", "ls", "-q").stdout.split()
        return [n for n in names if not n.startswith("sha256:")]

    def push_image(self, archive: Path, repo: str, tag: str, variant: str = "") -> str:
        """Push the image of an OCI archive to the local registry as *repo*:*tag* with the
        registry HTTP API (each blob not there yet: POST an upload, PUT it whole; then PUT the
        manifest); return the reference pods use, ``10.98.0.1:5000/<repo>:<tag>``.

        *variant* gives the pushed image a config of its own (a label): a different image id
        than the archive's. containerd 1.6's CRI keeps one name per image id, so pulling an
        image already imported under another name makes that name unusable to the kubelet
        (ErrImagePull on the imported name until containerd restarts)."""
        info = read_oci_archive(archive, verify=False)
        base = f"http://{REGISTRY}/v2/{repo}"

        def request(method: str, url: str, data: Any = None, size: int = 0, kind: str = "") -> Any:
            req = urllib.request.Request(url, data=data, method=method)
            if data is not None:
                req.add_header("Content-Length", str(size))
                req.add_header("Content-Type", kind or "application/octet-stream")
            return NO_PROXY.open(req, timeout=120)

        with tarfile.open(archive, "r:") as tar:

            def blob(digest: str) -> tuple[Any, int]:
                member = tar.getmember("blobs/sha256/" + digest.removeprefix("sha256:"))
                return tar.extractfile(member), member.size

            manifest_file, _ = blob(info.manifest_digest)
            manifest = json.loads(manifest_file.read())
            replaced: dict[str, bytes] = {}
            if variant:
                config_file, _ = blob(info.config_digest)
                config = json.loads(config_file.read())
                labels = config.setdefault("config", {}).setdefault("Labels", {}) or {}
                labels["kernelfleet.test/variant"] = variant
                config["config"]["Labels"] = labels
                data = json.dumps(config, sort_keys=True).encode()
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                replaced[digest] = data
                manifest["config"] = {**manifest["config"], "digest": digest, "size": len(data)}
            config_digest = str(manifest["config"]["digest"])
            for digest in (config_digest, *(layer.digest for layer in info.layers)):
                try:
                    request("HEAD", f"{base}/blobs/{digest}").close()
                    continue  # already there
                except urllib.error.HTTPError as exc:
                    if exc.code != 404:
                        raise
                with request("POST", f"{base}/blobs/uploads/", b"", 0) as resp:
                    location = urllib.parse.urljoin(base, resp.headers["Location"])
                sep = "&" if "?" in location else "?"
                url = f"{location}{sep}digest={urllib.parse.quote(digest)}"
                if digest in replaced:
                    request("PUT", url, replaced[digest], len(replaced[digest])).close()
                else:
                    request("PUT", url, *blob(digest)).close()
            body = json.dumps(manifest).encode()
            request("PUT", f"{base}/manifests/{tag}", body, len(body), MEDIA_MANIFEST).close()
        return f"{REGISTRY}/{repo}:{tag}"


# -- make k8s-up / k8s-down ---------------------------------------------------------------------
def main(argv: list[str]) -> int:
    usage = "usage: python -m tests.k8s.cluster up|down|status"
    if len(argv) != 1 or argv[0] not in ("up", "down", "status"):
        print(usage, file=sys.stderr)
        return 2
    bins = bin_dir()
    if isinstance(bins, str) and argv[0] == "up":
        print(bins, file=sys.stderr)
        return 3
    cluster = K8sCluster(bins if isinstance(bins, Path) else Path("/nonexistent"))
    if argv[0] == "down":  # needs no binaries: stopping must not wait for a build
        cluster.down()
        print(f"stopped; {STATE_DIR} removed")
        return 0
    if argv[0] == "status":
        state = cluster.status()
        print(json.dumps(state, indent=1))
        return 0 if state["node_ready"] else 1
    cluster.up()
    cluster._release()  # the daemons outlive this process; `down` takes the lock again
    print(
        f"Kubernetes is up in {cluster.timings['ready_s']:.1f} s "
        f"(node Ready after {cluster.timings['node_ready_s']:.1f} s).\n"
        f"  export KUBECONFIG={cluster.admin_kubeconfig}   # admin (system:masters)\n"
        f"  {bins}/kubectl get nodes,pods -A\n"
        f"  images: {', '.join(cluster.images())}; registry http://{REGISTRY}\n"
        f"  logs: {STATE_DIR}/logs/; stop with: make k8s-down"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
