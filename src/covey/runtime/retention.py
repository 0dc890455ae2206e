"""Retention: finished runs are kept for a while, then purged with everything that was theirs.

Every engine process (the embedded runner, each ``covey timekeeper``) runs a
:class:`RetentionKeeper`. Once a minute it asks the store to delete runs that
finished longer ago than the retention (``Store.purge_finished``), a bounded
batch per transaction, until none is left. Any number of keepers may sweep
at once: the store decides which runs each call takes. A purged run's id is
free again: submitting it starts a new run.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Protocol

from covey.errors import ConfigError
from covey.store.base import Store

__all__ = [
    "DEFAULT_RETENTION",
    "DEFAULT_RETENTION_MS",
    "PURGE_BATCH",
    "Forgets",
    "RetentionKeeper",
    "parse_retention",
    "purge_older_than",
]

log = logging.getLogger("covey.retention")

#: How long finished runs are kept unless told otherwise (``COVEY_RETENTION``, ``--retention``).
DEFAULT_RETENTION = "7d"
DEFAULT_RETENTION_MS = 7 * 86_400_000
#: Runs purged per transaction.
PURGE_BATCH = 500
#: Seconds between sweeps.
SWEEP_EVERY_S = 60.0

_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"(\d+)([smhd])")


def parse_retention(text: str) -> int | None:
    """``7d``, ``12h``, ``30m`` or ``90s`` in milliseconds; ``forever`` keeps finished runs (None)."""
    value = text.strip().lower()
    if value == "forever":
        return None
    match = _DURATION.fullmatch(value)
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(
            f"retention {text!r} is not a duration: use a positive number with s, m, h or d "
            "(such as 7d or 12h), or 'forever'"
        )
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


class Forgets(Protocol):
    """The engine loop's caches of runs, which purged runs must leave."""

    def forget_runs(self, run_ids: list[str]) -> None:
        """Drop these runs (this process purged them)."""
        ...

    def forget_finished_before(self, before_ms: int) -> None:
        """Drop every run that finished before ``before_ms`` (another keeper may have purged it)."""
        ...


async def purge_older_than(store: Store, older_than_ms: int, engine: Forgets | None = None) -> int:
    """Purge every run that finished more than ``older_than_ms`` ago (store clock), a batch per call.

    ``engine``, the engine loop of this process if any, forgets what it
    cached of those runs, whoever purged them. Returns how many runs this
    call purged.
    """
    before_ms = await store.now_ms() - older_than_ms
    if engine is not None:
        engine.forget_finished_before(before_ms)
    total = 0
    while True:
        purged = await store.purge_finished(before_ms, PURGE_BATCH)
        if purged and engine is not None:
            engine.forget_runs(purged)
        total += len(purged)
        if len(purged) < PURGE_BATCH:
            return total


class RetentionKeeper:
    """Purges finished runs older than ``retention_ms``, and has ``engine`` forget them."""

    def __init__(
        self,
        store: Store,
        retention_ms: int,
        engine: Forgets,
        *,
        every_s: float = SWEEP_EVERY_S,
    ) -> None:
        self.store = store
        self.retention_ms = retention_ms
        self.engine = engine
        self.every_s = every_s
        self.purged = 0
        """Runs purged so far."""
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        """End :meth:`run` at its next turn."""
        self._stopped.set()

    async def run(self) -> None:
        """Sweep now, then every ``every_s`` seconds, until stopped or cancelled."""
        while not self._stopped.is_set():
            try:
                await self.sweep()
            except Exception:
                log.exception("purging finished runs failed; trying again at the next sweep")
            try:
                async with asyncio.timeout(self.every_s):
                    await self._stopped.wait()
            except TimeoutError:
                pass

    async def sweep(self) -> int:
        """Purge every run finished before the retention, a batch at a time; returns how many."""
        total = await purge_older_than(self.store, self.retention_ms, self.engine)
        if total:
            self.purged += total
            log.info("purged %d runs finished more than %d s ago", total, self.retention_ms // 1000)
        return total
