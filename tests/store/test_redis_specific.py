"""What only the Redis store does: server checks, its layout version, races between processes, lost connections.

These tests open RedisStore directly on a key prefix of their own (not the
parametrized ``store`` fixture, which may be another backend), on the server
:func:`covey.testing.servers.redis_url` finds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from covey.bus.base import RESYNC, Subscription
from covey.bus.memory import MemoryBus
from covey.bus.redis import RedisBus
from covey.engine.commands import SetTimer
from covey.engine.events import RunFinished, SignalReceived, TaskSucceeded, event_to_json
from covey.errors import BackendError, BackendUnavailable, ConfigError, CoveyError
from covey.state.model import StateEntry, StateOp
from covey.store.base import (
    AGING_MS,
    SHARDS,
    ClaimRequest,
    CommitBatch,
    InboxRow,
    Lease,
    report_row_id,
    shard_of,
)
from covey.store.feeds import DEFAULT_FEED_KEEP
from covey.store.redis import LAYOUT_VERSION, RedisStore
from covey.store.redis.tasks import FOLLOW_UP_AFTER_S
from covey.testing import wait_for
from covey.testing.conformance.driver import Driver, claim_request, inbox_row, task, wait_past
from covey.testing.servers import redis_url
from tests.store.backend_redis import delete_prefix

pytestmark = pytest.mark.asyncio


@pytest.fixture
def url() -> str:
    return redis_url()


@pytest.fixture
async def prefix(url: str) -> AsyncIterator[str]:
    name = f"covey-test-{uuid.uuid4().hex[:16]}"
    yield name
    await delete_prefix(url, name)


@pytest.fixture
async def raw(url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client beside the store, to look at and tamper with the server."""
    client = aioredis.Redis.from_url(url)
    yield client
    await client.aclose()


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _covey_clients(raw: aioredis.Redis, prefix: str) -> list[int]:
    return [int(c["id"]) for c in await raw.client_list() if c.get("name") == f"covey-{prefix}"]


# -- checks on opening -----------------------------------------------------------------


async def test_a_server_that_may_evict_keys_is_refused(url: str, prefix: str, raw: aioredis.Redis) -> None:
    found: dict[Any, Any] = dict(await raw.config_get("maxmemory-policy"))
    before = text(found.get(b"maxmemory-policy", found.get("maxmemory-policy")))
    await raw.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(ConfigError) as caught:
            async with RedisStore(url, prefix=prefix):
                pass
        message = str(caught.value)
        assert "maxmemory-policy" in message
        assert "'allkeys-lru'" in message
        assert "noeviction" in message
        # Whoever made sure of the policy some other way may say so.
        async with RedisStore(url, prefix=prefix, check_eviction=False) as store:
            assert await store.now_ms() > 0
    finally:
        await raw.config_set("maxmemory-policy", before)
    assert await _covey_clients(raw, prefix) == []


async def test_a_user_who_may_not_read_the_config_is_told_what_to_do(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    user, password = f"covey-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await raw.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-config"],
    )
    try:
        limited = url.replace("redis://", f"redis://{user}:{password}@", 1)
        with pytest.raises(ConfigError) as caught:
            async with RedisStore(limited, prefix=prefix):
                pass
        message = str(caught.value)
        assert "CONFIG GET is not permitted" in message
        assert "check_eviction=False" in message
        assert password not in message
        async with RedisStore(limited, prefix=prefix, check_eviction=False) as store:
            (entry,) = await store.state_apply([StateOp("put", "ns", "k", 1)])
            assert entry.version == 1
    finally:
        await raw.acl_deluser(user)


async def test_errors_name_the_server_never_its_credentials(prefix: str) -> None:
    store = RedisStore("redis://someone:s3cret-pw@127.0.0.1:1/0", prefix=prefix)

    with pytest.raises(BackendUnavailable) as caught:
        async with store:
            pass

    assert "redis://127.0.0.1:1/0" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
    assert "s3cret-pw" not in repr(store)


async def test_a_bad_prefix_is_refused(url: str) -> None:
    for bad in ("", "a{b", "a}b", "a:b", "a b"):
        with pytest.raises(ConfigError, match="prefix"):
            RedisStore(url, prefix=bad)


# -- layout ----------------------------------------------------------------------------


async def test_an_older_covey_refuses_a_newer_layout(url: str, prefix: str, raw: aioredis.Redis) -> None:
    async with RedisStore(url, prefix=prefix):
        pass
    meta = f"{{{prefix}}}:meta"
    assert await raw.hget(meta, "layout") == str(LAYOUT_VERSION).encode()
    newer = LAYOUT_VERSION + 1
    await raw.hset(meta, "layout", newer)

    with pytest.raises(CoveyError) as caught:
        async with RedisStore(url, prefix=prefix):
            pass

    message = str(caught.value)
    assert f"layout version {newer}" in message
    assert f"newer than this covey knows ({LAYOUT_VERSION})" in message
    assert "upgrade covey" in message
    assert prefix in message
    assert await raw.hget(meta, "layout") == str(newer).encode()
    assert await _covey_clients(raw, prefix) == []  # the refused opening left no connection behind


async def test_a_layout_1_prefix_is_upgraded_and_its_histories_read_as_before(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    # Given a prefix as covey wrote it at layout 1, where a run's history was a list.
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run("r1", {"q": 1})
        await d.commit(d.write("r1"))
        before = await store.load_history("r1")
    key, meta = f"{{{prefix}:{shard_of('r1')}}}:ev:r1", f"{{{prefix}}}:meta"
    bodies = [fields[b"e"] for _, fields in await raw.xrange(key)]
    await raw.delete(key)
    await raw.rpush(key, *bodies)
    await raw.hset(meta, "layout", 1)

    # When covey opens it: the history is a Stream, read as before, and new events follow on.
    async with RedisStore(url, prefix=prefix) as store:
        assert await raw.type(key) == b"stream"
        assert await store.load_history("r1") == before
        d = await Driver.start(store)
        d.seqs["r1"] = len(before)
        assert not (await d.commit(d.write("r1"))).conflicts
        after = await store.load_history("r1")

    assert len(before) == 2
    assert after[:2] == before
    assert len(after) == 3
    assert [entry_id for entry_id, _ in await raw.xrange(key)] == [b"1-0", b"2-0", b"3-0"]
    assert await raw.hget(meta, "layout") == str(LAYOUT_VERSION).encode()


async def test_a_commit_of_several_events_is_one_history_entry(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run("r1")
        signals = [SignalReceived(f"s{n}", "go", {"n": n}, 0) for n in range(3)]
        assert not (await d.commit(d.write("r1", *signals))).conflicts
        assert not (await d.commit(d.write("r1"))).conflicts
        history = await store.load_history("r1")

    entries = await raw.xrange(f"{{{prefix}:{shard_of('r1')}}}:ev:r1")
    # One entry per commit, named by the sequence number of its last event.
    assert [entry_id for entry_id, _ in entries] == [b"1-0", b"4-0", b"5-0"]
    assert [sorted(fields) for _, fields in entries] == [[b"e"], [b"es"], [b"e"]]
    assert len(history) == 5
    assert history[1:4] == [event_to_json(signal) for signal in signals]
    assert history[4]["type"] == "SignalReceived"


@pytest.mark.parametrize("reader", ["the committing store", "another store"])
async def test_a_commit_consumes_exactly_its_rows_among_others_of_many_shards(
    url: str, prefix: str, raw: aioredis.Redis, reader: str
) -> None:
    # Twelve rows of four runs, interleaved; a commit consumes some of them, in runs of consecutive
    # seqs and alone, through its run writes and as rows consumed without a decision. A store that
    # read the rows names their ids; one that did not has the script look them up.
    async with RedisStore(url, prefix=prefix) as store, RedisStore(url, prefix=prefix) as other:
        d = await Driver.start(store)
        runs = ["r0", "r1", "r2", "r3"]
        for run in runs:
            await d.start_run(run)
        rows = [inbox_row(f"s{n}", runs[n % 4], SignalReceived(f"s{n}", "go", None, 0)) for n in range(12)]
        await store.append_inbox(rows)
        seq = {
            row.id: row.seq
            for row in await (store if reader == "the committing store" else other).read_inbox(0, 100)
        }
        taken = {"s0", "s1", "s2", "s4", "s5", "s6", "s11"}
        writes = []
        for run in ("r0", "r1", "r2"):
            write = d.write(run)
            write.consumed += [seq[row.id] for row in rows if row.run_id == run and row.id in taken - {"s1"}]
            writes.append(write)
        assert not (await d.commit(*writes, consumed=[seq["s1"], seq["s11"]])).conflicts

        left = [f"s{n}" for n in range(12) if f"s{n}" not in taken]
        assert [row.id for row in await store.read_inbox(0, 100)] == left
        run_of = {row.id: row.run_id for row in rows}
        for run in runs:
            mine = [row.id for row in await store.read_inbox(0, 100, shards={shard_of(run)})]
            assert mine == [i for i in left if shard_of(run_of[i]) == shard_of(run)]
        assert sorted(await _waiting_ids(raw, prefix)) == sorted(left)
        shard_ids = set()
        for run in runs:
            shard_ids |= set(await raw.zrange(f"{{{prefix}:{shard_of(run)}}}:inbox", 0, -1))
        assert shard_ids == {i.encode() for i in left}


async def test_an_id_committed_as_seen_while_its_row_waits_stays_seen_once_the_row_is_consumed(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    # A signal id whose row waits in the inbox is committed as seen by a commit without that row
    # (delivered another way); consuming the row later must not forget the id.
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run("r1")
        await store.append_inbox([inbox_row("sig-x", "r1", SignalReceived("sig-x", "go", None, 0))])
        (row,) = await store.read_inbox(0, 10)
        assert await store.seen(["sig-x"]) == set()
        direct = d.write("r1")
        direct.seen.append("sig-x")
        assert not (await d.commit(direct)).conflicts
        assert await store.seen(["sig-x"]) == {"sig-x"}
        later = d.write("r1")
        later.consumed.append(row.seq)
        assert not (await d.commit(later)).conflicts
        assert await store.read_inbox(0, 10) == []
        assert await store.seen(["sig-x"]) == {"sig-x"}
        await store.append_inbox([inbox_row("sig-x", "r1", SignalReceived("sig-x", "go", None, 0))])
        assert await store.read_inbox(0, 10) == []
        assert await raw.hget(f"{{{prefix}}}:seen", "sig-x") == b"r1"


async def _waiting_ids(raw: aioredis.Redis, prefix: str) -> list[str]:
    """The ids the store holds as those of waiting inbox rows ("" in the seen hash)."""
    return [text(i) for i, value in (await raw.hgetall(f"{{{prefix}}}:seen")).items() if value == b""]


async def _seen_as_layout_4(raw: aioredis.Redis, prefix: str) -> None:
    """Rewrite a prefix's ids and run indexes as layout 4 kept them: the ids of waiting rows in a
    hash of their own (id -> seq), and an index of all runs beside the status indexes."""
    g = f"{{{prefix}}}:"
    for member, seq in await raw.zrange(g + "inbox", 0, -1, withscores=True):
        row_id = orjson.loads(member[member.index(b"}:") + 2 :])[1]
        await raw.hdel(g + "seen", row_id)
        await raw.hset(g + "inbox:ids", row_id, int(seq))
    for status in ("running", "succeeded", "failed", "cancelled"):
        for key, created in await raw.zrange(g + f"runs:{status}", 0, -1, withscores=True):
            await raw.zadd(g + "runs", {key: created})


async def _inbox_as_layout_2(raw: aioredis.Redis, prefix: str) -> None:
    """Rewrite a prefix's inbox as layout 2 kept it: a hash per row, its key in both indexes."""
    index = f"{{{prefix}}}:inbox"
    for member, score in await raw.zrange(index, 0, -1, withscores=True):
        tag, _, body = member.partition(b"}:")
        tag += b"}:"
        seq, row_id, run_id, event, output, ops = orjson.loads(body)
        key = tag + b"in:" + str(seq).encode()
        fields = {"id": row_id, "run": run_id, "ev": orjson.dumps(event), "z": tag + b"inbox"}
        fields |= {"out": output} if output else {}
        fields |= {"ops": ops} if ops else {}
        await raw.hset(key, mapping=fields)
        await raw.zrem(index, member)
        await raw.zadd(index, {key: score})
        await raw.zrem(tag + b"inbox", row_id)
        await raw.zadd(tag + b"inbox", {key: score})


async def test_a_layout_2_prefix_is_upgraded_and_its_inbox_reads_and_consumes_as_before(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    # Given a prefix as covey wrote it at layout 2: three pending inbox rows of two runs (one with an
    # output and staged writes), each a hash, and a copy pushed to a waiting node in the old shape.
    ops = [StateOp("put", "run:r1", "k", [1, "two"]).to_json()]
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run("r1")
        await d.start_run("r2")
        rich = dataclasses.replace(
            inbox_row("s3", "r1", SignalReceived("s3", "go", None, 0), output={"text": "é"}), state_ops=ops
        )
        await store.append_inbox(
            [
                inbox_row("s1", "r1", SignalReceived("s1", "go", None, 0)),
                inbox_row("s2", "r2", SignalReceived("s2", "go", None, 0)),
                rich,
            ]
        )
        before = await store.read_inbox(0, 10)
    await _seen_as_layout_4(raw, prefix)
    await _inbox_as_layout_2(raw, prefix)
    stale_push = f"{{{prefix}}}:inq:7"
    await raw.rpush(stale_push, b'["1","s1","r1","{}",false,false]')
    await raw.hset(f"{{{prefix}}}:meta", "layout", 2)

    # When covey opens it: the rows read as before, whole or by shard, and commits consume them.
    async with RedisStore(url, prefix=prefix) as store:
        assert await store.read_inbox(0, 10) == before
        assert await store.read_inbox(0, 10, shards={shard_of("r2")}) == [before[1]]
        assert not [key async for key in raw.scan_iter(match=f"{{{prefix}:*}}:in:*")]
        assert not await raw.exists(stale_push)

        d = await Driver.start(store)
        d.seqs.update({"r1": 1, "r2": 1})
        write = d.write("r1")
        write.consumed.append(before[0].seq)
        assert not (await d.commit(write, consumed=[before[1].seq])).conflicts
        assert [row.id for row in await store.read_inbox(0, 10)] == ["s3"]
        assert await _waiting_ids(raw, prefix) == ["s3"]

        # A consumed row's id may come again; a pending one's is still ignored.
        await store.append_inbox([inbox_row("s1", "r1", SignalReceived("s1", "go", None, 0)), rich])
        assert [row.id for row in await store.read_inbox(0, 10)] == ["s3", "s1"]
        assert await raw.hget(f"{{{prefix}}}:meta", "layout") == str(LAYOUT_VERSION).encode()


async def test_a_layout_4_prefix_is_upgraded_and_its_ids_and_runs_serve_as_before(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    # Given a prefix as covey wrote it at layout 4: two rows waiting in the inbox, their ids in a hash
    # of their own, a signal id committed as seen, and three runs, one finished, in the index of all.
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        for run in ("r1", "r2", "r3"):
            await d.start_run(run)
        done = d.write("r1")
        done.status, done.finished_ms = "succeeded", 5
        done.seen.append("sig-0")
        assert not (await d.commit(done)).conflicts
        await store.append_inbox(
            [inbox_row(f"s{n}", "r2", SignalReceived(f"s{n}", "go", None, 0)) for n in (1, 2)]
        )
        waiting = await store.read_inbox(0, 10)
        runs = await store.list_runs(limit=-1)
    await _seen_as_layout_4(raw, prefix)
    await raw.hset(f"{{{prefix}}}:meta", "layout", 4)
    assert await raw.hlen(f"{{{prefix}}}:inbox:ids") == 2
    assert await raw.zcard(f"{{{prefix}}}:runs") == 3

    # When covey opens it: waiting ids and the seen one are still refused, the old keys are gone,
    # runs list as before, and a consumed row's id may come again.
    async with RedisStore(url, prefix=prefix) as store:
        assert not await raw.exists(f"{{{prefix}}}:inbox:ids", f"{{{prefix}}}:runs")
        assert sorted(await _waiting_ids(raw, prefix)) == ["s1", "s2"]
        assert await store.seen(["sig-0", "s1", "s9"]) == {"sig-0"}
        await store.append_inbox(
            [inbox_row(i, "r2", SignalReceived(i, "go", None, 0)) for i in ("s1", "sig-0", "s3")]
        )
        assert [row.id for row in await store.read_inbox(0, 10)] == ["s1", "s2", "s3"]
        assert await store.list_runs(limit=-1) == runs
        assert [r.run_id for r in await store.list_runs(limit=1)] == [runs[0].run_id]
        assert [r.run_id for r in await store.list_runs(status="succeeded")] == ["r1"]

        d = await Driver.start(store)
        d.seqs.update({"r1": 2, "r2": 1, "r3": 1})
        write = d.write("r2")
        write.consumed.append(waiting[0].seq)
        assert not (await d.commit(write)).conflicts
        assert sorted(await _waiting_ids(raw, prefix)) == ["s2", "s3"]
        await store.append_inbox([inbox_row("s1", "r2", SignalReceived("s1", "go", None, 0))])
        assert [row.id for row in await store.read_inbox(0, 10)] == ["s2", "s3", "s1"]
        assert await raw.hget(f"{{{prefix}}}:meta", "layout") == str(LAYOUT_VERSION).encode()


async def test_every_key_carries_its_prefix_and_shard_tag(url: str, prefix: str, raw: aioredis.Redis) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run("r1", {"q": 1}, enqueue=[task("r1", "a")], outputs=[("o", -1, 1)])
        await store.state_apply([StateOp("put", "run:r1", "k", 1), StateOp("put", "docs", "k", 1)])
        await store.claim(claim_request())

    keys = sorted([k.decode() async for k in raw.scan_iter(match=f"{{{prefix}*")])
    tag = f"{{{prefix}:{shard_of('r1')}}}:"
    assert all(k.startswith((f"{{{prefix}}}:", f"{{{prefix}:")) for k in keys)
    run_keys = [k for k in keys if "r1" in k]
    assert {f"{tag}run:r1", f"{tag}ev:r1", f"{tag}task:r1/a", f"{tag}out:r1/o", f"{tag}nsdata:run:r1"} <= set(
        run_keys
    )
    assert all(k.startswith(tag) for k in run_keys)
    assert f"{{{prefix}}}:nsdata:docs" in keys


async def _as_layout_5(raw: aioredis.Redis, prefix: str) -> None:
    """Rewrite a prefix as layout 5 kept it: no index of finished runs, and run rows that name
    neither their output steps, nor their timers, nor the ids they remembered."""
    await raw.delete(f"{{{prefix}}}:finished")
    async for key in raw.scan_iter(match=f"{{{prefix}:*}}:run:*"):
        fields = [f for f in await raw.hkeys(key) if f[:2] in (b"o:", b"t:", b"s:")]
        if fields:
            await raw.hdel(key, *fields)
    await raw.hset(f"{{{prefix}}}:meta", "layout", 5)


async def test_a_layout_5_prefix_is_upgraded_and_its_finished_runs_purge_without_a_trace(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    # Given a prefix as covey wrote it at layout 5: a finished run with outputs, a timer still due
    # and a remembered signal id, and a running run with the same.
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        now = await store.now_ms()
        for run in ("gone", "kept"):
            await d.start_run(
                run,
                timers=[SetTimer(f"deadline:{run}", run, now + 3_600_000, "run_deadline")],
                outputs=[("a", -1, {"of": run}), ("m", 0, 1), ("m", 1, 2)],
            )
            write = d.write(run)
            write.seen.append(f"sig-{run}")
            assert not (await d.commit(write)).conflicts
        done = d.write("gone", RunFinished("succeeded", now))
        done.status, done.finished_ms = "succeeded", now
        assert not (await d.commit(done)).conflicts
    await _as_layout_5(raw, prefix)

    # When covey opens it, the upgrade indexes what the purge needs: nothing of the finished run is
    # left after it, and the running one keeps everything.
    async with RedisStore(url, prefix=prefix) as store:
        assert await raw.hget(f"{{{prefix}}}:meta", "layout") == str(LAYOUT_VERSION).encode()
        assert await store.purge_finished(await wait_past(store, now), 10) == ["gone"]

        left = [key async for key in raw.scan_iter(match=f"*{prefix}*")]
        assert not [key for key in left if b"gone" in key]
        for key in left:
            kind = await raw.type(key)
            if kind == b"hash":
                assert not [f for f, v in (await raw.hgetall(key)).items() if b"gone" in f + v], key
            elif kind == b"zset":
                assert not [m for m in await raw.zrange(key, 0, -1) if b"gone" in m], key
        assert await store.get_outputs("kept", ["a", "m"]) == {"a": {"of": "kept"}, "m": [1, 2]}
        assert await store.seen(["sig-kept", "sig-gone"]) == {"sig-kept"}
        assert await store.next_due_ms() == now + 3_600_000


# -- scripts, connections --------------------------------------------------------------


async def test_scripts_are_loaded_again_after_the_server_forgot_them(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await raw.script_flush()  # what a restart of the server does to the script cache

        await d.start_run("r1", enqueue=[task("r1", "a")])

        (lease,) = await store.claim(claim_request())
        assert lease.task_id == "r1/a"


async def test_a_connection_killed_by_the_server_fails_one_call_at_most(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        await store.state_apply([StateOp("put", "ns", "k", 0)])
        ids = await _covey_clients(raw, prefix)
        assert ids
        for client_id in ids:
            await raw.client_kill_filter(_id=str(client_id))

        async def gone() -> bool:
            return not set(ids) & set(await _covey_clients(raw, prefix))

        await wait_for(gone, message="the store's connections to be closed by the server")

        # The first call after the kill may fail, as a BackendError (whether it applied is unknown) ...
        failure: BackendError | None = None
        try:
            await store.state_apply([StateOp("put", "ns", "k", 1)])
        except BackendError as exc:
            failure = exc
        assert failure is None or "redis://127.0.0.1" in str(failure)
        # ... and the next one works, on a new connection.
        (entry,) = await store.state_apply([StateOp("put", "ns", "k", 2)])
        assert entry.value == 2
        assert await store.state_get("ns", "k") == entry


# -- races between processes -----------------------------------------------------------


async def test_two_stores_committing_one_run_never_both_win(url: str, prefix: str) -> None:
    async with RedisStore(url, prefix=prefix) as first, RedisStore(url, prefix=prefix) as second:
        d = await Driver.start(first)
        await d.start_run("r1")
        other = Driver(second, d.epoch)
        rounds = 40
        for _ in range(rounds):
            other.seqs = dict(d.seqs)
            mine, theirs = d.write("r1"), other.write("r1")

            results = await asyncio.gather(d.commit(mine), other.commit(theirs))

            assert sorted(len(r.conflicts) for r in results) == [0, 1]
            d.seqs["r1"] = max(d.seqs["r1"], other.seqs["r1"])

        info = await first.get_run("r1")
        assert info is not None
        assert info.seq == 1 + rounds
        assert len(await second.load_history("r1")) == 1 + rounds


async def test_concurrent_claimers_never_lease_one_task_twice(url: str, prefix: str) -> None:
    async with RedisStore(url, prefix=prefix) as first, RedisStore(url, prefix=prefix) as second:
        d = await Driver.start(first)
        await d.start_run("r1", enqueue=[task("r1", "m", i) for i in range(300)])

        async def claimer(store: RedisStore, worker: str) -> list[str]:
            got: list[str] = []
            while leases := await store.claim(claim_request(worker, limit=7)):
                got.extend(lease.task_id for lease in leases)
            return got

        claimed = await asyncio.gather(
            *(claimer(store, f"w{n}") for n, store in enumerate([first, second] * 3))
        )

        every = [task_id for got in claimed for task_id in got]
        assert len(every) == 300
        assert len(set(every)) == 300
        assert {t.status for t in await second.list_tasks("r1")} == {"leased"}


async def test_concurrent_reducer_updates_from_two_stores_lose_nothing(url: str, prefix: str) -> None:
    async with RedisStore(url, prefix=prefix) as first, RedisStore(url, prefix=prefix) as second:

        async def add(store: RedisStore) -> None:
            for _ in range(30):
                await store.state_apply([StateOp("update", "ns", "n", 1, "add")])

        await asyncio.gather(*(add(store) for store in [first, second] * 3))

        assert await first.state_get("ns", "n") == StateEntry("ns", "n", 180, 180)
        changes = await second.state_changes("ns", 0)
        assert [c.seq for c in changes] == list(range(1, 181))
        assert [c.value for c in changes] == list(range(1, 181))


async def test_a_crowd_of_writers_on_one_hot_key_all_land(url: str, prefix: str) -> None:
    # 400 writers per store at once: more than a connection pool holds (callers queue for one),
    # and writers of one process take turns on the key instead of making each other retry.
    async with RedisStore(url, prefix=prefix) as first, RedisStore(url, prefix=prefix) as second:
        await asyncio.gather(
            *(store.state_apply([StateOp("update", "ns", "n", 1, "add")]) for store in [first, second] * 400)
        )

        assert await first.state_get("ns", "n") == StateEntry("ns", "n", 800, 800)


# -- change feeds ---------------------------------------------------------------------


async def _feed_ids(raw: aioredis.Redis, feed: str) -> list[str]:
    """The entry ids a feed holds on the server, oldest first."""
    return [text(entry_id) for entry_id, _ in await raw.xrange(feed) or []]


async def test_each_write_path_trims_a_feed_to_exactly_what_it_keeps(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    # Exact trimming: a MAXLEN ~ would keep whole stream nodes (up to 100 entries) past feed_keep.
    async with RedisStore(url, prefix=prefix) as store:
        feed = store.keys.ns("nsfeed", "ns")
        for i in range(20):
            await store.state_apply([StateOp("put", "ns", f"k{i}", i)])
        assert await raw.xlen(feed) == 20

        store.feed_keep = 3  # the next write cuts the grown feed down at once
        await store.state_apply([StateOp("put", "ns", "k", 0)])
        assert await _feed_ids(raw, feed) == ["19-0", "20-0", "21-0"]

        for _ in range(5):  # decided in Python from a snapshot
            await store.state_apply([StateOp("update", "ns", "n", 1, "add")])
        assert await raw.xlen(feed) == 3
        token = await store.lock_acquire("l", "me", ttl_ms=10_000)
        assert token is not None
        for i in range(5):  # guarded by a lock
            await store.state_apply([StateOp("put", "ns", "k", i)], lock=("l", token))
        assert await _feed_ids(raw, feed) == ["29-0", "30-0", "31-0"]
        assert await raw.get(store.keys.ns("nsseq", "ns")) == b"31"


async def test_a_feed_keeps_at_least_one_change(url: str, prefix: str) -> None:
    # An empty feed would hide a gap from trimmed_past: it tells one by the first change it reads.
    async with RedisStore(url, prefix=prefix) as store:
        with pytest.raises(ConfigError, match="at least 1"):
            store.feed_keep = 0
        assert store.feed_keep == DEFAULT_FEED_KEEP


# -- the inbox by shard ---------------------------------------------------------------


async def test_reading_the_inbox_of_many_shards_pages_like_a_filter_of_all_of_it(
    url: str, prefix: str
) -> None:
    # Rows of 300 runs spread over the shards; an engine loop holding 3, 40 or all of them reads
    # (a few shards merge their own indexes, many walk the global one).
    async with RedisStore(url, prefix=prefix) as store:
        runs = [f"run-{n}" for n in range(300)]
        await store.append_inbox(
            [inbox_row(f"s{n}", run, SignalReceived(f"s{n}", "go", None, 0)) for n, run in enumerate(runs)]
        )
        everything = await store.read_inbox(0, 1000)
        assert len(everything) == 300
        for held in (set(range(3)), set(range(0, 256, 6)), set(range(256))):
            expected = [row.id for row in everything if shard_of(row.run_id) in held]
            pages, cursor = [], 0
            while page := await store.read_inbox(cursor, 7, shards=held):
                assert len(page) <= 7
                pages.extend(row.id for row in page)
                cursor = page[-1].seq
            assert pages == expected, len(held)


# -- claim order -----------------------------------------------------------------------


async def test_a_long_wait_outranks_a_higher_priority(url: str, prefix: str, raw: aioredis.Redis) -> None:
    # Given a priority-0 task that has waited 2.5 aging periods (its ready time moved back, not slept),
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "old", priority=0)])
        key = f"{{{prefix}:{shard_of('r1')}}}:task:r1/old"
        ready, score = await raw.hmget(key, ["rq", "sc"])
        assert ready is not None
        assert score is not None
        aged = int(score) - 5 * AGING_MS // 2
        await raw.hset(key, "sc", aged)
        await raw.zadd(ready, {key: aged})
        # and newer tasks at priorities 2 and 3,
        await d.update("r1", enqueue=[task("r1", "p2", priority=2), task("r1", "p3", priority=3)])

        # when a worker claims one at a time,
        order = [[lease.step for lease in await store.claim(claim_request(limit=1))] for _ in range(3)]

    # then the old task overtakes priority 2 but not priority 3.
    assert order == [["p3"], ["old"], ["p2"]]


# -- reducers decided in Python --------------------------------------------------------


async def test_a_reducer_decided_from_a_read_that_moved_is_decided_again(
    url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store whose next snapshot is followed at once by another process's add to the key it read,
    async with RedisStore(url, prefix=prefix) as store, RedisStore(url, prefix=prefix) as other:
        d = await Driver.start(store)
        await d.start_run("r1")
        read = store.snapshot
        pending: list[int] = []

        async def snapshot_then_interleave(**kwargs: object) -> object:
            snap = await read(**kwargs)  # type: ignore[arg-type]
            if pending:
                await other.state_apply([StateOp("update", "ns", "n", pending.pop(), "add")])
            return snap

        monkeypatch.setattr(store, "snapshot", snapshot_then_interleave)

        # when a live add and a staged add are each decided from such a read,
        pending.append(100)
        (live,) = await store.state_apply([StateOp("update", "ns", "n", 1, "add")])
        pending.append(1000)
        staged = d.write("r1")
        staged.state_ops.append(StateOp("update", "ns", "n", 10, "add"))
        result = await d.commit(staged)

    # then each saw the key move, read again, and counted on top of the other's write: nothing is lost.
    assert pending == []
    assert (live.value, live.version) == (101, 2)
    assert (result.conflicts, result.state_errors) == (set(), {})
    async with RedisStore(url, prefix=prefix) as store:
        assert await store.state_get("ns", "n") == StateEntry("ns", "n", 1111, 4)
        assert [c.value for c in await store.state_changes("ns", 0)] == [100, 101, 1101, 1111]


async def test_a_task_enqueued_without_a_read_note_still_gets_its_input(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    # Rows an older covey wrote have no "need" field: the claim reads their inputs afterwards.
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run(
            "r1",
            {"v": 1},
            outputs=[("a", -1, {"x": 2})],
            enqueue=[
                task("r1", "old", template={"v": "${input.v}", "x": "${steps.a.x}"}),
                task("r1", "new", template={"v": "${input.v}", "x": "${steps.a.x}"}),
            ],
        )
        old_key = store.keys.task("r1/old")
        assert await raw.hget(old_key, "need") == b'[1,"a"]'
        await raw.hdel(old_key, "need")

        leases = {lease.step: lease.input for lease in await store.claim(claim_request())}

        assert leases == {"old": {"v": 1, "x": 2}, "new": {"v": 1, "x": 2}}


async def test_a_store_on_its_buss_server_publishes_hints_inside_its_writes(url: str, prefix: str) -> None:
    async with RedisStore(url, prefix=prefix) as store, RedisBus(url, prefix=prefix) as bus:
        assert store.carry_hints(bus)
        subscription = await bus.subscribe({"inbox", "ready:next", "ready:other"})
        d = await Driver.start(store)
        await d.start_run("r1")

        await store.append_inbox([inbox_row("s1", "r1", SignalReceived("s1", "go", None, 0))])
        assert await _hints(subscription) == {"inbox"}
        assert [row.id for row in await store.read_inbox(0, 10)] == ["s1"]  # the row was in before the hint

        write = d.write("r1")
        write.enqueue.append(task("r1", "b", target="next"))
        batch = CommitBatch(d.epoch, [write], hints={"ready:next"})
        await store.commit(batch)
        assert await _hints(subscription) == {"ready:next"}
        assert [lease.task_id for lease in await store.claim(claim_request(targets=["next"]))] == ["r1/b"]
        await subscription.close()


async def _hints(subscription: Subscription) -> set[str]:
    """The next hints heard, leaving out RESYNC (a reconnection of the bus says nothing of writes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while loop.time() < deadline:
        heard = await subscription.wait(deadline - loop.time()) - {RESYNC}
        if heard:
            return heard
    return set()


async def test_hints_stay_with_the_callers_unless_the_bus_is_on_the_stores_server(
    url: str, prefix: str
) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        elsewhere = RedisBus("redis://127.0.0.1:1/0", prefix=prefix)  # never entered: no connection needed
        assert not store.carry_hints(elsewhere)
        assert store.hint_prefix is None
        async with MemoryBus() as memory:
            assert not store.carry_hints(memory)
        # With no hint prefix the scripts publish nothing, and the writes still work.
        d = await Driver.start(store)
        await d.start_run("r1")
        await store.append_inbox([inbox_row("s1", "r1", SignalReceived("s1", "go", None, 0))])
        assert [row.id for row in await store.read_inbox(0, 10)] == ["s1"]


# -- standing claims: a worker waiting in the store -------------------------------------


async def _waiting(raw: aioredis.Redis, store: RedisStore, worker: str) -> bool:
    return bool(await raw.hexists(store.keys.global_key("waiter"), worker))


async def _wait_in_store(
    store: RedisStore, raw: aioredis.Redis, request: ClaimRequest, wait_s: float = 10.0
) -> asyncio.Task[list[Lease]]:
    """A claim waiting in the store, returned once its standing claim is there."""
    waiter = asyncio.create_task(store.claim_or_wait(request, wait_s))
    await wait_for(
        lambda: _waiting(raw, store, request.worker_id),
        5.0,
        0.01,
        message=f"{request.worker_id}'s standing claim",
    )
    return waiter


async def test_a_waiting_claim_is_handed_the_task_a_commit_makes_ready(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    async with RedisStore(url, prefix=prefix) as store, RedisBus(url, prefix=prefix) as bus:
        assert store.carry_hints(bus)
        subscription = await bus.subscribe({"ready:next", "state:ns"})
        d = await Driver.start(store)
        await d.start_run("r1", outputs=[("a", -1, {"y": 7})])
        request = claim_request("w1", ["next", "other"], limit=1)
        waiter = await _wait_in_store(store, raw, request, 10.0)

        write = d.write("r1")
        write.enqueue.append(task("r1", "b", target="next", template={"y": "${steps.a.y}"}))
        await store.commit(CommitBatch(d.epoch, [write], hints={"ready:next"}))
        (lease,) = await asyncio.wait_for(waiter, 5.0)

        assert (lease.task_id, lease.lease_no, lease.input) == ("r1/b", 1, {"y": 7})
        (row,) = await store.list_tasks("r1")
        assert (row.status, row.worker_id) == ("leased", "w1")
        # No ready hint went out for a task already handed over: the next hint heard is a later one.
        await store.commit(CommitBatch(d.epoch, [d.write("r1")], hints={"state:ns"}))
        assert await _hints(subscription) == {"state:ns"}
        assert not await _waiting(raw, store, "w1")

        async def withdrawn() -> bool:  # the claim's entry for its other target goes in the background
            return await raw.llen(store.keys.global_key("waiting:other")) == 0

        await wait_for(withdrawn, 5.0, 0.01, message="the used claim's entries to go")
        await subscription.close()


async def test_a_standing_claim_stands_for_each_free_slot_taking_turns_with_the_others(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run("r1")
        waiters = []
        for worker, slots in (("w1", 2), ("w2", 1)):  # w1 has two free slots, w2 one; w1 waited longest
            waiters.append(await _wait_in_store(store, raw, claim_request(worker, limit=slots), 10.0))

        await d.update("r1", enqueue=[task("r1", "m", i) for i in range(4)])

        got = await asyncio.wait_for(asyncio.gather(*waiters), 5.0)
        assert sum(map(len, got)) == 3
        owners = {t.task_id: t.worker_id for t in await store.list_tasks("r1")}
        assert owners == {"r1/m/0": "w1", "r1/m/1": "w2", "r1/m/2": "w1", "r1/m/3": None}
        assert not await _waiting(raw, store, "w1")
        assert not await _waiting(raw, store, "w2")


async def test_a_standing_claim_whose_labels_do_not_fit_is_passed_over(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run("r1")
        waiter = await _wait_in_store(store, raw, claim_request("plain", ["next"]), 10.0)

        await d.update("r1", enqueue=[task("r1", "b", target="next", labels={"gpu": "yes"})])

        assert [t.status for t in await store.list_tasks("r1")] == ["ready"]
        await store.wake_waiting("plain")
        assert await asyncio.wait_for(waiter, 5.0) == []
        fitting = claim_request("gpu", ["next"], labels={"gpu": "yes"})
        assert [lease.task_id for lease in await store.claim_or_wait(fitting, 1.0)] == ["r1/b"]


async def test_a_wait_that_ended_leaves_no_claim_behind(url: str, prefix: str, raw: aioredis.Redis) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run("r1")

        assert await store.claim_or_wait(claim_request("w1", ["next", "other"]), 0.05) == []
        await d.update("r1", enqueue=[task("r1", "b", target="next")])

        assert [t.status for t in await store.list_tasks("r1")] == ["ready"]
        assert not await _waiting(raw, store, "w1")
        for target in ("next", "other"):
            assert await raw.llen(store.keys.global_key(f"waiting:{target}")) == 0


async def test_a_released_task_goes_to_a_waiting_worker(url: str, prefix: str, raw: aioredis.Redis) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a")])
        (held,) = await store.claim(claim_request("w1"))
        waiter = await _wait_in_store(store, raw, claim_request("w2"), 10.0)

        await store.release("w1", [(held.task_id, held.lease_no)])

        (lease,) = await asyncio.wait_for(waiter, 5.0)
        assert (lease.task_id, lease.lease_no) == ("r1/a", 2)
        assert [(t.status, t.worker_id) for t in await store.list_tasks("r1")] == [("leased", "w2")]


async def test_waking_a_waiting_worker_ends_its_wait_empty(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        waiter = await _wait_in_store(store, raw, claim_request("w1"), 30.0)

        await store.wake_waiting("w1")

        assert await asyncio.wait_for(waiter, 5.0) == []
        assert not await _waiting(raw, store, "w1")


async def test_a_claim_that_came_back_short_stands_until_the_next_call_waits(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a")])

        (first,) = await store.claim_or_wait(claim_request("w1", limit=2), 5.0)
        assert first.task_id == "r1/a"
        assert await _waiting(raw, store, "w1")  # one slot left: a claim stands for it already
        await d.update("r1", enqueue=[task("r1", "b")])  # granted now, before the worker asks again

        (second,) = await asyncio.wait_for(store.claim_or_wait(claim_request("w1", limit=1), 5.0), 5.0)
        assert second.task_id == "r1/b"


async def test_a_stopping_worker_gives_back_what_its_standing_claim_was_granted(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a")])
        await store.claim_or_wait(claim_request("w1", limit=2), 5.0)
        await d.update("r1", enqueue=[task("r1", "b")])
        assert {t.task_id: t.status for t in await store.list_tasks("r1")}["r1/b"] == "leased"

        await store.wake_waiting("w1")

        rows = {t.task_id: t for t in await store.list_tasks("r1")}
        assert (rows["r1/b"].status, rows["r1/b"].worker_id) == ("ready", None)
        assert not await _waiting(raw, store, "w1")
        (lease,) = await store.claim(claim_request("w2"))
        assert (lease.task_id, lease.lease_no) == ("r1/b", 2)


class SnapshotCountingStore(RedisStore):
    """The Redis store, counting the snapshots its commits read (the round trip a commit may need)."""

    snapshots = 0

    async def snapshot(self, **kwargs: Any) -> Any:
        self.snapshots += 1
        return await super().snapshot(**kwargs)


async def test_a_run_finished_by_its_last_step_renders_its_output_without_a_read(
    url: str, prefix: str
) -> None:
    async with SnapshotCountingStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run("r1", {"q": 1}, outputs=[("a", -1, "earlier")])

        async def finish(template: dict[str, str]) -> Any:
            write = d.write("r1", RunFinished("succeeded", 9))
            write.outputs.append(("b", -1, b'"last"'))
            write.output_template = orjson.dumps(template)
            await d.commit(write)
            info = await store.get_run("r1")
            assert info is not None
            return info.output

        assert await finish({"b": "${steps.b}"}) == {"b": "last"}
        assert store.snapshots == 0
        # A mapping that names an output written before, or the stored input, reads them first.
        assert await finish({"a": "${steps.a}", "q": "${input.q}"}) == {"a": "earlier", "q": 1}
        assert store.snapshots == 1


# -- inbox rows handed to the engine node that holds their shard ------------------------


async def test_a_node_waiting_for_rows_gets_them_with_the_wake_up_and_no_hint_goes_out(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    async with RedisStore(url, prefix=prefix) as store, RedisBus(url, prefix=prefix) as bus:
        assert store.carry_hints(bus)
        subscription = await bus.subscribe({"inbox", "ready:marker"})
        epoch = await store.join_epoch()
        await store.take_shards(epoch, list(range(SHARDS)), 60_000)
        waiter = asyncio.create_task(store.wait_inbox(epoch, 10.0))
        armed = store.keys.global_key(f"inwait:{epoch}")
        await wait_for(lambda: raw.exists(armed), 5.0, 0.01, message="the node to wait")

        ops = [StateOp("put", "run:r1", "k", [1, "two"]).to_json()]
        signal = inbox_row("s1", "r1", SignalReceived("s1", "go", {"k": 1}, 0), output={"text": "é"})
        row = dataclasses.replace(signal, state_ops=ops)
        await store.append_inbox([row])
        (pushed,) = await asyncio.wait_for(waiter, 5.0)

        (stored,) = await store.read_inbox(0, 10)
        assert pushed == stored  # the copy decodes to the row as read: event, output and state writes
        assert orjson.loads(pushed.output or b"") == {"text": "é"}
        assert pushed.state_ops == ops
        await bus.publish(["ready:marker"])  # after the append: a hint of the append would come first
        assert await _hints(subscription) == {"ready:marker"}
        await subscription.close()


async def test_rows_no_waiting_node_holds_are_hinted_not_pushed(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    async with RedisStore(url, prefix=prefix) as store, RedisBus(url, prefix=prefix) as bus:
        assert store.carry_hints(bus)
        subscription = await bus.subscribe({"inbox"})
        holder, idle = await store.join_epoch(), await store.join_epoch()
        await store.take_shards(holder, list(range(SHARDS)), 60_000)
        waiter = asyncio.create_task(store.wait_inbox(idle, 0.5))  # waits, but holds no shard
        await wait_for(lambda: raw.exists(store.keys.global_key(f"inwait:{idle}")), 5.0, 0.01)

        await store.append_inbox([inbox_row("s1", "r1", SignalReceived("s1", "go", None, 0))])

        assert await _hints(subscription) == {"inbox"}
        assert await asyncio.wait_for(waiter, 5.0) == []
        await store.stop_waiting_inbox(idle)
        assert not await raw.exists(store.keys.global_key(f"inwait:{idle}"))
        await subscription.close()


class CallRecordingStore(RedisStore):
    """The Redis store, recording the scripts it runs (to see which follow-ups a grant makes)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scripts_run: list[str] = []

    async def script(self, name: str, args: Any, *, idempotent: bool = False) -> Any:
        self.scripts_run.append(name)
        return await super().script(name, args, idempotent=idempotent)


async def _granted(store: RedisStore, raw: aioredis.Redis) -> Lease:
    """The lease of task r1/a, granted to worker w1's standing claim as the commit making it ready ran."""
    d = await Driver.start(store)
    await d.start_run("r1")
    waiter = await _wait_in_store(store, raw, claim_request("w1", limit=1), 10.0)
    await d.update("r1", enqueue=[task("r1", "a")])
    (lease,) = await asyncio.wait_for(waiter, 5.0)
    return lease


async def test_a_grant_reported_before_its_follow_up_is_not_confirmed(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    # A short task reports before the grant's follow-up: its report is in the inbox, so the
    # heartbeat that would confirm its lease is one script call for nothing.
    async with CallRecordingStore(url, prefix=prefix) as store:
        lease = await _granted(store, raw)

        report = TaskSucceeded(lease.task_id, lease.lease_no, 0)
        await store.append_inbox(
            [InboxRow(f"report:{lease.task_id}:1", "r1", event_to_json(report), output=b"1")]
        )

        await wait_for(lambda: "unwait" in store.scripts_run, 5.0, 0.01, message="the grant's follow-up")
        assert "heartbeat" not in store.scripts_run


async def test_a_store_closed_before_a_grants_follow_up_is_due_drops_it(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    # A worker that stops right after a grant closes its store: the follow-up must not come due
    # afterwards on the closed store, leaving a task pending when its event loop ends.
    async with CallRecordingStore(url, prefix=prefix) as store:
        await _granted(store, raw)
        ran_before_close = list(store.scripts_run)

    # Nothing can be awaited for something that must not happen: wait past the follow-up's due time.
    await asyncio.sleep(FOLLOW_UP_AFTER_S * 3)
    assert store.scripts_run == ran_before_close
    assert not store._background


async def test_a_granted_lease_is_short_until_its_worker_confirms_it(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    # A worker killed while it waited would otherwise sit on its grant for a whole lease.
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run("r1")
        waiter = await _wait_in_store(store, raw, claim_request("w1", limit=1, lease_ms=60_000), 10.0)
        granted_at = await store.now_ms()
        await d.update("r1", enqueue=[task("r1", "a")])
        key = store.keys.task("r1/a")
        assert int(await raw.hget(key, "lu")) <= granted_at + 3_000 + 1_000

        (lease,) = await asyncio.wait_for(waiter, 5.0)

        async def confirmed() -> bool:
            return int(await raw.hget(key, "lu")) >= granted_at + 50_000

        await wait_for(confirmed, 5.0, 0.01, message="the grant's lease to be confirmed")
        assert lease.lease_no == 1


async def test_a_lease_whose_report_waits_in_the_inbox_is_not_ended_while_it_waits(
    url: str, prefix: str, raw: aioredis.Redis
) -> None:
    # A report stuck behind a backlog would be decided before an end of its lease appended after it,
    # which would only be stale: the lease's deadline moves on instead, until the row is gone.
    async with RedisStore(url, prefix=prefix) as store:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a")])
        (lease,) = (await d.commit(claims=[claim_request(lease_ms=100)])).leases["w1"]
        report = TaskSucceeded("r1/a", lease.lease_no, 0)
        await store.append_inbox(
            [InboxRow(report_row_id("r1/a", lease.lease_no), "r1", event_to_json(report))]
        )
        (row,) = await store.read_inbox(0, 10)
        now = await wait_past(store, lease.lease_until_ms)

        assert await store.fire_due(10) == 0
        key, leases = store.keys.task("r1/a"), f"{{{prefix}}}:leases"
        assert await raw.zscore(leases, key) >= now + 2_000
        assert await raw.hget(key, "st") == b"leased"

        # Once the row goes without a decision, the lease ends when its time comes.
        assert not (await d.commit(consumed=[row.seq])).conflicts
        await raw.zadd(leases, {key: now})
        assert await store.fire_due(10) == 1
        (expired,) = await store.read_inbox(0, 10)
        assert expired.event["type"] == "TimerFired"
        assert expired.event["kind"] == "lease_expired"
