"""Clients: submit, signal, cancel, wait, read and write shared state, on any store.

Commands are appended to the store's inbox, where an engine decides them;
a call returns only after its input is committed. On a shared store
(PostgreSQL, Redis) the engine nodes are hinted on the bus. On the embedded
SQLite store, commands go through the runner's socket when a runner holds the
database (one writer per file), or, when none runs, to the inbox directly,
and a runner started later decides them; reads open the file read-only,
which WAL allows beside a writing runner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Self

from covey.bus.base import Bus, Subscription, topic_finished, topic_inbox, topic_state
from covey.codec import check_payload
from covey.engine.events import CancelRequested, SignalReceived, event_to_json
from covey.errors import BackendUnavailable, CoveyError, InputError, NotFound
from covey.ids import new_id
from covey.runtime.admission import Admission, MaxBacklog, max_backlog_of
from covey.runtime.hints import wait_for_hints
from covey.runtime.lockfile import find_runner_socket
from covey.runtime.retention import purge_older_than
from covey.runtime.submit import WorkflowLike, prepare_submission, run_or_pending, submit_row
from covey.state.model import StateChange, StateEntry, StateOp, check_key, check_namespace
from covey.state.resync import StateSnapshot, resyncing
from covey.store.base import InboxRow, RunInfo, Store
from covey.store.open import open_bus_for, open_store, sqlite_path
from covey.store.sqlite import SQLiteStore
from covey.worker.socket_link import SocketLink

__all__ = ["LocalClient", "StoreClient", "connect"]

log = logging.getLogger("covey.client")

#: Longest pause between two reads of a run's row while waiting for it: the ``finished`` hint
#: usually ends the pause at once, and this is only the fallback for a lost one.
WAIT_POLL_S = 1.0


class StoreClient:
    """A client for any store: commands go to the store's inbox, reads straight to the store.

    Each call opens the store (and bus) it needs and closes it again, which
    suits commands; a program making many calls enters the client once
    (``async with StoreClient(url) as client``) to keep one connection open.
    Commands are hinted to the engine nodes on the bus; a lost hint only
    delays them until the nodes' next look at the inbox. A submit is refused
    with TooBusy while the store's backlog is full (``max_backlog``, by
    default ``COVEY_MAX_BACKLOG`` or 100,000; see :mod:`covey.runtime.admission`).
    """

    def __init__(self, store_url: str, bus_url: str | None = None, *, max_backlog: MaxBacklog = None) -> None:
        self.store_url = store_url
        self.bus_url = bus_url
        self.admission = Admission(max_backlog_of(max_backlog))
        self.reconnects = 0
        """How often a watch lost its connection and resumed."""
        self._store: Store | None = None
        self._bus: Bus | None = None
        self._stack: AsyncExitStack | None = None
        self._inbox_hinted_by_store = False
        self._listening: set[str] = set()
        """Topics held open while entered (see :meth:`_keep_listening`)."""

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        async with stack:
            self._store = await stack.enter_async_context(open_store(self.store_url))
            self._bus = await stack.enter_async_context(self._open_bus())
            self._inbox_hinted_by_store = self._store.carry_hints(self._bus)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack, self._store, self._bus = self._stack, None, None, None
        self._inbox_hinted_by_store = False
        self._listening = set()
        if stack is not None:
            await stack.aclose()

    def _open_bus(self) -> Bus:
        return open_bus_for(self.store_url, self.bus_url)

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[Store]:
        """The store, for reading."""
        async with self.writer() as store:
            yield store

    @asynccontextmanager
    async def writer(self) -> AsyncIterator[Store]:
        """The store, for writing."""
        if self._store is not None:
            yield self._store
            return
        async with open_store(self.store_url) as store:
            yield store

    async def _command(self, op: str, **fields: Any) -> Any:
        """Send a command to a running engine that takes them directly; ``_NO_RUNNER`` if there is none."""
        return _NO_RUNNER

    async def _append(self, row_at: Callable[[int], InboxRow]) -> None:
        """Append the inbox row ``row_at`` builds for the store's clock now, then hint the engine nodes.

        An event carries the store's time (a deadline or a step's timeout counts from it), never a client's.
        """
        async with self.writer() as store:
            await store.append_inbox([row_at(await store.now_ms())])
        await self.hint_inbox()

    async def hint_inbox(self) -> None:
        """Tell the engine nodes the inbox has new rows, unless the store's own write already did."""
        if not self._inbox_hinted_by_store:
            await self._hint({topic_inbox()})

    async def _hint(self, topics: set[str]) -> None:
        """Tell the engine nodes (or watchers) now; without it they find out on their next poll."""
        try:
            if self._bus is not None:
                await self._bus.publish(topics)
                return
            async with self._open_bus() as bus:
                await bus.publish(topics)
        except CoveyError as exc:
            log.warning("could not hint %s: %s", sorted(topics), exc)

    async def submit(
        self, workflow: WorkflowLike, run_input: Any = None, *, run_id: str | None = None
    ) -> str:
        """Submit a run; returns its id once committed (to the inbox, if no runner takes it directly)."""
        submission = prepare_submission(workflow, run_input, run_id=run_id)
        answer = await self._command(
            "submit", workflow=dict(submission.workflow.source), input=run_input, run_id=submission.run_id
        )
        if answer is not _NO_RUNNER:
            return submission.run_id
        async with self.writer() as store:
            if not await self.admission.admit_submit(store, run_id):
                return submission.run_id
            await store.append_inbox([submit_row(submission, await store.now_ms())])
        await self.hint_inbox()
        return submission.run_id

    async def signal(
        self, run_id: str, name: str, payload: Any = None, *, signal_id: str | None = None
    ) -> None:
        """Send a named signal to a run."""
        check_payload(payload, field="payload")
        chosen = signal_id or new_id()
        answer = await self._command("signal", run_id=run_id, name=name, payload=payload, signal_id=chosen)
        if answer is _NO_RUNNER:
            declared = await self._signals_of(run_id)
            if name not in declared:
                raise InputError(
                    f"run {run_id} accepts no signal {name!r}; it declares {declared}", field="name"
                )
            seen_id = f"signal:{run_id}:{chosen}"
            await self._append(
                lambda at_ms: InboxRow(
                    seen_id, run_id, event_to_json(SignalReceived(seen_id, name, payload, at_ms))
                )
            )

    async def cancel(
        self, run_id: str, *, step: str | None = None, reason: str = "cancelled by request"
    ) -> None:
        """Cancel a run or one step of it."""
        answer = await self._command("cancel", run_id=run_id, step=step, reason=reason)
        if answer is _NO_RUNNER:
            await self._signals_of(run_id)
            row_id = f"cancel:{run_id}:{new_id()}"
            await self._append(
                lambda at_ms: InboxRow(row_id, run_id, event_to_json(CancelRequested(at_ms, step, reason)))
            )

    async def _signals_of(self, run_id: str) -> list[str]:
        async with self.reader() as store:
            history = await store.load_history(run_id)
        if not history:
            raise NotFound(f"no run {run_id!r}")
        return list(history[0]["workflow"].get("signals", []))

    async def purge_finished(self, older_than_ms: int) -> int:
        """Purge the runs that finished more than ``older_than_ms`` ago, now; how many went.

        Through the runner when one is up (its caches forget them at once);
        otherwise in the store, whose engine nodes forget them at their next
        retention sweep.
        """
        answer = await self._command("purge", older_than_ms=older_than_ms)
        if answer is not _NO_RUNNER:
            return int(answer["purged"])
        async with self.writer() as store:
            return await purge_older_than(store, older_than_ms)

    async def get_run(self, run_id: str) -> RunInfo:
        """One run; NotFound if it does not exist."""
        async with self.reader() as store:
            info = await store.get_run(run_id)
        if info is None:
            raise NotFound(f"no run {run_id!r}")
        return info

    async def wait(self, run_id: str, *, poll_s: float = WAIT_POLL_S) -> RunInfo:
        """Wait until the run finishes (through the runner when one is up).

        Otherwise the run's row is read, and read again on each ``finished``
        hint the engine nodes publish (:func:`~covey.bus.base.topic_finished`)
        and at least every ``poll_s``: a lost hint only delays the answer.
        A run that is neither stored nor waiting in the inbox (never
        submitted, or purged after its retention) raises NotFound.
        """
        answer = await self._command("wait", run_id=run_id)
        if answer is not _NO_RUNNER:
            return RunInfo(**answer["run"])
        async with self._hinted({topic_finished()}) as pause:
            while True:
                info = await self._run_or_pending(run_id)
                if info is not None and info.status != "running":
                    return info
                await pause(poll_s)

    async def _run_or_pending(self, run_id: str) -> RunInfo | None:
        """The run, or None while its submit waits in the inbox; NotFound if it is in neither."""
        async with self.reader() as store:
            return await run_or_pending(store, run_id)

    @asynccontextmanager
    async def _hinted(self, topics: set[str]) -> AsyncIterator[Callable[[float], Awaitable[None]]]:
        """A pause that a hint of ``topics`` ends early; subscribed on entry, before the caller's first read.

        Without a bus (it cannot be reached), the pause is a plain sleep.
        """
        async with AsyncExitStack() as stack:
            subscription: Subscription | None = None
            try:
                if self._bus is not None and self._stack is not None:
                    bus = self._bus
                    await self._keep_listening(bus, self._stack, topics)
                else:
                    bus = await stack.enter_async_context(self._open_bus())
                subscription = await bus.subscribe(topics)
                stack.push_async_callback(subscription.close)
            except (CoveyError, OSError) as exc:
                log.warning("waiting without hints, by polling: %s", exc)

            async def pause(seconds: float) -> None:
                if subscription is None:
                    await asyncio.sleep(seconds)
                else:
                    await wait_for_hints(subscription, seconds)

            yield pause

    async def _keep_listening(self, bus: Bus, stack: AsyncExitStack, topics: set[str]) -> None:
        """Hold ``topics`` for as long as this client is entered (one subscription that is never read).

        A bus asks its server for a topic when the first local subscription
        holds it and drops it with the last: without this, every wait would
        cost a bind and an unbind on RabbitMQ.
        """
        new = topics - self._listening
        if new:
            stack.push_async_callback((await bus.subscribe(new)).close)
            self._listening |= new

    async def state_get(self, namespace: str, key: str) -> StateEntry | None:
        """One key of shared state."""
        async with self.reader() as store:
            return await store.state_get(check_namespace(namespace), check_key(key))

    async def state_list(
        self, namespace: str, *, prefix: str = "", after: str = "", limit: int = 100
    ) -> list[StateEntry]:
        """Keys of a namespace, in key order; page with ``after`` (the last key of the previous page)."""
        async with self.reader() as store:
            return await store.state_list(check_namespace(namespace), prefix=prefix, after=after, limit=limit)

    async def state_apply(self, ops: list[StateOp]) -> list[StateEntry]:
        """Write shared state now (through the runner when one is up); all ops or none."""
        ops = [StateOp.from_json(op.to_json()) for op in ops]  # checked as any outside input is
        for op in ops:
            check_payload(op.value, field=f"state.{op.key}")
        answer = await self._command("state_apply", ops=[op.to_json() for op in ops], fence=None)
        if answer is not _NO_RUNNER:
            return [StateEntry(**entry) for entry in answer["entries"]]
        async with self.writer() as store:
            entries = await store.state_apply(ops)
        await self._hint({topic_state(op.namespace) for op in ops})
        return entries

    async def state_put(
        self, namespace: str, key: str, value: Any, *, if_version: int | None = None
    ) -> StateEntry:
        """Set a key; with ``if_version``, only if it is at that version (VersionConflict otherwise)."""
        (entry,) = await self.state_apply([StateOp("put", namespace, key, value, None, if_version)])
        return entry

    async def state_update(self, namespace: str, key: str, reducer: str, value: Any) -> StateEntry:
        """Apply a reducer (append, extend, merge, add, max, min) to a key, atomically."""
        op = StateOp.from_json(
            {"op": "update", "namespace": namespace, "key": key, "value": value, "reducer": reducer}
        )
        (entry,) = await self.state_apply([op])
        return entry

    async def state_delete(self, namespace: str, key: str, *, if_version: int | None = None) -> StateEntry:
        """Delete a key."""
        (entry,) = await self.state_apply([StateOp("delete", namespace, key, None, None, if_version)])
        return entry

    async def state_watch(
        self, namespace: str, *, after: int = 0, wait_s: float = 1.0
    ) -> AsyncIterator[StateChange]:
        """Every change of ``namespace`` after cursor ``after``, as committed, forever.

        A lost connection is retried from the last change seen, so nothing is
        missed and nothing repeated.

        Raises:
            CursorExpired: the namespace's feed no longer keeps every change
                after the cursor (it keeps the latest 10,000 by default).
        """
        check_namespace(namespace)
        cursor = after
        while True:
            try:
                async for change in self._watch_once(namespace, cursor, wait_s):
                    cursor = change.seq
                    yield change
            except BackendUnavailable:
                self.reconnects += 1
            await asyncio.sleep(RECONNECT_PAUSE_S)

    def state_watch_resyncing(
        self, namespace: str, *, after: int = 0, wait_s: float = 1.0
    ) -> AsyncIterator[StateChange | StateSnapshot]:
        """:meth:`state_watch` that resyncs by itself where the feed has moved past its cursor.

        There it yields a :class:`~covey.state.resync.StateSnapshot` (every
        key now) and goes on with the changes after it, skipping those the
        snapshot holds. A change to a key deleted while the snapshot was
        read may come again ahead of its deletion.
        """

        def page(ns: str, after_key: str, limit: int) -> Awaitable[list[StateEntry]]:
            return self.state_list(ns, after=after_key, limit=limit)

        return resyncing(
            namespace, after, lambda cursor: self.state_watch(namespace, after=cursor, wait_s=wait_s), page
        )

    async def _watch_once(self, namespace: str, cursor: int, wait_s: float) -> AsyncIterator[StateChange]:
        async with self.reader() as store:
            for change in await store.state_changes(namespace, cursor):
                yield change


class LocalClient(StoreClient):
    """A client for the embedded SQLite store at ``path``: through its runner's socket when one is up."""

    def __init__(self, path: str | Path, *, max_backlog: MaxBacklog = None) -> None:
        self.path = Path(path)
        super().__init__(f"sqlite:///{self.path}", "memory://", max_backlog=max_backlog)

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[SQLiteStore]:
        """The store opened read-only (WAL allows it beside a writing runner).

        Raises:
            NotFound: the database file does not exist.
        """
        if not self.path.exists():
            raise NotFound(f"no covey database at {self.path}")
        async with SQLiteStore(self.path, readonly=True) as store:
            if not await store.journal_left() or find_runner_socket(self.path) is not None:
                yield store
                return
        # A runner stopped before applying its last journal rows: apply them, as its successor would.
        async with self.writer():
            pass
        async with SQLiteStore(self.path, readonly=True) as store:
            yield store

    @asynccontextmanager
    async def writer(self) -> AsyncIterator[SQLiteStore]:
        """The store opened for writing (only when no runner holds it: commands go through its socket)."""
        async with SQLiteStore(self.path) as store:
            yield store

    async def _command(self, op: str, **fields: Any) -> Any:
        socket_path = find_runner_socket(self.path)
        if socket_path is None:
            return _NO_RUNNER
        async with SocketLink(socket_path) as link:
            return await link.call(op, **fields)

    async def _hint(self, topics: set[str]) -> None:
        """No hints: a runner started later reads its inbox when it starts."""

    async def _watch_once(self, namespace: str, cursor: int, wait_s: float) -> AsyncIterator[StateChange]:
        socket_path = find_runner_socket(self.path)
        if socket_path is None:
            async with self.reader() as store:
                for change in await store.state_changes(namespace, cursor):
                    yield change
            return
        async with SocketLink(socket_path) as link:
            while True:
                answer = await link.call("state_watch", namespace=namespace, after=cursor, wait_s=wait_s)
                for body in answer["changes"]:
                    change = StateChange(**body)
                    cursor = change.seq
                    yield change


def connect(store_url: str, bus_url: str | None = None, *, max_backlog: MaxBacklog = None) -> StoreClient:
    """A client for the store at ``store_url``: a LocalClient for SQLite, a StoreClient otherwise."""
    if store_url.partition("://")[0] in ("sqlite", store_url):
        return LocalClient(sqlite_path(store_url), max_backlog=max_backlog)
    return StoreClient(store_url, bus_url, max_backlog=max_backlog)


#: Pause before reading a namespace again after the connection was lost or nothing was found.
RECONNECT_PAUSE_S = 0.05

_NO_RUNNER = object()
