"""kf-test-kernel: a small Jupyter kernel for scale tests and benchmarks only.

500 ipykernel processes (~55 MB each) do not fit in a 24 GiB test machine next to everything
else; this kernel costs ~12 MB (CPython with pyzmq and nothing else). It speaks the Jupyter
wire protocol 5.3 on the five ports of its connection file (HMAC-SHA256 signatures, CurveZMQ
when the file carries keys, as kernelfleet's SSH kernels do):

* ``kernel_info_request`` (shell and control), ``execute_request`` (the code is run with
  ``exec`` in one namespace; what it prints arrives as ``stream`` messages on iopub; an
  exception is an ``error`` output and reply), ``is_complete_request``, ``comm_info_request``,
  ``shutdown_request`` (control or shell: reply, then exit), ``interrupt_request`` (control);
* heartbeat echo; SIGINT interrupts the running cell (``interrupt_mode`` "signal").

Everything else gets an empty ``…_reply`` with status ``error``, so no client waits forever.
It is a test kernel: ipykernel stays the kernel of every other test.

Usage: ``python -I -S tinykernel.py [--path DIR] -f CONNECTION_FILE``; :func:`kernelspec` writes
that argv (``-S`` skips ``site``, and ``--path`` adds pyzmq's directory back: 4 MB less per kernel).
Imports are few for the same reason: HMAC is computed with the built-in ``_sha256`` rather than
``hmac``/``hashlib``, which would load OpenSSL into every kernel.
"""

from __future__ import annotations

import _sha256  # type: ignore[import-not-found]
import contextlib
import io
import json
import os
import signal
import sys
import time
from typing import Any

if __name__ == "__main__" and "--path" in sys.argv:
    sys.path.append(sys.argv[sys.argv.index("--path") + 1])

import zmq

DELIM = b"<IDS|MSG>"
PROTOCOL = "5.3"
_BLOCK = 64  # SHA-256's block size


def kernelspec(
    python: str = sys.executable, display_name: str = "kf-test-kernel"
) -> dict[str, Any]:
    """A kernel.json dict that runs this kernel with *python* (which must have pyzmq)."""
    zmq_dir = os.path.dirname(os.path.dirname(os.path.abspath(zmq.__file__)))
    return {
        "argv": [
            python,
            "-I",
            "-S",
            os.path.abspath(__file__),
            "--path",
            zmq_dir,
            "-f",
            "{connection_file}",
        ],
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
    }


def hmac_sha256(key: bytes, parts: list[bytes]) -> bytes:
    """The hex HMAC-SHA256 of the concatenated *parts* (RFC 2104), as Jupyter signs."""
    if len(key) > _BLOCK:
        key = _sha256.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = _sha256.sha256(bytes(b ^ 0x36 for b in key))
    for part in parts:
        inner.update(part)
    outer = _sha256.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.hexdigest().encode()


class Wire:
    """Signs, sends and parses messages of one kernel session."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.session = os.urandom(16).hex()
        self.count = 0

    def sign(self, parts: list[bytes]) -> bytes:
        return hmac_sha256(self.key, parts) if self.key else b""

    def parse(self, frames: list[bytes]) -> tuple[list[bytes], dict[str, Any]] | None:
        try:
            at = frames.index(DELIM)
        except ValueError:
            return None
        idents, signature, body = frames[:at], frames[at + 1], frames[at + 2 : at + 6]
        if len(body) < 4 or signature != self.sign(body):
            return None
        try:
            header, parent, metadata, content = (json.loads(part) for part in body)
        except ValueError:
            return None
        msg = {"header": header, "parent_header": parent, "metadata": metadata, "content": content}
        return idents, msg

    def send(
        self,
        sock: zmq.Socket[bytes],
        msg_type: str,
        content: dict[str, Any],
        parent: dict[str, Any],
        idents: list[bytes] | None = None,
    ) -> None:
        self.count += 1
        header = {
            "msg_id": f"{self.session}_{os.getpid()}_{self.count}",
            "msg_type": msg_type,
            "session": self.session,
            "username": "kf-test-kernel",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
            "version": PROTOCOL,
        }
        body = [json.dumps(part).encode() for part in (header, parent, {}, content)]
        sock.send_multipart([*(idents or []), DELIM, self.sign(body), *body])


class Stream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` during a cell: each write becomes a stream message."""

    def __init__(self, kernel: Kernel, name: str) -> None:
        self.kernel = kernel
        self.name = name

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self.kernel.publish("stream", {"name": self.name, "text": text})
        return len(text)


class Kernel:
    def __init__(self, info: dict[str, Any]) -> None:
        self.wire = Wire(str(info.get("key", "")).encode())
        self.ctx = zmq.Context()
        curve = info.get("curve_secretkey")
        url = f"{info.get('transport', 'tcp')}://{info['ip']}:%d"

        def bind(kind: int, port_name: str) -> zmq.Socket[bytes]:
            sock: zmq.Socket[bytes] = self.ctx.socket(kind)
            sock.linger = 0
            if curve:
                sock.curve_server = True
                sock.curve_secretkey = str(curve).encode()
                sock.curve_publickey = str(info["curve_publickey"]).encode()
            sock.bind(url % int(info[port_name]))
            return sock

        self.shell = bind(zmq.ROUTER, "shell_port")
        self.control = bind(zmq.ROUTER, "control_port")
        self.stdin = bind(zmq.ROUTER, "stdin_port")
        self.iopub = bind(zmq.PUB, "iopub_port")
        self.hb = bind(zmq.REP, "hb_port")
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        self.execution_count = 0
        self.parent: dict[str, Any] = {}
        self.running = True

    def publish(self, msg_type: str, content: dict[str, Any]) -> None:
        self.wire.send(self.iopub, msg_type, content, self.parent)

    def status(self, state: str) -> None:
        self.publish("status", {"execution_state": state})

    def kernel_info(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "protocol_version": PROTOCOL,
            "implementation": "kf-test-kernel",
            "implementation_version": "1",
            "language_info": {
                "name": "python",
                "version": sys.version.split()[0],
                "mimetype": "text/x-python",
                "file_extension": ".py",
            },
            "banner": "kf-test-kernel: a small kernel for kernelfleet's scale tests",
            "help_links": [],
        }

    def execute(self, content: dict[str, Any]) -> dict[str, Any]:
        code = str(content.get("code", ""))
        silent = bool(content.get("silent"))
        if not silent:
            self.execution_count += 1
            self.publish("execute_input", {"code": code, "execution_count": self.execution_count})
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = Stream(self, "stdout"), Stream(self, "stderr")
        try:
            exec(compile(code, "<cell>", "exec"), self.namespace)
        except BaseException as exc:  # KeyboardInterrupt too: an interrupted cell
            if isinstance(exc, SystemExit):
                self.running = False
            error = {
                "ename": type(exc).__name__,
                "evalue": str(exc),
                "traceback": [f"{type(exc).__name__}: {exc}"],
            }
            self.publish("error", error)
            return {"status": "error", "execution_count": self.execution_count, **error}
        finally:
            sys.stdout, sys.stderr = out, err
        return {"status": "ok", "execution_count": self.execution_count, "user_expressions": {}}

    def handle(self, sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
        parsed = self.wire.parse(frames)
        if parsed is None:
            return
        idents, msg = parsed
        msg_type = str(msg["header"].get("msg_type", ""))
        self.parent = msg["header"]
        self.status("busy")
        try:
            reply_type = msg_type.replace("_request", "_reply")
            if msg_type == "kernel_info_request":
                reply: dict[str, Any] = self.kernel_info()
            elif msg_type == "execute_request":
                reply = self.execute(msg["content"])
            elif msg_type == "is_complete_request":
                reply = {"status": "complete"}
            elif msg_type == "comm_info_request":
                reply = {"status": "ok", "comms": {}}
            elif msg_type == "interrupt_request":
                reply = {"status": "ok"}
            elif msg_type == "shutdown_request":
                reply = {"status": "ok", "restart": bool(msg["content"].get("restart"))}
                self.running = False
            else:
                reply = {"status": "error", "ename": "NotImplemented", "evalue": msg_type}
                reply["traceback"] = []
            self.wire.send(sock, reply_type, reply, msg["header"], idents)
        finally:
            self.status("idle")

    def serve(self) -> None:
        poller = zmq.Poller()
        for sock in (self.shell, self.control, self.stdin, self.hb):
            poller.register(sock, zmq.POLLIN)
        self.status("starting")
        while self.running:
            try:
                ready = dict(poller.poll())
            except KeyboardInterrupt:
                continue  # an interrupt between cells: nothing runs
            if self.hb in ready:
                self.hb.send_multipart(self.hb.recv_multipart())
            for sock in (self.control, self.shell, self.stdin):
                if sock in ready:
                    self.handle(sock, sock.recv_multipart())
        for sock in (self.shell, self.control, self.stdin, self.iopub, self.hb):
            sock.close(linger=0)
        self.ctx.term()


def main(argv: list[str]) -> int:
    if "--path" in argv:
        at = argv.index("--path")
        del argv[at : at + 2]
    if len(argv) != 2 or argv[0] != "-f":
        print("usage: tinykernel.py [--path DIR] -f CONNECTION_FILE", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        info = json.load(f)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        Kernel(info).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
