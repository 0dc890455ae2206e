"""The wire format of covey's local socket: length-prefixed JSON frames.

Each frame is a 4-byte big-endian length and a JSON object. Requests carry
``id`` and ``op``; the answer carries the same ``id`` and either ``ok`` with
the result or ``error`` with ``type`` and ``message``. Many requests may be in
flight on one connection (a long-poll claim beside a report). No pickle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import Any, Protocol, cast

import orjson

from covey.errors import CoveyError, InputError
from covey.runtime.busy_poll import BusyPoll
from covey.store.base import Lease

__all__ = [
    "MAX_FRAME",
    "FrameBuffer",
    "FrameSink",
    "FrameWriter",
    "FramedProtocol",
    "encode_frame",
    "flush_queued_frames",
    "lease_from_json",
    "read_frame",
]

#: Largest frame accepted, in bytes (a claim of many leases with large inputs fits).
MAX_FRAME = 256 * 1024 * 1024
_HEADER = struct.Struct(">I")

log = logging.getLogger("covey.socket")


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next frame, or None at a clean end of stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError:
        return None
    body = await reader.readexactly(_frame_size(header))
    return _decode(body)


def _frame_size(header: bytes | bytearray) -> int:
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise InputError(f"frame of {size} bytes is over the limit of {MAX_FRAME}")
    return int(size)


def _decode(body: bytes | bytearray | memoryview) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CoveyError(f"protocol error: a frame is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise CoveyError("protocol error: a frame must be a JSON object")
    return value


class FrameBuffer:
    """Frames cut from the bytes of a stream as they arrive (an :class:`asyncio.Protocol`'s side of
    :func:`read_frame`): a server reads every frame of a wake-up in one call, with no task switch."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add ``data``; the frames now complete, oldest first. Raises as :func:`read_frame` does.

        Most reads bring whole frames and nothing held before: those are cut
        from ``data`` itself, and only an incomplete tail is copied and kept.
        """
        held = bool(self._data)
        if held:
            self._data += data
        buffer: bytes | bytearray = self._data if held else data
        frames = []
        start, end = 0, len(buffer)
        while end - start >= _HEADER.size:
            size = _frame_size(buffer[start : start + _HEADER.size])
            if end - start - _HEADER.size < size:
                break
            body_start = start + _HEADER.size
            frames.append(_decode(memoryview(buffer)[body_start : body_start + size]))
            start = body_start + size
        if held:
            del self._data[:start]
        elif start < end:
            self._data += data[start:]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self._data)


def encode_frame(message: dict[str, Any]) -> bytes:
    """One frame: its length, then its JSON."""
    body = orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS)
    return _HEADER.pack(len(body)) + body


#: Frame writers holding queued frames, with the event loop whose next turn writes them, so the
#: runner can send them before the turn ends.
_QUEUED: dict[FrameWriter, asyncio.AbstractEventLoop] = {}


def flush_queued_frames() -> None:
    """Write every queued frame now, rather than on the next turn of the event loop.

    The engine loop calls it once a commit's answers are all queued: the
    answer to a report and the lease the same commit granted still leave in
    one write, without waiting for the loop to come round (tens of µs on a
    hand-off).
    """
    running = asyncio.get_running_loop()
    for writer, loop in list(_QUEUED.items()):
        if loop is running:
            writer.flush()
        elif loop.is_closed():
            del _QUEUED[writer]  # its loop is gone, and its frames with it


class FrameSink(Protocol):
    """Where a :class:`FrameWriter` writes: an :class:`asyncio.StreamWriter`, or a server's connection."""

    def is_closing(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


class FrameWriter:
    """One side's frames, written together once per turn of the event loop.

    The runner answers every caller and claim of a commit in the same turn:
    one write carries the answer to a report and the lease the same commit
    granted to another claim, so the peer wakes once and reads them together.
    """

    def __init__(self, writer: FrameSink) -> None:
        self.writer = writer
        self._frames: list[bytes] = []

    async def send(self, message: dict[str, Any], *, at_once: bool = False) -> None:
        """Queue a frame for this turn's write, then wait while the peer is slow to read (backpressure).

        ``at_once`` writes it now, with whatever is queued before it: the caller
        knows nothing will join it in this turn.
        """
        if at_once:
            self._frames.append(encode_frame(message))
            self.flush()  # it drops the frames if the connection is closing, as queue() would
        else:
            self.queue(message)
        if not self.writer.is_closing():
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    def queue(self, message: dict[str, Any]) -> None:
        """Queue a frame for this turn's write (dropped if the connection is closing)."""
        if self.writer.is_closing():
            return
        if not self._frames:
            loop = asyncio.get_running_loop()
            loop.call_soon(self.flush)
            _QUEUED[self] = loop
        self._frames.append(encode_frame(message))

    def flush(self) -> None:
        """Write the queued frames now (it runs by itself on the next turn of the event loop)."""
        _QUEUED.pop(self, None)
        frames, self._frames = self._frames, []
        if frames and not self.writer.is_closing():
            self.writer.write(b"".join(frames))


def lease_from_json(data: dict[str, Any]) -> Lease:
    """A lease from its frame's JSON object: its fields by name (a frame carries a :class:`Lease` as
    :func:`encode_frame` writes it, orjson writing a dataclass's fields in order)."""
    return Lease(**data)


class FramedProtocol(asyncio.Protocol):
    """A connection that handles frames in the read's own callback: no reader task, no task switch.

    It cuts frames as bytes arrive (:class:`FrameBuffer`) and hands each read's
    complete frames to :meth:`frames_received`; a frame that is not a JSON
    object closes the connection. It is its own :class:`FrameSink`, so
    :attr:`outbox` writes to it, and a writer waits (``drain``) while the
    transport has paused writing for a slow reader.
    """

    def __init__(self, poll: BusyPoll | None = None) -> None:
        self.frames = FrameBuffer()
        self.outbox = FrameWriter(self)
        self.poll = poll
        """Told of every read, to stop polling for an expected message (:mod:`covey.runtime.busy_poll`)."""
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Resolved once the connection is lost."""
        self._closing = False
        self._writable: asyncio.Future[None] | None = None

    def frames_received(self, messages: list[dict[str, Any]]) -> None:
        """The frames one read completed, oldest first."""
        raise NotImplementedError

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, without the subclass

    def data_received(self, data: bytes) -> None:
        if self.poll is not None:
            self.poll.arrived()
        try:
            messages = self.frames.feed(data)
        except CoveyError as exc:
            log.warning("closing connection: %s", exc)
            self.close()
            return
        self.frames_received(messages)

    def eof_received(self) -> bool | None:
        return None  # close the connection: the peer is done

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._wake_writers()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake_writers()

    @property
    def is_paused(self) -> bool:
        """Whether writes wait: the peer is slow to read what it was sent."""
        return self._writable is not None

    def _wake_writers(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # -- FrameSink, for the outbox

    def is_closing(self) -> bool:
        return self._closing or self.transport is None or self.transport.is_closing()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the peer is slow to read (the transport's buffer is over its high mark)."""
        if self._writable is not None:
            await asyncio.shield(self._writable)

    def close(self) -> None:
        """Close the connection."""
        self._closing = True
        if self.transport is not None:
            self.transport.close()
