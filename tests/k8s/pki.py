"""The cluster's certificates, keys and tokens, made with ``openssl`` (docs/resource-managers.md
§2.4). Everything is ECDSA P-256: a key takes milliseconds, where RSA takes a good part of a
second on the 2-core VM. Nothing here is cached: each cluster start gets a fresh CA."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: The apiserver certificate's subject alternative names (node/apiserver address, the
#: ``kubernetes`` Service's cluster IP, loopback and the Service's DNS names).
API_SANS = (
    "IP:127.0.0.1",
    "IP:10.98.0.1",
    "IP:10.99.0.1",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
)


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _key(path: Path) -> Path:
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)
    )
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class Pki:
    """Paths of what :func:`make_pki` wrote, and the two static bearer tokens."""

    dir: Path
    admin_token: str
    kubelet_token: str

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    def crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    @property
    def token_file(self) -> Path:
        return self.dir / "tokens.csv"


def _leaf(pki: Pki, name: str, subject: str, usage: str, sans: tuple[str, ...] = ()) -> None:
    key, csr, ext = _key(pki.key(name)), pki.dir / f"{name}.csr", pki.dir / f"{name}.ext"
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    ext.write_text("\n".join(lines) + "\n")
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(pki.ca_crt), "-CAkey", str(pki.ca_key),
        "-CAcreateserial", "-days", "30", "-sha256", "-extfile", str(ext),
        "-out", str(pki.crt(name)),
    )  # fmt: skip
    csr.unlink()
    ext.unlink()


def make_pki(directory: Path) -> Pki:
    """A CA; the apiserver's serving certificate (:data:`API_SANS`); the apiserver's client
    certificate for the kubelet API (``system:masters``); the service-account key pair; and
    ``tokens.csv`` for ``--token-auth-file``: an admin token (``system:masters``, for the
    harness and the controllers) and the kubelet's (``system:node:kf-node0`` in
    ``system:nodes``). ServiceAccounts are the only other identities."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    pki = Pki(directory, secrets.token_hex(24), secrets.token_hex(24))
    _key(pki.ca_key)
    _openssl(
        "req", "-x509", "-new", "-key", str(pki.ca_key), "-subj", "/CN=kernelfleet-test-ca",
        "-days", "30", "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out", str(pki.ca_crt),
    )  # fmt: skip
    _leaf(pki, "apiserver", "/CN=kube-apiserver", "serverAuth", API_SANS)
    _leaf(
        pki,
        "apiserver-kubelet-client",
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "clientAuth",
    )
    _key(pki.sa_key)
    _openssl("pkey", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub))
    pki.token_file.write_text(
        f'{pki.admin_token},kf-admin,kf-admin,"system:masters"\n'
        f'{pki.kubelet_token},system:node:kf-node0,kf-node0,"system:nodes"\n'
    )
    pki.token_file.chmod(0o600)
    return pki
