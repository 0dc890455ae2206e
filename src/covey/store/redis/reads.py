"""Reading runs, histories, tasks, outputs, shared state, the inbox and the registry from Redis."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import orjson

from covey.errors import CursorExpired
from covey.state.model import StateChange, StateEntry
from covey.store.base import InboxRow, RunInfo, TaskInfo, WorkerInfo
from covey.store.feeds import trimmed_past
from covey.store.redis.connection import Connection

__all__ = ["Reads", "from_json", "inbox_row", "text"]


def inbox_row(member: bytes) -> InboxRow:
    """An inbox row from its member in the inbox index (or the copy pushed to a waiting node): the
    shard tag, then the JSON array [seq, id, run id, event, output, state ops], the output and state
    ops as JSON text, a missing one false (see ``inbox_member`` in ``common.lua``)."""
    seq, row_id, run_id, event, output, ops = orjson.loads(member[member.index(b"}:") + 2 :])
    return InboxRow(row_id, run_id, event, seq, output.encode() if output else None, from_json(ops or None))


def from_json(body: bytes | None) -> Any:
    """A stored JSON value (a missing one stays None)."""
    return None if body is None else orjson.loads(body)


def text(value: bytes | str) -> str:
    """A reply's bytes as text."""
    return value.decode() if isinstance(value, bytes) else value


def _int(value: bytes | int | None) -> int | None:
    return None if value is None else int(value)


#: Inbox row ids a store object remembers (see ``Reads.inbox_rows``); the oldest go first past this.
ROW_IDS_KEPT = 65_536


class Reads(Connection):
    """Runs, histories, task rows, outputs, shared state, the inbox, workers and shards."""

    _specs: dict[str, bytes]

    def __init__(self, url: str, *, prefix: str = "covey", check_eviction: bool = True) -> None:
        super().__init__(url, prefix=prefix, check_eviction=check_eviction)
        self._row_ids: dict[int, str] = {}

    def inbox_rows(self, members: Sequence[bytes]) -> list[InboxRow]:
        """Inbox rows from their members, each one's id remembered by its seq.

        A commit that consumes a row this store object read names its id
        (``row_id``), which saves the commit script a lookup per row. An id
        not remembered (another object read it, or it was forgotten) is looked
        up; a seq names one row for good, so a remembered id is never wrong.
        """
        rows = [inbox_row(member) for member in members]
        ids = self._row_ids
        for row in rows:
            ids[row.seq] = row.id
        while len(ids) > ROW_IDS_KEPT:
            del ids[next(iter(ids))]
        return rows

    def row_id(self, seq: int) -> str | None:
        """The id of the inbox row ``seq`` if this object read it (and forgets it: a row is consumed once)."""
        return self._row_ids.pop(seq, None)

    async def now_ms(self) -> int:
        """The store's clock: the Redis server's (``TIME``), shared by every covey process."""
        seconds, micros = await self.run(lambda r: r.time(), idempotent=True)
        return int(seconds) * 1000 + int(micros) // 1000

    async def seen(self, ids: Sequence[str]) -> set[str]:
        """Which client-chosen ids were already committed."""
        if not ids:
            return set()
        ids = list(ids)
        found = await self.run(lambda r: r.hmget(self.keys.global_key("seen"), ids), idempotent=True)
        # The hash also holds the ids of rows waiting in the inbox, as "" (``inbox_add`` in common.lua).
        return {i for i, value in zip(ids, found, strict=True) if value}

    async def load_history(self, run_id: str) -> list[dict[str, Any]]:
        """A run's events as JSON objects, in order, the pinned spec filled in."""
        return (await self.load_histories([run_id])).get(run_id, [])

    async def load_histories(self, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Histories of several runs at once (absent runs are left out), specs filled in."""
        ids = list(dict.fromkeys(run_ids))

        async def read(r: Any) -> list[Any]:
            async with r.pipeline(transaction=False) as pipe:
                for run_id in ids:
                    pipe.xrange(self.keys.events(run_id))
                return list(await pipe.execute())

        streams = await self.run(read, idempotent=True) if ids else []
        result: dict[str, list[dict[str, Any]]] = {}
        for run_id, entries in zip(ids, streams, strict=True):
            if entries:
                history: list[dict[str, Any]] = []
                for _, fields in entries:  # one event (e), or a commit's several (es)
                    single = fields.get(b"e")
                    if single is not None:
                        history.append(orjson.loads(single))
                    else:
                        history.extend(orjson.loads(fields[b"es"]))
                result[run_id] = history
        for history in result.values():
            first = history[0]
            ref = first.get("workflow", {}).get("$spec") if first.get("type") == "RunSubmitted" else None
            if ref is not None:
                first["workflow"] = await self.load_spec(ref)
        return result

    async def load_spec(self, spec_hash: str) -> dict[str, Any] | None:
        """A pinned workflow spec by hash (specs never change, so each is read once per store object)."""
        body = self._specs.get(spec_hash)
        if body is None:
            body = await self.run(lambda r: r.hget(self.keys.global_key("specs"), spec_hash), idempotent=True)
            if body is None:
                return None
            self._specs[spec_hash] = body
        return dict(orjson.loads(body))

    @staticmethod
    def _run_info(row: Sequence[Any]) -> RunInfo:
        run_id, workflow, status, seq, created, updated, finished, data, output, error = row
        return RunInfo(
            text(run_id),
            text(workflow),
            text(status),
            int(seq),
            int(created),
            int(updated),
            _int(finished),
            from_json(data),
            from_json(output),
            from_json(error),
        )

    async def get_run(self, run_id: str) -> RunInfo | None:
        """One run."""
        fields = ("id", "wf", "st", "seq", "c", "u", "fin", "in", "out", "err")
        row = await self.run(lambda r: r.hmget(self.keys.run(run_id), fields), idempotent=True)
        return None if row[0] is None else self._run_info(row)

    async def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[RunInfo]:
        """Runs, newest first (ties by run id); a negative limit lists all."""
        rows = await self.script("list_runs", [str(limit), *self.keys.runs(status)], idempotent=True)
        runs = sorted((self._run_info(row) for row in rows), key=lambda run: (-run.created_ms, run.run_id))
        return runs if limit < 0 else runs[:limit]

    async def backlog(self) -> int:
        """Runs running, plus inputs waiting in the inbox: two ZCARDs."""

        async def read(r: Any) -> list[Any]:
            async with r.pipeline(transaction=False) as pipe:
                pipe.zcard(self.keys.runs("running")[0])
                pipe.zcard(self.keys.global_key("inbox"))
                return list(await pipe.execute())

        running, waiting = await self.run(read, idempotent=True)
        return int(running) + int(waiting)

    async def list_tasks(self, run_id: str) -> list[TaskInfo]:
        """A run's unfinished task rows, by step and index."""
        rows = await self.script("list_tasks", [self.keys.tasks(run_id)], idempotent=True)
        tasks = [
            TaskInfo(text(i), text(step), int(idx), text(st), int(tr), int(ln), w and text(w), _int(lu))
            for i, step, idx, st, tr, ln, w, lu in rows
        ]
        return sorted(tasks, key=lambda t: (t.step, t.index))

    async def get_outputs(self, run_id: str, steps: Sequence[str]) -> dict[str, Any]:
        """Outputs of steps: a value, an ordered list for a map step, None if none."""
        steps = list(dict.fromkeys(steps))

        async def read(r: Any) -> list[Any]:
            async with r.pipeline(transaction=False) as pipe:
                for step in steps:
                    pipe.hgetall(self.keys.output(run_id, step))
                return list(await pipe.execute())

        found = await self.run(read, idempotent=True) if steps else []
        return {step: assemble_output(rows) for step, rows in zip(steps, found, strict=True)}

    # -- shared state ------------------------------------------------------------------

    async def state_get(self, namespace: str, key: str) -> StateEntry | None:
        """A key's value and version (one HMGET: the two are always read together)."""
        data = self.keys.ns("nsdata", namespace)
        value, version = await self.run(lambda r: r.hmget(data, f"v:{key}", f"n:{key}"), idempotent=True)
        return None if value is None else StateEntry(namespace, key, orjson.loads(value), int(version))

    async def state_list(
        self, namespace: str, *, prefix: str = "", after: str = "", limit: int = 100
    ) -> list[StateEntry]:
        """Keys starting with ``prefix``, after ``after``, in code point order."""
        if limit <= 0:
            return []
        low, high = lex_bounds(prefix, after)
        args = [self.keys.ns("nskeys", namespace), self.keys.ns("nsdata", namespace), low, high, str(limit)]
        rows = await self.script("state_list", args, idempotent=True)
        return [StateEntry(namespace, text(key), orjson.loads(value), int(n)) for key, value, n in rows]

    async def state_changes(self, namespace: str, after_seq: int, limit: int = 1000) -> list[StateChange]:
        """Changes of a namespace after a cursor, in commit order; CursorExpired if some were trimmed.

        The write scripts trim each feed to its last ``feed_keep`` changes, and
        its seqs have no gaps (one INCR each), so a first entry past
        ``after_seq + 1`` is the sign that the ones between are gone.
        """
        if limit == 0:
            return []
        feed = self.keys.ns("nsfeed", namespace)
        start = f"{max(after_seq + 1, 0)}-0"
        count = None if limit < 0 else limit
        entries = await self.run(lambda r: r.xrange(feed, start, "+", count=count), idempotent=True)
        changes = []
        for entry_id, fields in entries:
            body = fields.get(b"v")
            seq = int(entry_id.split(b"-")[0])
            key, version = text(fields[b"k"]), int(fields[b"n"])
            changes.append(StateChange(namespace, seq, key, version, from_json(body), body is None))
        if trimmed_past(after_seq, changes):
            counter = self.keys.ns("nsseq", namespace)
            head = await self.run(lambda r: r.get(counter), idempotent=True)
            raise CursorExpired(namespace, after_seq, changes[0].seq, None if head is None else int(head))
        return changes

    # -- inbox, shards, timers, registry -----------------------------------------------

    async def read_inbox(
        self, after_seq: int, limit: int, shards: Collection[int] | None = None
    ) -> list[InboxRow]:
        """Inbox rows after ``after_seq``, oldest first; only runs of ``shards`` when given."""
        tags: list[str] = []
        if shards is not None:
            tags = [
                self.keys.tags[shard] for shard in sorted(set(shards)) if 0 <= shard < len(self.keys.tags)
            ]
            if not tags:
                return []
        rows = await self.script("read_inbox", [str(after_seq), str(limit), *tags], idempotent=True)
        return self.inbox_rows(rows)

    async def shard_leases(self) -> dict[int, tuple[int, int]]:
        """shard -> (epoch, lease end in ms)."""
        found = await self.run(lambda r: r.hgetall(self.keys.global_key("shards")), idempotent=True)
        leases = {}
        for shard, lease in found.items():
            epoch, _, until = lease.partition(b":")
            leases[int(shard)] = (int(epoch), int(until))
        return leases

    async def next_due_ms(self) -> int | None:
        """When the earliest timer or lease comes due."""

        async def read(r: Any) -> list[Any]:
            async with r.pipeline(transaction=False) as pipe:
                pipe.zrange(self.keys.global_key("timers"), 0, 0, withscores=True)
                pipe.zrange(self.keys.global_key("leases"), 0, 0, withscores=True)
                return list(await pipe.execute())

        firsts = [int(found[0][1]) for found in await self.run(read, idempotent=True) if found]
        return min(firsts, default=None)

    async def list_workers(self) -> list[WorkerInfo]:
        """Registered workers, by id."""

        async def read(r: Any) -> list[Any]:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hgetall(self.keys.global_key("workers"))
                pipe.hgetall(self.keys.global_key("workers:hb"))
                return list(await pipe.execute())

        infos, beats = await self.run(read, idempotent=True)
        workers = []
        for worker_id, body in sorted(infos.items()):
            info = orjson.loads(body)
            beat = int(beats.get(worker_id, info["started_ms"]))
            workers.append(
                WorkerInfo(
                    text(worker_id),
                    frozenset(info["targets"]),
                    info["labels"],
                    info["slots"],
                    beat,
                    info["started_ms"],
                )
            )
        return workers


def assemble_output(rows: dict[bytes, bytes]) -> Any:
    """A step's output from its stored rows: the value (index -1), a list in index order, or None."""
    result: Any = None
    for index, body in sorted((int(i), b) for i, b in rows.items()):
        if index < 0:
            result = orjson.loads(body)
        else:
            if not isinstance(result, list):
                result = []
            result.append(orjson.loads(body))
    return result


def lex_bounds(prefix: str, after: str) -> tuple[bytes, bytes]:
    """ZRANGEBYLEX bounds for keys starting with ``prefix`` and greater than ``after``.

    Keys compare as UTF-8 bytes, which orders them by code point; no UTF-8
    text holds the byte 0xFF, so ``prefix + 0xFF`` is above every key that
    starts with ``prefix``.
    """
    p, a = prefix.encode(), after.encode()
    low = b"(" + a if a and a >= p else (b"[" + p if p else b"-")
    high = b"(" + p + b"\xff" if p else b"+"
    return low, high
