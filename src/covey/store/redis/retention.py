"""Retention in the Redis store: finished runs deleted, with all that was theirs, oldest first."""

from __future__ import annotations

from covey.store.redis.commit import Commit
from covey.store.redis.reads import text

__all__ = ["PURGE_BATCH", "Retention"]

#: Runs one purge script call deletes at most: a script holds the server while it runs.
PURGE_BATCH = 100


class Retention(Commit):
    """``purge_finished``, in script calls of at most :data:`PURGE_BATCH` runs each."""

    async def purge_finished(self, before_ms: int, limit: int) -> list[str]:
        """Delete up to ``limit`` runs that finished before ``before_ms`` (store clock), oldest first.

        Each call of ``purge.lua`` takes the oldest entries of the index of
        finished runs and deletes those runs and everything of theirs in one
        atomic step, so concurrent callers never purge one run twice, nor
        leave one half deleted. Not retried after a lost connection: the ids a
        lost call purged could not be reported.
        """
        purged: list[str] = []
        while len(purged) < limit:
            want = min(PURGE_BATCH, limit - len(purged))
            ids, taken = await self.script("purge", [str(before_ms), str(want)])
            purged.extend(text(run_id) for run_id in ids)
            if int(taken) < want:
                break  # the index holds no more runs finished before the cutoff
        return purged
