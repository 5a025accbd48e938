"""Pure conversions between Jupyter ZMQ frames and websocket frames.

The bridge never re-serialises message content on its way to a client: header, parent header,
metadata and content already arrive as JSON from the kernel, so a legacy websocket frame is
built by splicing those bytes into an envelope, and a ``v1.kernel.websocket.jupyter.org`` frame
by concatenating them behind an offset table. Only the header is parsed, once, to learn the
message id and type (and, for ``status`` messages, the content, to track ``execution_state``).
"""

from __future__ import annotations

import itertools
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.session import Session
from jupyter_server.services.kernels.connection.base import serialize_msg_to_ws_v1

DELIM = b"<IDS|MSG>"
V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
CHANNELS = frozenset({"shell", "control", "stdin", "iopub"})


class WireError(ValueError):
    """A frame that is not a valid Jupyter message (logged and dropped, never fatal).

    :attr:`reason` is a fixed phrase naming the kind of fault (a caller may log each kind once);
    *detail*, if any, is the variable part, cut to a short length.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail if len(detail) <= 120 else detail[:120] + "…"
        super().__init__(f"{reason}: {self.detail}" if self.detail else reason)


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
    _parent_id: str | None = field(default=None, repr=False)
    _state: str | None = field(default=None, repr=False)

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
        """The parent header's ``msg_id`` (parsed once per message; None if it has none)."""
        if self._parent_id is None:
            try:
                parent = json.loads(self.parts[1])
            except ValueError:
                parent = None
            value = parent.get("msg_id") if isinstance(parent, dict) else None
            self._parent_id = value if isinstance(value, str) else ""
        return self._parent_id or None

    @property
    def execution_state(self) -> str:
        """A ``status`` message's ``execution_state`` (parsed once); "" for other messages."""
        if self._state is None:
            state = ""
            if self.msg_type == "status":
                try:
                    state = str(self.content().get("execution_state") or "")
                except ValueError:
                    state = ""
            self._state = state
        return self._state

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
        raise WireError("header is not JSON", str(exc)) from None
    if not isinstance(header, dict):
        raise WireError("header is not a JSON object")
    return KernelMessage(channel, parts, header)


def to_zmq(session: Session, parts: list[bytes]) -> list[bytes]:
    """Sign client-sent parts ``[header, parent, metadata, content, *buffers]`` for the kernel."""
    return [DELIM, session.sign(parts[:4]), *parts]


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


# -- frames from websocket clients (untrusted) ---------------------------------------------------
#
# Each decoder checks a frame's structure (counts against the frame's length, offsets inside the
# frame and in order) before it slices, decodes or allocates anything, and raises WireError for
# anything else: the cost of a frame is bounded by its length, whatever it declares.

#: Binary buffers a client message may carry; more is refused (each costs a ZMQ frame).
MAX_CLIENT_BUFFERS = 4096
_JSON_PARTS = ("header", "parent_header", "metadata", "content")


def parse_client_frame(data: str | bytes, protocol: str | None) -> tuple[str, list[bytes]]:
    """Decode one frame from a websocket client into (channel, parts).

    Accepts v1 binary frames on the v1 subprotocol, and legacy JSON text frames and legacy
    binary frames (a message carrying buffers) otherwise. Raises :class:`WireError` for
    anything else, including a message for the read-only iopub channel.
    """
    if isinstance(data, str):
        channel, parts = decode_legacy_text(data)
    elif protocol == V1_PROTOCOL:
        channel, parts = decode_v1(data)
    else:
        channel, parts = decode_legacy_binary(data)
    if channel == "iopub":
        raise WireError("message for the read-only iopub channel")
    return channel, parts


def decode_v1(frame: bytes) -> tuple[str, list[bytes]]:
    """Decode a ``v1.kernel.websocket.jupyter.org`` frame into (channel, parts).

    Layout (all integers unsigned 64-bit little-endian): ``n``, then ``n`` offsets from the
    frame's start; the channel name (UTF-8) spans offsets 0..1, part *i* offsets i+1..i+2, and
    the last offset is the frame's end. The first offset is the end of the offset table.
    """
    size = len(frame)
    if size < 8:
        raise WireError("v1 frame shorter than its 8-byte offset count")
    (count,) = struct.unpack_from("<Q", frame)
    if count < 2 + len(_JSON_PARTS):
        raise WireError("v1 frame has fewer than four message parts")
    if count > size // 8 - 1:
        raise WireError("v1 offset table longer than the frame")
    if count > 2 + len(_JSON_PARTS) + MAX_CLIENT_BUFFERS:
        raise WireError(f"v1 frame has more than {MAX_CLIENT_BUFFERS} buffers")
    offsets = struct.unpack_from(f"<{count}Q", frame, 8)
    _check_offsets(offsets, 8 * (count + 1), size, "v1 frame")
    if offsets[-1] != size:
        raise WireError("v1 last offset is not the frame's end")
    try:
        channel = frame[offsets[0] : offsets[1]].decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("v1 channel name is not UTF-8") from None
    if channel not in CHANNELS:
        raise WireError("unknown channel", _shown(channel))
    parts = [frame[start:end] for start, end in itertools.pairwise(offsets[1:])]
    for name, raw in zip(_JSON_PARTS, parts, strict=False):
        header = _json_object(raw, f"message {name}")
        if name == "header" and not isinstance(header.get("msg_type"), str):
            raise WireError("message header has no msg_type")
    return channel, parts


def decode_legacy_binary(frame: bytes) -> tuple[str, list[bytes]]:
    """Decode a legacy binary frame: a JSON message and its buffers, into (channel, parts).

    Layout (unsigned 32-bit big-endian): ``n``, then ``n`` offsets from the frame's start; part
    *i* runs from offset *i* to the next offset (the last to the frame's end). Part 0, which
    starts right after the offset table, is the message as JSON; the others are its buffers.
    """
    size = len(frame)
    if size < 4:
        raise WireError("binary frame shorter than its 4-byte part count")
    (count,) = struct.unpack_from("!I", frame)
    if count < 1:
        raise WireError("binary frame declares no parts")
    if count > size // 4 - 1:
        raise WireError("binary frame's offset table longer than the frame")
    if count > 1 + MAX_CLIENT_BUFFERS:
        raise WireError(f"binary frame has more than {MAX_CLIENT_BUFFERS} buffers")
    offsets = struct.unpack_from(f"!{count}I", frame, 4)
    _check_offsets(offsets, 4 * (count + 1), size, "binary frame")
    bounds = (*offsets, size)
    msg = _json_object(frame[bounds[0] : bounds[1]], "binary frame's JSON message")
    buffers = [frame[start:end] for start, end in itertools.pairwise(bounds[1:])]
    return _parts_from_dict(msg, buffers)


def decode_legacy_text(text: str) -> tuple[str, list[bytes]]:
    """Decode a legacy JSON text frame into (channel, parts); it carries no buffers."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WireError("frame is not valid JSON", str(exc)) from None
    if not isinstance(msg, dict):
        raise WireError("frame is not a JSON object")
    return _parts_from_dict(msg, [])


def _check_offsets(offsets: tuple[int, ...], table_end: int, size: int, what: str) -> None:
    if offsets[0] != table_end:
        raise WireError(f"{what} does not start right after its offset table")
    if any(later < earlier for earlier, later in itertools.pairwise(offsets)):
        raise WireError(f"{what} offsets decrease")
    if offsets[-1] > size:
        raise WireError(f"{what} offset past the frame's end")


def _shown(value: Any) -> str:
    """A short, printable form of a client-sent value for a log line."""
    return ascii(value[:40]) if isinstance(value, str) else type(value).__name__


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise WireError(f"{what} is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise WireError(f"{what} is not valid JSON", str(exc)) from None
    if not isinstance(value, dict):
        raise WireError(f"{what} is not a JSON object")
    return value


def _parts_from_dict(msg: dict[str, Any], buffers: list[bytes]) -> tuple[str, list[bytes]]:
    # No channel means shell, as in jupyter_server and Kernel Gateway: jupyter_server's own
    # GatewayKernelClient (ChannelQueue.send) never sets one. A "buffers" key in the JSON is
    # ignored: buffers travel only as binary parts.
    channel = msg.get("channel", "shell")
    if not isinstance(channel, str) or channel not in CHANNELS:
        raise WireError("unknown channel", _shown(channel))
    header = msg.get("header")
    if not isinstance(header, dict) or not isinstance(header.get("msg_type"), str):
        raise WireError("message header has no msg_type")
    values: list[dict[str, Any]] = [header]
    for name in _JSON_PARTS[1:]:
        value = msg.get(name)
        if value is None:
            value = {}
        elif not isinstance(value, dict):
            raise WireError(f"message {name} is not a JSON object")
        values.append(value)
    try:
        parts = [_dump(value) for value in values]
    except (ValueError, RecursionError) as exc:  # nested deeper than the encoder allows
        raise WireError("message cannot be re-encoded", str(exc)) from None
    return channel, [*parts, *buffers]
