"""The runner's frames: queued for one write per turn, or written at once when a commit's answers are in."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest

from covey.errors import CoveyError
from covey.runtime.protocol import MAX_FRAME, FrameBuffer, FrameWriter, flush_queued_frames


def _received_now(sock: socket.socket) -> bytes:
    """What has arrived on ``sock`` without waiting (b"" if nothing)."""
    try:
        return sock.recv(65536, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


def _frames(data: bytes) -> list[dict[str, object]]:
    found = []
    while data:
        size = int.from_bytes(data[:4], "big")
        found.append(orjson.loads(data[4 : 4 + size]))
        data = data[4 + size :]
    return found


async def test_queued_frames_leave_together_on_the_next_turn() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        _, writer = await asyncio.open_connection(sock=ours)
        frames = FrameWriter(writer)
        frames.queue({"id": 1, "ok": {}})
        frames.queue({"id": 2, "ok": {"leases": []}})
        assert _received_now(theirs) == b""  # nothing is written inside the turn that queued

        await asyncio.sleep(0)
        assert _frames(_received_now(theirs)) == [{"id": 1, "ok": {}}, {"id": 2, "ok": {"leases": []}}]
        writer.close()


async def test_flushing_writes_every_queued_frame_before_the_turn_ends() -> None:
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        writers = []
        for ours, _ in pairs:
            _, writer = await asyncio.open_connection(sock=ours)
            writers.append(writer)
            FrameWriter(writer).queue({"id": len(writers), "ok": {}})

        flush_queued_frames()

        assert [_frames(_received_now(theirs)) for _, theirs in pairs] == [
            [{"id": 1, "ok": {}}],
            [{"id": 2, "ok": {}}],
        ]
        await asyncio.sleep(0)  # the turn's own flush then finds nothing left to write
        assert [_received_now(theirs) for _, theirs in pairs] == [b"", b""]
        for writer in writers:
            writer.close()
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def _frame(message: dict[str, object]) -> bytes:
    body = orjson.dumps(message)
    return len(body).to_bytes(4, "big") + body


def test_a_frame_buffer_cuts_frames_whichever_way_the_bytes_arrive() -> None:
    stream = _frame({"id": 1, "op": "report"}) + _frame({"id": 2, "op": "claim"})
    whole = FrameBuffer()
    assert whole.feed(stream) == [{"id": 1, "op": "report"}, {"id": 2, "op": "claim"}]
    assert whole.pending == 0

    bytewise = FrameBuffer()
    got = [frame for i in range(len(stream)) for frame in bytewise.feed(stream[i : i + 1])]
    assert got == [{"id": 1, "op": "report"}, {"id": 2, "op": "claim"}]

    split = FrameBuffer()
    assert split.feed(stream[:7]) == []
    assert split.pending == 7
    assert split.feed(stream[7:]) == [{"id": 1, "op": "report"}, {"id": 2, "op": "claim"}]

    first = len(_frame({"id": 1, "op": "report"}))
    tail = FrameBuffer()  # one read completes a frame and starts the next: the start is kept
    assert tail.feed(stream[: first + 3]) == [{"id": 1, "op": "report"}]
    assert tail.pending == 3
    assert tail.feed(stream[first + 3 :]) == [{"id": 2, "op": "claim"}]
    assert tail.pending == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ((MAX_FRAME + 1).to_bytes(4, "big"), "over the limit"),
        (b"\x00\x00\x00\x03{x}", "not JSON"),
        (b"\x00\x00\x00\x02[]", "must be a JSON object"),
    ],
)
def test_a_frame_buffer_refuses_a_bad_frame_by_name(data: bytes, message: str) -> None:
    with pytest.raises(CoveyError, match=message):
        FrameBuffer().feed(data)


async def test_a_frame_sent_at_once_leaves_before_the_turn_ends_with_those_queued_before_it() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        _, writer = await asyncio.open_connection(sock=ours)
        frames = FrameWriter(writer)
        frames.queue({"id": 1, "ok": {}})

        await frames.send({"id": 2, "op": "report"}, at_once=True)  # returns without a turn: nothing to drain

        assert _frames(_received_now(theirs)) == [{"id": 1, "ok": {}}, {"id": 2, "op": "report"}]
        writer.close()
