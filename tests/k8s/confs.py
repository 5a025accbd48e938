"""What the daemons of tests/k8s are told: their configuration files and command lines
(docs/resource-managers.md §2.3-2.4, with this testbed's addresses from ``node.py``). Pure
functions of the state dir *d*, the binary dir and the PKI; ``cluster.py`` writes and runs them."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from tests.k8s.node import (
    API_PORT,
    BRIDGE,
    CNI_NETWORK,
    NODE_IP,
    NODE_NAME,
    PAUSE_IMAGE,
    POD_CIDR,
    REGISTRY,
    SERVICE_CIDR,
)
from tests.k8s.pki import Pki

#: The controller-manager's controllers: without ``namespace`` deleted namespaces stay
#: Terminating, without ``serviceaccount`` new namespaces have no ``default`` account and reject
#: pods, without ``root-ca-cert-publisher`` pods hang in ContainerCreating.
CONTROLLERS = (
    "serviceaccount,serviceaccount-token,namespace,garbagecollector,"
    "root-ca-cert-publisher,nodelifecycle,podgc,resourcequota,deployment,replicaset"
)


# -- configuration files ------------------------------------------------------------------------
def containerd_config(d: Path) -> str:
    """containerd 1.6's config (schema 2): its own root, state and socket under *d*; netns
    mounts under its state dir; registries from ``certs.d`` (plain HTTP to ours).

    ``restrict_oom_score_adj``: our VMs run root without CAP_SYS_RESOURCE (not in the bounding
    set), so lowering a process's ``oom_score_adj`` is refused; runc then fails every pod
    sandbox (the CRI asks -998 for it) with "can't get final child's PID from pipe: EOF".
    Restricted, no container gets a score below containerd's own."""
    return f"""version = 2
root = "{d}/containerd"
state = "{d}/containerd-run"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{d}/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
"""


def registry_hosts() -> str:
    """``certs.d/10.98.0.1:5000/hosts.toml``: pull and resolve over plain HTTP."""
    return (
        f'server = "http://{REGISTRY}"\n\n'
        f'[host."http://{REGISTRY}"]\n'
        '  capabilities = ["pull", "resolve", "push"]\n'
        "  skip_verify = true\n"
    )


def cni_conflist(d: Path) -> str:
    """One network: the bridge plugin on ``kfcni0`` (gateway 10.98.0.1, no masquerade),
    host-local IPAM with its state under *d*, a default route via the bridge."""
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": False,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": f"{d}/cni-ipam",
                        "ranges": [
                            [
                                {
                                    "subnet": POD_CIDR,
                                    "rangeStart": "10.98.0.10",
                                    "rangeEnd": "10.98.0.250",
                                    "gateway": NODE_IP,
                                }
                            ]
                        ],
                        "routes": [{"dst": "0.0.0.0/0", "gw": NODE_IP}],
                    },
                }
            ],
        },
        indent=1,
    )


def kubelet_config(d: Path, ca_file: Path) -> str:
    """The KubeletConfiguration of §2.4 (JSON, which is YAML): cgroupfs on cgroup v1, its API
    on the node address only, webhook authn/authz, eviction thresholds low enough for a full
    disk, no DNS, no iptables chains, pod logs under *d*."""
    return json.dumps(
        {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": f"unix://{d}/containerd.sock",
            "address": NODE_IP,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "resolvConf": "",
            "makeIPTablesUtilChains": False,
            "podLogsDir": f"{d}/pod-logs",
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "60s",
        },
        indent=1,
    )


def registry_config(d: Path) -> str:
    """Debian's docker-registry (registry 2.8): plain HTTP on the node address, storage under
    *d*, deletes allowed, no auth. Never /etc/docker/registry."""
    return f"""version: 0.1
log:
  level: info
  accesslog: {{disabled: true}}
storage:
  filesystem: {{rootdirectory: {d}/registry}}
  delete: {{enabled: true}}
  maintenance: {{uploadpurging: {{enabled: false}}}}
http:
  addr: {REGISTRY}
  secret: {secrets.token_hex(16)}
"""


# -- command lines ------------------------------------------------------------------------------
def etcd_argv(bins: Path, d: Path) -> list[str]:
    peer, client = "http://127.0.0.1:23800", "http://127.0.0.1:23790"
    return [
        str(bins / "etcd"),
        "--name=kf",
        f"--data-dir={d}/etcd",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=kf={peer}",
        "--unsafe-no-fsync",  # a throwaway cluster: no fsync wait on every write
        "--log-level=warn",
    ]


def apiserver_argv(bins: Path, d: Path, pki: Pki) -> list[str]:
    return [
        str(bins / "kube-apiserver"),
        "--etcd-servers=http://127.0.0.1:23790",
        f"--bind-address={NODE_IP}",
        f"--advertise-address={NODE_IP}",
        f"--secure-port={API_PORT}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--token-auth-file={pki.token_file}",
        f"--client-ca-file={pki.ca_crt}",
        f"--tls-cert-file={pki.crt('apiserver')}",
        f"--tls-private-key-file={pki.key('apiserver')}",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        f"--kubelet-client-certificate={pki.crt('apiserver-kubelet-client')}",
        f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
        "--kubelet-preferred-address-types=InternalIP",  # kf-node0 resolves nowhere
        f"--cert-dir={d}/apiserver",
        "--profiling=false",
    ]


def controller_manager_argv(bins: Path, d: Path, pki: Pki) -> list[str]:
    return [
        str(bins / "kube-controller-manager"),
        f"--kubeconfig={d}/admin.kubeconfig",
        "--bind-address=127.0.0.1",
        "--leader-elect=false",
        "--use-service-account-credentials=false",
        f"--service-account-private-key-file={pki.sa_key}",
        f"--root-ca-file={pki.ca_crt}",
        f"--controllers={CONTROLLERS}",
        "--profiling=false",
    ]


def scheduler_argv(bins: Path, d: Path) -> list[str]:
    return [
        str(bins / "kube-scheduler"),
        f"--kubeconfig={d}/admin.kubeconfig",
        "--bind-address=127.0.0.1",
        "--leader-elect=false",
    ]


def kubelet_argv(bins: Path, d: Path) -> list[str]:
    return [
        str(bins / "kubelet"),
        f"--config={d}/kubelet.yaml",
        f"--kubeconfig={d}/kubelet.kubeconfig",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={NODE_IP}",
        f"--root-dir={d}/kubelet",
        f"--cert-dir={d}/kubelet/pki",
    ]
