"""Separate hosts on one machine: network namespaces joined to this one by veth pairs.

Each :class:`Host` is a network namespace with its own interface and address;
commands run in it with ``ip netns exec``. The servers of this machine listen
on loopback only, so :class:`Forwarder` relays a port from the host-side
address of each veth pair to the server: a worker in a namespace reaches the
store at ``10.77.N.1``, and every byte crosses the veth interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass


def can_make_hosts() -> str | None:
    """None if network namespaces can be made here; else why not."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = subprocess.run(["ip", "netns", "add", "covey-probe"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create network namespaces: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", "covey-probe"], capture_output=True)
    return None


@dataclass(frozen=True)
class Host:
    """A network namespace reachable at ``address``; this machine is ``gateway`` from inside it."""

    name: str
    address: str
    gateway: str

    def command(self, *args: str) -> list[str]:
        """``args`` as a command run inside this host."""
        return ["ip", "netns", "exec", self.name, *args]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def hosts(count: int, tag: str) -> Iterator[list[Host]]:
    """``count`` hosts, each on its own veth pair and /30 network, removed afterwards."""
    made: list[Host] = []
    try:
        for n in range(count):
            name, outside, inside = f"covey-{tag}-{n}", f"cv{tag}{n}a", f"cv{tag}{n}b"
            gateway, address = f"10.77.{n}.1", f"10.77.{n}.2"
            _ip("netns", "add", name)
            made.append(Host(name, address, gateway))
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", name)
            _ip("addr", "add", f"{gateway}/30", "dev", outside)
            _ip("link", "set", outside, "up")
            _ip("netns", "exec", name, "ip", "addr", "add", f"{address}/30", "dev", inside)
            _ip("netns", "exec", name, "ip", "link", "set", inside, "up")
            _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield made
    finally:
        for n, host in enumerate(made):
            subprocess.run(["ip", "link", "del", f"cv{tag}{n}a"], capture_output=True)
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True)


class Forwarder:
    """Relays TCP connections from ``(listen_host, port)`` to the server at ``127.0.0.1:port``."""

    def __init__(self) -> None:
        self._servers: list[asyncio.Server] = []
        self.connections = 0

    async def forward(self, listen_host: str, port: int) -> None:
        """Start relaying ``listen_host:port``."""
        self._servers.append(await asyncio.start_server(self._relay_to(port), listen_host, port))

    def _relay_to(self, port: int):  # type: ignore[no-untyped-def]
        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)

        return relay

    async def close(self) -> None:
        """Stop listening (relayed connections end with their peers)."""
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()
