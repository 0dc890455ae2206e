"""A TCP proxy whose open connections can be frozen: a half-open connection, made on purpose.

A killed connection is easy to notice (the socket closes). A frozen one is
not: no byte comes back, and nothing closes, the way a connection behaves
when a NAT forgets it or a peer's machine vanishes. Buses must find out by
themselves (health checks, heartbeats) and reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class FreezingProxy:
    """Forwards 127.0.0.1:<port> to a server; :meth:`freeze` stalls the connections open now."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.listen_port = 0
        self._frozen = asyncio.Event()
        self._current: set[asyncio.Event] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def freeze(self) -> int:
        """Stop forwarding on every connection open now (new ones still work); returns how many."""
        for frozen in self._current:
            frozen.set()
        count = len(self._current)
        self._current = set()
        return count

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(self.host, self.port)
        frozen = asyncio.Event()
        self._current.add(frozen)
        self._writers |= {client_writer, server_writer}
        pumps = [
            asyncio.create_task(self._pump(client_reader, server_writer, frozen)),
            asyncio.create_task(self._pump(server_reader, client_writer, frozen)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for writer in (client_writer, server_writer):
            writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frozen: asyncio.Event
    ) -> None:
        while data := await reader.read(65536):
            if frozen.is_set():
                await asyncio.Event().wait()  # hold the bytes and the socket forever
            writer.write(data)
            await writer.drain()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FreezingProxy]:
        """Listen on a free port on loopback for the duration."""
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.listen_port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for task in self._tasks:
                task.cancel()
            for writer in self._writers:
                writer.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
