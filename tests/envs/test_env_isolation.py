"""Building is running other people's code: a package whose build backend spies (a real
sdist, from a real index the test serves, built for real by uv in the sandbox) finds no
gateway secret and no way out but the package index."""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import tarfile
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from textwrap import dedent

import pytest

from tests.conftest import TOKEN, client_for
from tests.envs.conftest import EnvDirs, env_gateway, finished

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.geteuid() != 0, reason="the build sandbox switches users: root only"),
]

BACKEND = """
import base64, hashlib, json, os, socket, urllib.request, zipfile

CHECKS = json.loads({checks!r})


def _try(fn):
    try:
        fn()
        return True
    except Exception as exc:
        return type(exc).__name__


def _connect(host, port):
    socket.create_connection((host, port), 3).close()


def _read(path):
    with open(path, "rb") as fh:
        fh.read(1)


def _through_proxy(url):
    urllib.request.urlopen(url, timeout=5).read(1)


def report():
    env = dict(os.environ)
    return {{
        "uid": os.getuid(),
        "env_names": sorted(env),
        "token_in_env": any(CHECKS["token"] in v for v in env.values()),
        "store_key": _try(lambda: _read(CHECKS["key"])),
        "gateway_environ": _try(lambda: _read("/proc/%d/environ" % CHECKS["gateway_pid"])),
        "gateway_port": _try(lambda: _connect("127.0.0.1", CHECKS["gateway_port"])),
        "gateway_via_bridge": _try(lambda: _connect(CHECKS["outside_ip"], CHECKS["gateway_port"])),
        "internet_direct": _try(lambda: _connect("151.101.0.223", 443)),
        "other_host_via_proxy": _try(lambda: _through_proxy("https://example.com/")),
    }}


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    body = "REPORT = " + repr(json.dumps(report())) + "\\n"
    files = {{
        "kf_spy_report.py": body.encode(),
        "kf_spy-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\\nName: kf-spy\\nVersion: 0.1\\n",
        "kf_spy-0.1.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\\nGenerator: spy\\nRoot-Is-Purelib: true\\n"
            b"Tag: py3-none-any\\n"
        ),
    }}
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (name, digest, len(data)))
    record.append("kf_spy-0.1.dist-info/RECORD,,")
    files["kf_spy-0.1.dist-info/RECORD"] = ("\\n".join(record) + "\\n").encode()
    name = "kf_spy-0.1-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)
    return name
"""

PYPROJECT = dedent("""\
    [build-system]
    requires = []
    build-backend = "spy_backend"
    backend-path = ["."]

    [project]
    name = "kf-spy"
    version = "0.1"
    """)


def sdist(checks: dict[str, object]) -> bytes:
    files = {
        "kf_spy-0.1/pyproject.toml": PYPROJECT.encode(),
        "kf_spy-0.1/spy_backend.py": BACKEND.format(checks=json.dumps(checks)).encode(),
        "kf_spy-0.1/PKG-INFO": b"Metadata-Version: 2.1\nName: kf-spy\nVersion: 0.1\n",
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class Index:
    """A PEP 503 index: kf-spy from here, every other project's page from PyPI (its files
    stay on files.pythonhosted.org)."""

    def __init__(self) -> None:
        self.sdist = b""
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/simple/kf-spy":
                    digest = hashlib.sha256(index.sdist).hexdigest()
                    page = (
                        f'<a href="/files/kf_spy-0.1.tar.gz#sha256={digest}">kf_spy-0.1.tar.gz</a>'
                    )
                    self._send(page.encode(), "text/html")
                elif self.path == "/files/kf_spy-0.1.tar.gz":
                    self._send(index.sdist, "application/octet-stream")
                elif self.path.startswith("/simple/"):
                    req = urllib.request.Request(
                        "https://pypi.org" + self.path,
                        headers={"Accept": self.headers.get("Accept", "text/html")},
                    )
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        self._send(resp.read(), resp.headers.get("Content-Type", "text/html"))
                else:
                    self.send_error(404)

            def _send(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def index() -> Iterator[Index]:
    served = Index()
    yield served
    served.close()


@pytest.fixture
def open_data_dir() -> Iterator[Path]:
    """The gateway's data directory where anyone may pass, so that only the store key's own
    mode (0600) keeps a build from it."""
    path = Path("/opt/kernelfleet-test") / f"gw-data-{secrets.token_hex(4)}"
    path.mkdir(parents=True, mode=0o755)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_a_spying_build_finds_no_secret_and_no_way_out(
    env_dirs: EnvDirs, index: Index, open_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KF_TOKEN", TOKEN)  # as an admin might set it for the gateway
    settings = {
        "index_url": f"http://127.0.0.1:{index.port}/simple",
        "allowed_hosts": ["files.pythonhosted.org"],
        "allow_source_builds": True,
    }
    async with env_gateway(env_dirs, env=settings, Gateway={"data_dir": str(open_data_dir)}) as gw:
        key = open_data_dir / "secret" / "store.key"
        assert key.is_file() and key.stat().st_mode & 0o777 == 0o600
        index.sdist = sdist(
            {
                "token": TOKEN,
                "key": str(key),
                "gateway_pid": os.getpid(),
                "gateway_port": gw.bound_port,
                "outside_ip": "10.88.0.1",
            }
        )
        c = client_for(gw)
        status, body = await c.request(
            "POST",
            "/api/envs",
            {"name": "spied", "packages": ["kf-spy"], "python": "3.11", "allow_source": True},
        )
        assert status == 202, body
        job = await finished(c, body["job"])
        assert job["ok"], (job["error"], job["lines"][-8:])
        record = await c.call("GET", "/api/envs/spied")
    site = next(
        (env_dirs.root / "spied" / record["sha256"][:12]).glob("lib/python3*/site-packages")
    )
    text = (site / "kf_spy_report.py").read_text()
    report = json.loads(text.split("=", 1)[1].strip().strip("'\""))
    assert report["uid"] != 0
    assert not report["token_in_env"]
    assert not [n for n in report["env_names"] if n.startswith(("KF_", "JUPYTER"))], report
    assert report["store_key"] == "PermissionError", report
    assert report["gateway_environ"] is not True, report  # not even its pid: own /proc
    assert report["gateway_port"] is not True, report  # its own loopback: refused
    assert report["gateway_via_bridge"] is not True, report
    assert report["internet_direct"] is not True, report
    assert report["other_host_via_proxy"] is not True, report  # the proxy answers 403
