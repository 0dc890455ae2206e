"""The distributed store on PostgreSQL: every table in one schema, shared by any number of covey processes.

:class:`PostgresStore` implements :class:`~covey.store.base.Store` with the
same semantics as the SQLite store, checked by the same conformance suite.
Its SQL is split by job: :mod:`.connection` (pool, transactions, errors,
migrations), :mod:`.reads`, :mod:`.shared` (shared state and locks),
:mod:`.tasks` (claims, leases, inbox, timers, registry), :mod:`.commit`
(the group commit, epochs and shards) and :mod:`.retention` (purging
finished runs). See ``docs/postgres.md``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from types import TracebackType
from typing import Any, Self

from covey.bus.base import Bus
from covey.state.model import StateChange, StateEntry, StateOp
from covey.store.base import (
    ClaimRequest,
    CommitBatch,
    CommitResult,
    InboxRow,
    Lease,
    RunInfo,
    TaskInfo,
    WorkerInfo,
)
from covey.store.feeds import BoundedFeeds
from covey.store.postgres import commit as commits
from covey.store.postgres import reads, retention, shared, tasks
from covey.store.postgres.connection import NOW_MS, Database

__all__ = ["DEFAULT_POOL_SIZE", "DEFAULT_SCHEMA", "PostgresStore"]

#: The schema a store uses when none is named.
DEFAULT_SCHEMA = "covey"
#: Connections a store keeps at most: calls beyond it wait for a free one.
DEFAULT_POOL_SIZE = 10


class PostgresStore(BoundedFeeds):
    """The :class:`~covey.store.base.Store` on PostgreSQL.

    Nothing connects before ``async with``, which opens the pool, creates the
    schema if it is missing and runs the migrations it lacks.

    Args:
        url: a libpq-style URL, ``postgresql://user@host:5432/db`` (options
            such as ``sslmode`` pass through to the driver). It is never
            printed: messages name the server without a password.
        schema: the PostgreSQL schema holding every table of this store;
            stores with different schemas share a database without seeing
            each other.
        pool_size: connections kept at most; one call holds one for its duration.
    """

    inbox_in_seq_order = False  # sequence values commit out of order

    def __init__(self, url: str, *, schema: str = DEFAULT_SCHEMA, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self._db = Database(url, schema=schema, pool_size=pool_size)
        self._specs: dict[str, bytes] = {}
        self._read_feed_keep()

    @property
    def schema(self) -> str:
        """The schema holding this store's tables."""
        return self._db.schema

    async def __aenter__(self) -> Self:
        await self._db.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._db.close()

    def carry_hints(self, bus: Bus) -> bool:
        """Hints stay with the callers: see :meth:`covey.store.base.Store.carry_hints`."""
        return False

    async def now_ms(self) -> int:
        """The store's clock: the database server's."""
        return int(await self._db.run(lambda conn: conn.fetchval(f"SELECT {NOW_MS}")))

    # -- epochs and shards -------------------------------------------------------------

    async def begin_epoch(self) -> int:
        """Take every shard; void older leases."""
        return await self._db.run(commits.begin_epoch, transaction=True, idempotent=False)

    async def join_epoch(self) -> int:
        """A new epoch holding no shard (a retried call may skip a number: epochs only need to grow)."""
        return await self._db.run(commits.join_epoch)

    async def take_shards(self, epoch: int, shards: Sequence[int], ttl_ms: int) -> set[int]:
        """Lease shards to an epoch; the ones it holds."""
        return await self._db.run(lambda conn: commits.take_shards(conn, epoch, shards, ttl_ms))

    async def release_shards(self, epoch: int, shards: Sequence[int]) -> None:
        """Give shards back."""
        await self._db.run(lambda conn: commits.release_shards(conn, epoch, shards))

    async def shard_leases(self) -> dict[int, tuple[int, int]]:
        """shard -> (epoch, lease end)."""
        return await self._db.run(reads.shard_leases)

    # -- commits, claims and leases ----------------------------------------------------

    def commit_now(self, batch: CommitBatch) -> CommitResult | None:
        """Never: a commit is a round trip to the server (see ``Store.commit_now``)."""
        return None

    async def commit(self, batch: CommitBatch) -> CommitResult:
        """Write a batch atomically, then grant its claims."""
        # A batch that only claims once is one statement, atomic by itself.
        alone = not batch.runs and not batch.consumed and len(batch.claims) <= 1
        return await self._db.run(
            lambda conn: commits.commit(conn, batch, self.feed_keep), transaction=not alone, idempotent=False
        )

    async def claim(self, request: ClaimRequest) -> list[Lease]:
        """Lease ready tasks."""
        return await self._db.run(lambda conn: tasks.claim(conn, request), idempotent=False)

    async def heartbeat(self, worker_id: str, leases: Sequence[tuple[str, int]], lease_ms: int) -> list[str]:
        """Extend leases; return those lost."""
        return await self._db.run(lambda conn: tasks.heartbeat(conn, worker_id, leases, lease_ms))

    async def release(self, worker_id: str, leases: Sequence[tuple[str, int]]) -> None:
        """Give leases back."""
        await self._db.run(lambda conn: tasks.release(conn, worker_id, leases))

    # -- inbox and timers --------------------------------------------------------------

    async def append_inbox(self, rows: Sequence[InboxRow]) -> None:
        """Append inbox rows idempotently."""
        await self._db.run(lambda conn: tasks.append_inbox(conn, rows))

    async def read_inbox(
        self, after_seq: int, limit: int, shards: Collection[int] | None = None
    ) -> list[InboxRow]:
        """Inbox rows after a sequence number."""
        return await self._db.run(lambda conn: tasks.read_inbox(conn, after_seq, limit, shards))

    async def fire_due(self, limit: int) -> int:
        """Fire due timers and ended leases (a retry after a lost reply only fires later ones)."""
        return await self._db.run(lambda conn: tasks.fire_due(conn, limit), transaction=True)

    async def next_due_ms(self) -> int | None:
        """When the next timer or lease comes due."""
        return await self._db.run(reads.next_due_ms)

    # -- reads -------------------------------------------------------------------------

    async def load_history(self, run_id: str) -> list[dict[str, Any]]:
        """A run's events."""
        return (await self.load_histories([run_id])).get(run_id, [])

    async def load_histories(self, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Several runs' events at once; absent runs are left out."""
        return await self._db.run(lambda conn: reads.load_histories(conn, run_ids, self._specs))

    async def seen(self, ids: Sequence[str]) -> set[str]:
        """Already committed client ids."""
        return await self._db.run(lambda conn: reads.seen(conn, ids))

    async def get_run(self, run_id: str) -> RunInfo | None:
        """One run."""
        return await self._db.run(lambda conn: reads.get_run(conn, run_id))

    async def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[RunInfo]:
        """Runs, newest first."""
        return await self._db.run(lambda conn: reads.list_runs(conn, status, limit))

    async def backlog(self) -> int:
        """Runs running, plus inputs waiting in the inbox."""
        return await self._db.run(reads.backlog)

    async def list_tasks(self, run_id: str) -> list[TaskInfo]:
        """A run's task rows."""
        return await self._db.run(lambda conn: reads.list_tasks(conn, run_id))

    async def get_outputs(self, run_id: str, steps: Sequence[str]) -> dict[str, Any]:
        """Step outputs."""
        return await self._db.run(lambda conn: reads.get_outputs(conn, run_id, steps))

    # -- shared state and locks --------------------------------------------------------

    async def state_get(self, namespace: str, key: str) -> StateEntry | None:
        """A key's value and version."""
        return await self._db.run(lambda conn: shared.state_get(conn, namespace, key))

    async def state_apply(
        self,
        ops: Sequence[StateOp],
        *,
        fence: tuple[str, int] | None = None,
        lock: tuple[str, int] | None = None,
    ) -> list[StateEntry]:
        """Apply writes atomically."""
        if not ops and fence is None and lock is None:
            return []
        return await self._db.run(
            lambda conn: shared.state_apply(conn, ops, fence, lock, self.feed_keep),
            transaction=True,
            idempotent=False,
        )

    async def lock_acquire(self, name: str, holder: str, *, limit: int = 1, ttl_ms: int) -> int | None:
        """Take a permit; its fencing token, or None."""
        try:
            return await self._db.run(
                lambda conn: shared.lock_acquire(conn, name, holder, limit, ttl_ms),
                transaction=True,
                idempotent=False,
            )
        except shared.AllHeld:
            return None

    async def lock_release(self, name: str, token: int) -> bool:
        """Give a permit back."""
        return await self._db.run(lambda conn: shared.lock_release(conn, name, token))

    async def lock_renew(self, name: str, token: int, ttl_ms: int) -> bool:
        """Extend a permit."""
        return await self._db.run(lambda conn: shared.lock_renew(conn, name, token, ttl_ms))

    async def state_list(
        self, namespace: str, *, prefix: str = "", after: str = "", limit: int = 100
    ) -> list[StateEntry]:
        """Keys of a namespace, in key order."""
        return await self._db.run(lambda conn: shared.state_list(conn, namespace, prefix, after, limit))

    async def state_changes(self, namespace: str, after_seq: int, limit: int = 1000) -> list[StateChange]:
        """A namespace's changes after a cursor; CursorExpired if the feed no longer keeps them."""
        return await self._db.run(lambda conn: shared.state_changes(conn, namespace, after_seq, limit))

    # -- retention ---------------------------------------------------------------------

    async def purge_finished(self, before_ms: int, limit: int) -> list[str]:
        """Delete runs finished before ``before_ms``, oldest first, with all that was theirs; their ids.

        Not retried after a connection lost while committing: the ids a lost
        call purged could not be reported. This store keeps nothing in memory
        by run (only pinned specs, by hash, which a purge leaves in place).
        """
        return await self._db.run(
            lambda conn: retention.purge_finished(conn, before_ms, limit), transaction=True, idempotent=False
        )

    # -- registry ----------------------------------------------------------------------

    async def register_worker(self, info: WorkerInfo) -> None:
        """Register a worker."""
        await self._db.run(lambda conn: tasks.register_worker(conn, info))

    async def unregister_worker(self, worker_id: str) -> None:
        """Unregister a worker."""
        await self._db.run(lambda conn: tasks.unregister_worker(conn, worker_id))

    async def list_workers(self) -> list[WorkerInfo]:
        """Registered workers."""
        return await self._db.run(tasks.list_workers)
