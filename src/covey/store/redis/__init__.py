"""The distributed store on Redis: Lua scripts, sorted sets for timers and leases, Streams for change feeds.

:class:`RedisStore` implements :class:`~covey.store.base.Store` with the
semantics of the conformance suite. Each write is one script call: Redis runs
a script alone, so a script is a transaction, and each script checks
everything (epoch, sequences, versions, fences) before it writes anything,
because Redis does not roll back a script that fails midway. The store's
clock is the server's (``TIME``, read inside the scripts).

The layers, each using only those below it: :mod:`.connection` (client,
scripts, checks, errors), :mod:`.reads`, :mod:`.shared` (state, locks),
:mod:`.tasks` (claims, leases, inbox, timers, epochs, registry),
:mod:`.commit`, :mod:`.retention` (purging finished runs). Key names are in
:mod:`.keys`; the scripts in ``lua/``.

Single-node Redis only for now: a commit touches the keys of several shards
in one script, which Redis Cluster refuses.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from covey.store.redis.connection import LAYOUT_VERSION
from covey.store.redis.retention import Retention

__all__ = ["LAYOUT_VERSION", "RedisStore"]


class RedisStore(Retention):
    """The :class:`~covey.store.base.Store` on a Redis server; enter it with ``async with``.

    Args:
        url: ``redis://[user:password@]host:port/db``; ``rediss://`` for TLS.
        prefix: the first part of every key name (``{covey}:...``,
            ``{covey:17}:...``). Stores with different prefixes share a server
            without seeing each other's data.
        check_eviction: refuse to open unless the server's
            ``maxmemory-policy`` is ``noeviction``. Pass False only where
            ``CONFIG GET`` is not permitted and the policy is known to be right.

    Raises (on entering):
        ConfigError: the eviction policy is wrong or cannot be read.
        CoveyError: the prefix holds a layout newer than this covey knows.
        BackendUnavailable: the server cannot be reached.
    """

    inbox_in_seq_order = True  # the append script INCRs the seq

    def __init__(self, url: str, *, prefix: str = "covey", check_eviction: bool = True) -> None:
        super().__init__(url, prefix=prefix, check_eviction=check_eviction)
        self._specs = {}

    def __repr__(self) -> str:
        return f"RedisStore({self.where!r}, prefix={self.keys.prefix!r})"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
