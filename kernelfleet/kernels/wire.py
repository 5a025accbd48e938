"""Pure conversions between Jupyter ZMQ frames and websocket frames.

The bridge never re-serialises message content on its way to a client: header, parent header,
metadata and content already arrive as JSON from the kernel, so a legacy websocket frame is
built by splicing those bytes into an envelope, and a ``v1.kernel.websocket.jupyter.org`` frame
by concatenating them behind an offset table. Only the header is parsed, once, to learn the
message id and type (and, for ``status`` messages, the content, to track ``execution_state``).
"""

from __future__ import annotations

import json
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.session import Session
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)

from kernelfleet.kernels.record import format_timestamp, utcnow

DELIM = b"<IDS|MSG>"
V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
CHANNELS = frozenset({"shell", "control", "stdin", "iopub"})


class WireError(ValueError):
    """A frame that is not a valid Jupyter message (logged and dropped, never fatal)."""


@dataclass(eq=False)
class KernelMessage:
    """One message from the kernel, kept as its raw parts plus the parsed header.

    ``parts`` are ``[header, parent_header, metadata, content, *buffers]`` as bytes. Encodings for
    each websocket protocol are computed once and shared by every connection.
    """

    channel: str
    parts: list[bytes]
    header: dict[str, Any]
    _encoded: dict[str, bytes] = field(default_factory=dict)

    @property
    def msg_type(self) -> str:
        return str(self.header.get("msg_type", ""))

    @property
    def msg_id(self) -> str:
        return str(self.header.get("msg_id", ""))

    @property
    def buffers(self) -> list[bytes]:
        return self.parts[4:]

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts)

    def parent_msg_id(self) -> str | None:
        try:
            parent = json.loads(self.parts[1])
        except ValueError:
            return None
        return parent.get("msg_id") if isinstance(parent, dict) else None

    def content(self) -> dict[str, Any]:
        value = json.loads(self.parts[3])
        return value if isinstance(value, dict) else {}

    def legacy_json(self) -> bytes:
        """The legacy text frame, buffers dropped (see :func:`legacy_binary` to keep them)."""
        out = self._encoded.get("legacy")
        if out is None:
            h, p, m, c = self.parts[:4]
            out = b"".join(
                (
                    b'{"header":',
                    h,
                    b',"parent_header":',
                    p,
                    b',"metadata":',
                    m,
                    b',"content":',
                    c,
                    b',"buffers":[],"channel":"',
                    self.channel.encode(),
                    b'","msg_id":',
                    json.dumps(self.msg_id).encode(),
                    b',"msg_type":',
                    json.dumps(self.msg_type).encode(),
                    b"}",
                )
            )
            self._encoded["legacy"] = out
        return out

    def legacy_binary(self) -> bytes:
        """The legacy binary frame (JSON message + buffers behind a 32-bit offset table)."""
        out = self._encoded.get("legacy-binary")
        if out is None:
            head = self.legacy_json()
            bufs = [head, *self.buffers]
            nbufs = len(bufs)
            offsets = [4 * (nbufs + 1)]
            for buf in bufs[:-1]:
                offsets.append(offsets[-1] + len(buf))
            out = struct.pack("!" + "I" * (nbufs + 1), nbufs, *offsets) + b"".join(bufs)
            self._encoded["legacy-binary"] = out
        return out

    def v1(self) -> bytes:
        out = self._encoded.get("v1")
        if out is None:
            out = serialize_msg_to_ws_v1(self.parts, self.channel)  # type: ignore[no-untyped-call]
            self._encoded["v1"] = out
        return out


def split_zmq(frames: list[bytes]) -> tuple[list[bytes], bytes, list[bytes]]:
    """Split a ZMQ multipart message into (identities, signature, parts)."""
    try:
        idx = frames.index(DELIM)
    except ValueError:
        raise WireError("no <IDS|MSG> delimiter") from None
    if len(frames) < idx + 6:
        raise WireError("message has fewer than four parts")
    return frames[:idx], frames[idx + 1], frames[idx + 2 :]


def verify(session: Session, signature: bytes, parts: list[bytes]) -> bool:
    """Check the HMAC of a kernel message (always true when the kernel runs without a key)."""
    if session.auth is None:
        return True
    import hmac

    return hmac.compare_digest(session.sign(parts[:4]), signature)


def parse_kernel_message(session: Session, channel: str, frames: list[bytes]) -> KernelMessage:
    _, sig, parts = split_zmq(frames)
    if not verify(session, sig, parts):
        raise WireError("invalid HMAC signature")
    try:
        header = json.loads(parts[0])
    except ValueError as exc:
        raise WireError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise WireError("header is not a JSON object")
    return KernelMessage(channel, parts, header)


def to_zmq(session: Session, parts: list[bytes]) -> list[bytes]:
    """Sign client-sent parts ``[header, parent, metadata, content, *buffers]`` for the kernel."""
    return [DELIM, session.sign(parts[:4]), *parts]


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def parse_client_frame(data: str | bytes, protocol: str | None) -> tuple[str, list[bytes]]:
    """Decode one frame from a websocket client into (channel, parts).

    Accepts legacy JSON text frames, legacy binary frames (a message carrying buffers), and v1
    binary frames. Raises :class:`WireError` for anything else.
    """
    try:
        if protocol == V1_PROTOCOL and isinstance(data, bytes):
            channel, parts = deserialize_msg_from_ws_v1(data)  # type: ignore[no-untyped-call]
            parts = [bytes(p) for p in parts]
        elif isinstance(data, bytes):
            msg = deserialize_binary_message(data)  # type: ignore[no-untyped-call]
            channel, parts = _parts_from_dict(msg)
        else:
            msg = json.loads(data)
            if not isinstance(msg, dict):
                raise WireError("frame is not a JSON object")
            channel, parts = _parts_from_dict(msg)
    except WireError:
        raise
    except Exception as exc:
        raise WireError(f"undecodable frame: {exc}") from None
    if channel not in CHANNELS or channel == "iopub":
        raise WireError(f"unknown or read-only channel {channel!r}")
    if len(parts) < 4:
        raise WireError("message has fewer than four parts")
    return channel, parts


def _parts_from_dict(msg: dict[str, Any]) -> tuple[str, list[bytes]]:
    # No channel means shell, as in jupyter_server and Kernel Gateway: jupyter_server's own
    # GatewayKernelClient (ChannelQueue.send) never sets one.
    channel = msg.get("channel", "shell")
    if not isinstance(channel, str):
        raise WireError("message has no valid channel")
    header = msg.get("header")
    if not isinstance(header, dict) or "msg_type" not in header:
        raise WireError("message has no header")
    buffers = [b if isinstance(b, bytes) else bytes(b) for b in msg.get("buffers") or []]
    parts = [
        _dump(header),
        _dump(msg.get("parent_header") or {}),
        _dump(msg.get("metadata") or {}),
        _dump(msg.get("content") or {}),
        *buffers,
    ]
    return channel, parts


def status_message(state: str, session_id: str = "kernelfleet") -> KernelMessage:
    """A gateway-made iopub ``status`` message (e.g. ``restarting``/``dead``) for clients."""
    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": "status",
        "session": session_id,
        "username": "kernelfleet",
        "date": format_timestamp(utcnow()),
        "version": "5.3",
    }
    parts = [_dump(header), b"{}", b"{}", _dump({"execution_state": state})]
    return KernelMessage("iopub", parts, header)
