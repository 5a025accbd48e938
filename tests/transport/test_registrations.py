"""What a registration accepts, judged frame by frame (``ResponseListener.receive``, no TCP):
exactly one authentic, fresh, valid payload; everything else is refused with its reason and
logged once, and a refusal does not spoil the launch."""

from __future__ import annotations

import asyncio
import base64
import logging
import time

import pytest

from kernelfleet.errors import Conflict, LaunchFailed, LaunchTimeout
from kernelfleet.launchers import respond
from kernelfleet.transport.listener import Reason, ResponseListener
from tests.transport.helpers import frame, info, wrong_key

PEER = "10.1.2.3"


def rejections(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_registration_gives_the_launcher_its_env(listener: ResponseListener) -> None:
    with await listener.expect("k1") as reg:
        env = reg.env
        assert set(env) == {"KF_RESPONSE_ADDRESS", "KF_RESPONSE_KEY", "KF_RESPONSE_KERNEL_ID"}
        assert env["KF_RESPONSE_ADDRESS"] == f"127.0.0.1:{listener.bound_address[1]}"
        assert base64.b64decode(env["KF_RESPONSE_KEY"]) == reg.key and len(reg.key) == 32
        assert env["KF_RESPONSE_KERNEL_ID"] == "k1"
        assert respond.read_env(env) == ("127.0.0.1", listener.bound_address[1], reg.key, "k1")
        assert env["KF_RESPONSE_KEY"] not in repr(reg) and "k1" in repr(reg)


async def test_each_registration_gets_its_own_key(listener: ResponseListener) -> None:
    keys = set()
    for i in range(10):
        with await listener.expect(f"k{i}") as reg:
            keys.add(reg.key)
    assert len(keys) == 10


async def test_the_valid_payload_resolves_wait(listener: ResponseListener) -> None:
    with await listener.expect("k1") as reg:
        assert listener.receive(frame("k1", reg.key, info()), PEER) is Reason.OK
        got = await asyncio.wait_for(reg.wait(), 1)
        assert got["shell_port"] == 40001 and got["ip"] == "10.0.0.7" and reg.peer == PEER
        assert await reg.wait() == got  # may be awaited again


async def test_a_wildcard_ip_becomes_the_senders_address(listener: ResponseListener) -> None:
    with await listener.expect("k1") as reg:
        listener.receive(frame("k1", reg.key, info(ip="0.0.0.0")), PEER)
        assert (await reg.wait())["ip"] == PEER


async def test_a_replayed_frame_is_refused_even_after_the_registration_is_gone(
    listener: ResponseListener, caplog: pytest.LogCaptureFixture
) -> None:
    with await listener.expect("k1") as reg:
        data = frame("k1", reg.key)
        assert listener.receive(data, PEER) is Reason.OK
        assert listener.receive(data, PEER) is Reason.REPLAYED
    assert listener.receive(data, PEER) is Reason.REPLAYED
    with await listener.expect("k1") as again:  # a restart: the old frame does not count
        assert listener.receive(data, PEER) is Reason.REPLAYED
        assert not again.done


async def test_a_second_valid_payload_is_refused_and_the_first_stands(
    listener: ResponseListener,
) -> None:
    with await listener.expect("k1") as reg:
        assert listener.receive(frame("k1", reg.key, info(pid=1)), PEER) is Reason.OK
        assert listener.receive(frame("k1", reg.key, info(pid=2)), PEER) is Reason.DUPLICATE
        assert (await reg.wait())["pid"] == 1


async def test_forged_frames_are_refused_and_the_launch_still_succeeds(
    listener: ResponseListener, caplog: pytest.LogCaptureFixture
) -> None:
    with await listener.expect("k1") as reg:
        for _ in range(3):
            assert listener.receive(frame("k1", wrong_key()), PEER) is Reason.AUTH_FAILED
        assert not reg.done
        assert listener.receive(frame("k1", reg.key), PEER) is Reason.OK
        assert (await reg.wait())["pid"] == 4242
    logged = rejections(caplog)
    assert len(logged) == 3 and all(PEER in m and "auth_failed" in m for m in logged)


async def test_a_frame_for_no_registered_kernel_is_refused(
    listener: ResponseListener, caplog: pytest.LogCaptureFixture
) -> None:
    assert listener.receive(frame("nobody", wrong_key()), PEER) is Reason.UNKNOWN_KERNEL
    assert len(rejections(caplog)) == 1 and "unknown_kernel" in rejections(caplog)[0]


@pytest.mark.parametrize("offset", [-121, 121, -3600])
async def test_a_stale_or_future_timestamp_is_refused(
    listener: ResponseListener, offset: float
) -> None:
    with await listener.expect("k1") as reg:
        late = frame("k1", reg.key, info(timestamp=time.time() + offset))
        assert listener.receive(late, PEER) is Reason.STALE
        assert not reg.done
        assert listener.receive(frame("k1", reg.key), PEER) is Reason.OK


async def test_an_invalid_authentic_payload_is_refused_without_failing_the_launch(
    listener: ResponseListener,
) -> None:
    with await listener.expect("k1") as reg:
        assert listener.receive(frame("k1", reg.key, info(hb_port=70000)), PEER) is Reason.INVALID
        assert listener.receive(frame("k1", reg.key, {"x": 1}), PEER) is Reason.INVALID
        assert not reg.done
        assert listener.receive(frame("k1", reg.key), PEER) is Reason.OK


async def test_malformed_bytes_are_refused_and_logged_once(
    listener: ResponseListener, caplog: pytest.LogCaptureFixture
) -> None:
    assert listener.receive(b"GET / HTTP/1.0\r\n\r\n", PEER) is Reason.BAD_MAGIC
    (message,) = rejections(caplog)
    assert message.startswith(f"response listener refused a frame from {PEER}: bad_magic")


async def test_keys_never_reach_the_log(
    listener: ResponseListener, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with await listener.expect("k1") as reg:
        listener.receive(frame("k1", wrong_key()), PEER)
        listener.receive(frame("k1", reg.key, info(key="s3cr3t-hmac")), PEER)
        listener.receive(frame("k1", reg.key, info(key="s3cr3t-hmac")), PEER)
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert "s3cr3t" not in text and reg.env["KF_RESPONSE_KEY"] not in text


async def test_a_failure_report_fails_the_launch_at_once(listener: ResponseListener) -> None:
    with await listener.expect("k1") as reg:
        report = {"error": "the kernel exited with status 7", "pid": 9, "timestamp": time.time()}
        assert listener.receive(frame("k1", reg.key, report), PEER) is Reason.OK
        with pytest.raises(LaunchFailed, match="exited with status 7"):
            await reg.wait()
        assert listener.receive(frame("k1", reg.key), PEER) is Reason.DUPLICATE


async def test_the_deadline_fails_wait_and_ends_the_registration(
    listener: ResponseListener,
) -> None:
    loop = asyncio.get_running_loop()
    reg = await listener.expect("k1", deadline=loop.time() + 0.05)
    with pytest.raises(LaunchTimeout, match="KF_RESPONSE_ADDRESS"):
        await asyncio.wait_for(reg.wait(), 2)
    assert listener.receive(frame("k1", reg.key), PEER) is Reason.UNKNOWN_KERNEL


async def test_leaving_the_registration_cancels_it(listener: ResponseListener) -> None:
    with await listener.expect("k1") as reg:
        waiter = asyncio.ensure_future(reg.wait())
        await asyncio.sleep(0)
    with pytest.raises(LaunchFailed, match="cancelled"):
        await waiter
    assert listener.receive(frame("k1", reg.key), PEER) is Reason.UNKNOWN_KERNEL
    reg.cancel()  # idempotent


async def test_cancelling_a_waiter_leaves_the_registration_open(
    listener: ResponseListener,
) -> None:
    with await listener.expect("k1") as reg:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reg.wait(), 0.01)
        assert listener.receive(frame("k1", reg.key), PEER) is Reason.OK
        assert (await reg.wait())["pid"] == 4242


async def test_a_kernel_waits_in_one_registration_at_a_time(listener: ResponseListener) -> None:
    with await listener.expect("k1") as first:
        with pytest.raises(Conflict):
            await listener.expect("k1")
        listener.receive(frame("k1", first.key), PEER)
        with await listener.expect("k1") as second:  # answered: a restart may register anew
            assert second.key != first.key and not second.done


@pytest.mark.parametrize("kernel_id", ["", "a/b", "x" * 129, "-x", "a b", "é"])
async def test_a_kernel_id_that_cannot_be_framed_is_not_registered(
    listener: ResponseListener, kernel_id: str
) -> None:
    with pytest.raises(ValueError):
        await listener.expect(kernel_id)


async def test_closing_the_listener_fails_pending_launches() -> None:
    lst = ResponseListener(ip="127.0.0.1", port=0)
    reg = await lst.expect("k1")
    await lst.close()
    with pytest.raises(LaunchFailed, match="closed"):
        await reg.wait()
