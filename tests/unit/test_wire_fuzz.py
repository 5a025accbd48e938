"""Property tests for the decoders of client websocket frames (untrusted input).

For any input a decoder returns a message whose parts lie within the frame, or raises
:class:`WireError`, never another exception; frames built by our own encoders round-trip exactly.
Bounded (a few hundred examples per property) and derandomized, so a CI run is reproducible.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernelfleet.kernels.wire import (
    CHANNELS,
    MAX_CLIENT_BUFFERS,
    V1_PROTOCOL,
    KernelMessage,
    WireError,
    _dump,
    decode_legacy_binary,
    decode_legacy_text,
    decode_v1,
    parse_client_frame,
)

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Whole generated messages cost more to draw: fewer of them.
MESSAGES = settings(FUZZ, max_examples=200)

WRITABLE = sorted(CHANNELS - {"iopub"})

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
headers = st.builds(
    lambda extra, msg_type: {**extra, "msg_type": msg_type},
    json_objects,
    st.text(min_size=1, max_size=20),
)
buffers = st.lists(st.binary(max_size=64), max_size=5)


def _check_decoded(frame: bytes, channel: str, parts: list[bytes], json_copied: bool) -> None:
    """What every successful decode must satisfy."""
    assert channel in CHANNELS
    assert len(parts) >= 4
    assert all(isinstance(p, bytes) for p in parts)
    for raw in parts[:4]:
        assert isinstance(json.loads(raw), dict)
    assert isinstance(json.loads(parts[0]).get("msg_type"), str)
    within = parts[4:] if json_copied else parts
    assert sum(len(p) for p in within) <= len(frame)
    for part in within:
        assert part in frame


def _decode_or_wire_error(decoder: Any, frame: bytes, json_copied: bool) -> None:
    try:
        channel, parts = decoder(frame)
    except WireError as exc:
        assert exc.reason and len(str(exc)) < 300
        return
    _check_decoded(frame, channel, parts, json_copied)


# -- arbitrary bytes -------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=512))
def test_v1_decoder_on_arbitrary_bytes(frame: bytes) -> None:
    _decode_or_wire_error(decode_v1, frame, json_copied=False)


@FUZZ
@given(st.binary(max_size=512))
def test_legacy_binary_decoder_on_arbitrary_bytes(frame: bytes) -> None:
    _decode_or_wire_error(decode_legacy_binary, frame, json_copied=True)


@FUZZ
@given(st.text(max_size=300) | json_values.map(json.dumps) | headers.map(json.dumps))
def test_legacy_text_decoder_on_arbitrary_text(text: str) -> None:
    try:
        channel, parts = decode_legacy_text(text)
    except WireError:
        return
    _check_decoded(text.encode("utf-8", "surrogatepass"), channel, parts, json_copied=True)


# -- structurally plausible frames: a count, offsets, a body ------------------------------------


segments = st.one_of(
    headers.map(_dump), json_objects.map(_dump), json_values.map(_dump), st.binary(max_size=40)
)


@st.composite
def _perturbed(
    draw: st.DrawFn, count: int, offsets: list[int], width: int
) -> tuple[int, list[int]]:
    """Mostly the true count and offsets; else one of them replaced by a plausible or huge value."""
    top = 2 ** (8 * width) - 1
    how = draw(st.sampled_from(["none", "none", "count", "offset", "offsets"]))
    if how == "count":
        count = draw(st.integers(min_value=0, max_value=count + 3) | st.integers(0, top))
    elif how == "offset":
        at = draw(st.integers(min_value=0, max_value=len(offsets) - 1))
        offsets[at] = draw(
            st.integers(min_value=0, max_value=offsets[-1] + 16) | st.integers(0, top)
        )
    elif how == "offsets":
        offsets = sorted(
            draw(
                st.lists(
                    st.integers(0, offsets[-1] + 8), min_size=len(offsets), max_size=len(offsets)
                )
            )
        )
    return count, offsets


@st.composite
def _tail(draw: st.DrawFn, frame: bytes) -> bytes:
    how = draw(st.sampled_from(["none", "none", "grow", "cut"]))
    if how == "grow":
        return frame + draw(st.binary(min_size=1, max_size=16))
    if how == "cut":
        return frame[: draw(st.integers(min_value=0, max_value=len(frame)))]
    return frame


@st.composite
def plausible_v1(draw: st.DrawFn) -> bytes:
    """A v1 frame whose table matches its parts, then perhaps a count, offset or length off."""
    channel = draw(st.sampled_from([b"shell", b"stdin", b"iopub", b"nope", b"\xff\xfe", b""]))
    if draw(st.booleans()):
        parts = [draw(headers.map(_dump)), *(draw(json_objects.map(_dump)) for _ in range(3))]
        parts += draw(buffers)
    else:
        parts = draw(st.lists(segments, max_size=8))
    offsets = [8 * (len(parts) + 3)]
    for chunk in (channel, *parts):
        offsets.append(offsets[-1] + len(chunk))
    count, offsets = draw(_perturbed(len(offsets), offsets, 8))
    table = struct.pack(f"<{len(offsets) + 1}Q", count, *offsets)
    return draw(_tail(table + channel + b"".join(parts)))


@st.composite
def plausible_legacy(draw: st.DrawFn) -> bytes:
    """A legacy binary frame whose table matches its parts, then perhaps something off."""
    if draw(st.booleans()):
        envelope = {"header": draw(headers), "channel": draw(st.sampled_from(["shell", "x"]))}
        envelope.update(
            draw(st.dictionaries(st.sampled_from(["content", "metadata"]), json_values))
        )
        message = json.dumps(envelope).encode()
    else:
        message = draw(segments)
    parts = [message, *draw(buffers)]
    offsets = [4 * (len(parts) + 1)]
    for chunk in parts[:-1]:
        offsets.append(offsets[-1] + len(chunk))
    count, offsets = draw(_perturbed(len(offsets), offsets, 4))
    table = struct.pack(f"!{len(offsets) + 1}I", count, *offsets)
    return draw(_tail(table + b"".join(parts)))


@FUZZ
@given(plausible_v1())
def test_v1_decoder_on_plausible_frames(frame: bytes) -> None:
    _decode_or_wire_error(decode_v1, frame, json_copied=False)


@FUZZ
@given(plausible_legacy())
def test_legacy_binary_decoder_on_plausible_frames(frame: bytes) -> None:
    _decode_or_wire_error(decode_legacy_binary, frame, json_copied=True)


# -- round trips through our encoders, and their mutations --------------------------------------


@st.composite
def messages(draw: st.DrawFn) -> KernelMessage:
    header = draw(headers)
    parts = [_dump(header), *(_dump(draw(json_objects)) for _ in range(3)), *draw(buffers)]
    return KernelMessage(draw(st.sampled_from(WRITABLE)), parts, header)


@MESSAGES
@given(messages())
def test_v1_frames_round_trip_exactly(msg: KernelMessage) -> None:
    assert decode_v1(msg.v1()) == (msg.channel, msg.parts)
    assert parse_client_frame(msg.v1(), V1_PROTOCOL) == (msg.channel, msg.parts)


@MESSAGES
@given(messages())
def test_legacy_binary_frames_round_trip_exactly(msg: KernelMessage) -> None:
    assert decode_legacy_binary(msg.legacy_binary()) == (msg.channel, msg.parts)
    assert parse_client_frame(msg.legacy_binary(), None) == (msg.channel, msg.parts)
    # the text frame carries no buffers
    assert parse_client_frame(msg.legacy_json().decode(), None) == (msg.channel, msg.parts[:4])


@MESSAGES
@given(messages(), st.data())
def test_mutated_frames_decode_or_raise_wire_error(msg: KernelMessage, data: st.DataObject) -> None:
    for decoder, frame, copied in (
        (decode_v1, msg.v1(), False),
        (decode_legacy_binary, msg.legacy_binary(), True),
    ):
        mutated = bytearray(frame)
        for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
            how = data.draw(st.sampled_from(["flip", "cut", "grow"]))
            if how == "flip" and mutated:
                at = data.draw(st.integers(min_value=0, max_value=len(mutated) - 1))
                mutated[at] = data.draw(st.integers(min_value=0, max_value=255))
            elif how == "cut":
                del mutated[data.draw(st.integers(min_value=0, max_value=len(mutated))) :]
            else:
                mutated += data.draw(st.binary(min_size=1, max_size=16))
        _decode_or_wire_error(decoder, bytes(mutated), copied)


def test_buffer_count_is_bounded() -> None:
    header = {"msg_type": "comm_msg"}
    parts = [_dump(header), b"{}", b"{}", b"{}"]
    ok = KernelMessage("shell", [*parts, *([b""] * MAX_CLIENT_BUFFERS)], header)
    assert len(decode_v1(ok.v1())[1]) == 4 + MAX_CLIENT_BUFFERS
    assert len(decode_legacy_binary(ok.legacy_binary())[1]) == 4 + MAX_CLIENT_BUFFERS
    over = KernelMessage("shell", [*parts, *([b""] * (MAX_CLIENT_BUFFERS + 1))], header)
    for decoder, frame in ((decode_v1, over.v1()), (decode_legacy_binary, over.legacy_binary())):
        try:
            decoder(frame)
        except WireError as exc:
            assert "buffers" in str(exc)
        else:
            raise AssertionError("a frame over the buffer limit was accepted")
