"""What only the PostgreSQL store does, and what the conformance suite cannot see.

Migrations (a newer schema refused, an older one upgraded, concurrent
starters), concurrency between store objects on one schema (sequence checks,
SKIP LOCKED claims, the change feed's commit order), connections killed
server-side, and the settings the store runs with. Each test has a schema
of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from covey.engine.events import SignalReceived
from covey.errors import BackendError, BackendUnavailable, ConfigError, CoveyError
from covey.state.model import StateOp
from covey.store.base import AGING_MS, CommitBatch
from covey.store.postgres import PostgresStore
from covey.store.postgres import connection as connection_module
from covey.store.postgres import schema as schema_module
from covey.testing import wait_for
from covey.testing.conformance.driver import Driver, claim_request, task
from covey.testing.servers import postgres_url
from tests.store.backend_postgres import drop_schema, unique_schema

pytestmark = pytest.mark.asyncio

TABLES = {
    "meta", "specs", "runs", "events", "tasks", "outputs", "timers", "inbox", "seen", "workers",
    "state", "state_changes", "state_seq", "locks", "lock_tokens", "shards",
}  # fmt: skip


@pytest.fixture
async def where() -> AsyncIterator[tuple[str, str]]:
    """(server URL, a schema of this test's own), dropped afterwards."""
    url = postgres_url()
    schema = unique_schema()
    try:
        yield url, schema
    finally:
        await drop_schema(url, schema)


async def _sql(url: str, query: str, *args: Any) -> list[Any]:
    """Run a query on a connection of its own, outside any store."""
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def _version(url: str, schema: str) -> int:
    (row,) = await _sql(url, f"SELECT value FROM \"{schema}\".meta WHERE key = 'schema_version'")
    return int(row["value"])


# -- migrations ----------------------------------------------------------------------------


async def test_starting_creates_the_schema_and_its_tables_once(where: tuple[str, str]) -> None:
    url, schema = where
    async with PostgresStore(url, schema=schema) as store:
        assert await store.begin_epoch() == 1
    tables = await _sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
    assert {row["tablename"] for row in tables} == TABLES
    assert await _version(url, schema) == len(schema_module.MIGRATIONS)

    async with PostgresStore(url, schema=schema) as store:
        assert await store.begin_epoch() == 2
    assert await _version(url, schema) == len(schema_module.MIGRATIONS)


async def test_an_older_covey_refuses_a_newer_schema(where: tuple[str, str]) -> None:
    url, schema = where
    async with PostgresStore(url, schema=schema):
        pass
    newer = len(schema_module.MIGRATIONS) + 1
    await _sql(url, f"UPDATE \"{schema}\".meta SET value = $1 WHERE key = 'schema_version'", newer)

    with pytest.raises(CoveyError) as caught:
        async with PostgresStore(url, schema=schema):
            pass

    message = str(caught.value)
    assert f"schema version {newer}" in message
    assert f"newer than this covey knows ({len(schema_module.MIGRATIONS)})" in message
    assert "upgrade covey" in message
    assert repr(schema) in message
    assert await _version(url, schema) == newer


async def test_a_newer_covey_upgrades_an_older_schema_and_keeps_its_data(
    where: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a schema written by this covey,
    url, schema = where
    async with PostgresStore(url, schema=schema) as store:
        d = await Driver.start(store)
        await d.start_run("r1", {"q": 1}, enqueue=[task("r1", "a")])
    # when a covey with one more migration starts on it,
    later = [
        *schema_module.MIGRATIONS,
        "CREATE TABLE extra (id integer PRIMARY KEY); INSERT INTO extra VALUES (7)",
    ]
    monkeypatch.setattr(schema_module, "MIGRATIONS", later)
    async with PostgresStore(url, schema=schema) as store:
        # then it runs only that migration, and everything is still there.
        info = await store.get_run("r1")
        assert info is not None
        assert info.input == {"q": 1}
        assert [t.task_id for t in await store.list_tasks("r1")] == ["r1/a"]
        assert await store.begin_epoch() == d.epoch + 1
    assert await _version(url, schema) == len(later)
    assert [row["id"] for row in await _sql(url, f'SELECT id FROM "{schema}".extra')] == [7]


async def test_a_failing_migration_leaves_the_schema_as_it_was(
    where: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, schema = where
    async with PostgresStore(url, schema=schema):
        pass
    broken = [*schema_module.MIGRATIONS, "CREATE TABLE half (id integer); SELECT no_such_function()"]
    monkeypatch.setattr(schema_module, "MIGRATIONS", broken)

    with pytest.raises(BackendError, match="no_such_function"):
        async with PostgresStore(url, schema=schema):
            pass

    assert await _version(url, schema) == len(broken) - 1
    assert (
        await _sql(url, "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'half'", schema) == []
    )


async def test_concurrent_starters_migrate_once(where: tuple[str, str]) -> None:
    url, schema = where

    async def start() -> int:
        async with PostgresStore(url, schema=schema, pool_size=1) as store:
            return await store.join_epoch()

    epochs = await asyncio.gather(*(start() for _ in range(6)))

    assert sorted(epochs) == list(range(1, 7))
    assert await _version(url, schema) == len(schema_module.MIGRATIONS)


async def test_schemas_keep_stores_apart(where: tuple[str, str]) -> None:
    url, schema = where
    other = unique_schema()
    try:
        async with PostgresStore(url, schema=schema) as one, PostgresStore(url, schema=other) as two:
            await Driver(one, await one.begin_epoch()).start_run("r1")
            assert await two.get_run("r1") is None
            assert await two.begin_epoch() == 1
    finally:
        await drop_schema(url, other)


# -- configuration and errors --------------------------------------------------------------


async def test_a_bad_schema_name_is_a_config_error() -> None:
    for name in ("", "1abc", 'x"; DROP SCHEMA public; --', "a" * 64, "has space"):
        with pytest.raises(ConfigError, match="schema name"):
            PostgresStore("postgresql://127.0.0.1/test", schema=name)
    with pytest.raises(ConfigError, match="pool_size"):
        PostgresStore("postgresql://127.0.0.1/test", pool_size=0)


async def test_an_unreachable_server_is_backend_unavailable_and_the_password_is_not_shown() -> None:
    store = PostgresStore("postgresql://alice:s3cret-pw@127.0.0.1:1/test", schema="covey_nowhere")

    with pytest.raises(BackendUnavailable) as caught:
        async with store:
            pass

    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "alice@127.0.0.1:1/test" in message
    assert "covey_nowhere" in message


async def test_a_call_outside_async_with_is_a_backend_error(where: tuple[str, str]) -> None:
    url, schema = where
    with pytest.raises(BackendError, match="async with"):
        await PostgresStore(url, schema=schema).now_ms()


async def test_closing_cuts_off_a_hung_call(where: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    url, schema = where
    monkeypatch.setattr(connection_module, "CLOSE_TIMEOUT_S", 0.2)
    async with PostgresStore(url, schema=schema) as store:
        hung = asyncio.ensure_future(store._db.run(lambda conn: conn.fetchval("SELECT pg_sleep(10)")))
        await wait_for(lambda: _running(url, schema), message="the call to be running")
    # Leaving ``async with`` returned (after 0.2 s, not 10); the hung call fails instead of hanging.
    with pytest.raises(BackendError):
        await asyncio.wait_for(hung, 5)


@pytest.mark.parametrize("step", ["start", "commit"])
async def test_a_transaction_cancelled_mid_begin_or_commit_on_purpose_logs_nothing_and_the_store_goes_on(
    where: tuple[str, str], monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """What a shutdown does to a call caught in its ``BEGIN`` or ``COMMIT``, made to happen on purpose:
    the driver's transaction step cancels its own task as it starts. The connection is dropped rather
    than handed back mid-transaction, where the pool's reset would log an error about it."""
    url, schema = where
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    original = getattr(asyncpg.transaction.Transaction, step)

    async def cancelled_as_it_starts(self: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # delivered at the step's first wait, with its statement in flight
        await original(self)

    try:
        async with PostgresStore(url, schema=schema, pool_size=1) as store:
            monkeypatch.setattr(asyncpg.transaction.Transaction, step, cancelled_as_it_starts)
            with pytest.raises(asyncio.CancelledError):
                await store._db.run(lambda conn: conn.execute("SELECT 1"), transaction=True)
            monkeypatch.undo()

            assert await store.now_ms() > 0  # the pool's one connection was replaced and works
        assert [c.get("message") for c in reported] == []
    finally:
        loop.set_exception_handler(None)


async def _running(url: str, schema: str) -> bool:
    rows = await _sql(
        url,
        "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'",
        f"covey/{schema}",
    )
    return bool(rows)


async def test_commits_are_durable_and_the_clock_is_the_servers(where: tuple[str, str]) -> None:
    url, schema = where
    async with PostgresStore(url, schema=schema) as store:
        settings = await store._db.run(
            lambda conn: conn.fetchrow(
                "SELECT current_setting('synchronous_commit') AS sync, current_setting('search_path') AS path,"
                " current_setting('transaction_isolation') AS isolation"
            )
        )
        assert (settings["sync"], settings["path"], settings["isolation"]) == (
            "on",
            f'"{schema}"',
            "read committed",
        )
        (server,) = await _sql(
            url, "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms"
        )
        assert abs(await store.now_ms() - server["ms"]) < 1_000


async def test_text_postgres_cannot_hold_is_an_input_error(where: tuple[str, str]) -> None:
    url, schema = where
    async with PostgresStore(url, schema=schema) as store:
        with pytest.raises(CoveyError, match="PostgreSQL refused a value"):
            await store.state_apply([StateOp("put", "docs", "nul\x00key", 1)])
        assert await store.state_list("docs") == []


# -- what the conformance suite does not cover ---------------------------------------------


async def test_the_change_feed_records_each_write_once_in_order(where: tuple[str, str]) -> None:
    url, schema = where
    async with PostgresStore(url, schema=schema) as store:
        await store.state_apply([StateOp("put", "ns", "a", {"v": 1}), StateOp("put", "ns", "b", None)])
        await store.state_apply([StateOp("delete", "ns", "a"), StateOp("delete", "ns", "missing")])
        await store.state_apply([StateOp("update", "ns", "a", 1, "add"), StateOp("put", "other", "a", 0)])
        with pytest.raises(CoveyError):
            await store.state_apply(
                [StateOp("put", "ns", "c", 1), StateOp("put", "ns", "b", 2, if_version=9)]
            )

        changes = await store.state_changes("ns", 0)

        assert [(c.seq, c.key, c.version, c.value, c.deleted) for c in changes] == [
            (1, "a", 1, {"v": 1}, False),
            (2, "b", 1, None, False),
            (3, "a", 2, None, True),
            (4, "a", 3, 1, False),
        ]
        assert [c.seq for c in await store.state_changes("ns", 2, limit=1)] == [3]
        assert await store.state_changes("ns", 4) == []
        assert [(c.seq, c.key) for c in await store.state_changes("other", 0)] == [(1, "a")]


async def test_each_write_trims_its_namespaces_feed_to_exactly_feed_keep_rows(where: tuple[str, str]) -> None:
    # Given a store keeping 3 changes per feed (0 is refused),
    url, schema = where
    async with PostgresStore(url, schema=schema) as store:
        with pytest.raises(ConfigError):
            store.feed_keep = 0
        store.feed_keep = 3
        d = await Driver.start(store)
        await d.start_run("r1")

        # when one call writes 10 changes to "ns" and 1 to "other", then a commit stages 5 more to "ns",
        await store.state_apply(
            [StateOp("put", "ns", f"k{i}", i) for i in range(10)] + [StateOp("put", "other", "k", 0)]
        )
        rows_after_one_call = await _sql(
            url, f'SELECT seq FROM "{schema}".state_changes WHERE namespace = $1 ORDER BY seq', "ns"
        )
        later = d.write("r1")
        later.state_ops.extend(StateOp("put", "ns", "k", i) for i in range(5))
        await d.commit(later)

        # then the table holds exactly the last 3 of "ns" each time (none inserted only to go), and "other" is untouched.
        rows = await _sql(url, f'SELECT namespace, seq FROM "{schema}".state_changes ORDER BY namespace, seq')
        assert [r["seq"] for r in rows_after_one_call] == [8, 9, 10]
        assert [(r["namespace"], r["seq"]) for r in rows] == [
            ("ns", 13),
            ("ns", 14),
            ("ns", 15),
            ("other", 1),
        ]


# -- priority aging ------------------------------------------------------------------------


async def test_a_long_wait_outranks_a_higher_priority(where: tuple[str, str]) -> None:
    # Given a priority-0 task that has waited 2.5 aging periods (its enqueue time moved back, not slept),
    url, schema = where
    async with PostgresStore(url, schema=schema) as store:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "old", priority=0)])
        shift = 5 * AGING_MS // 2
        await _sql(
            url,
            f'UPDATE "{schema}".tasks SET ready_ms = ready_ms - $1, prio_key = prio_key + $1 WHERE step = $2',
            shift,
            "old",
        )
        # and newer tasks at priorities 2 and 3,
        await d.update("r1", enqueue=[task("r1", "p2", priority=2), task("r1", "p3", priority=3)])
        keys = await _sql(url, f'SELECT step, priority, prio_key, ready_ms FROM "{schema}".tasks')
        assert all(row["prio_key"] == row["priority"] * AGING_MS - row["ready_ms"] for row in keys)

        # when a worker claims one at a time,
        order = [[lease.step for lease in await store.claim(claim_request(limit=1))] for _ in range(3)]

    # then the old task overtakes priority 2 but not priority 3.
    assert order == [["p3"], ["old"], ["p2"]]


# -- concurrency between store objects -----------------------------------------------------


async def test_two_stores_committing_one_run_never_both_win(where: tuple[str, str]) -> None:
    # Given two store objects (two pools) on one schema, and one epoch holding every shard,
    url, schema = where
    async with PostgresStore(url, schema=schema) as one, PostgresStore(url, schema=schema) as two:
        epoch = await one.begin_epoch()
        drivers = [Driver(one, epoch), Driver(two, epoch)]
        # when both create the same run at once,
        created = await asyncio.gather(*(d.commit(d.submit("r1", {"by": n})) for n, d in enumerate(drivers)))
        # then exactly one creates it,
        assert sorted(len(result.conflicts) for result in created) == [0, 1]
        # and in every later round, both writing the run from the same sequence number, exactly one wins.
        seq = 1
        for round_no in range(30):
            for d in drivers:
                d.seqs["r1"] = seq
            writes = [
                d.write("r1", SignalReceived(f"s{round_no}-{n}", "go", n, 0)) for n, d in enumerate(drivers)
            ]
            results = await asyncio.gather(*(d.commit(w) for d, w in zip(drivers, writes, strict=True)))
            assert sorted(len(result.conflicts) for result in results) == [0, 1], round_no
            seq += 1

        history = await one.load_history("r1")
        info = await one.get_run("r1")
        assert info is not None
        assert info.seq == seq == len(history)
        assert [e["type"] for e in history] == ["RunSubmitted"] + ["SignalReceived"] * 30


async def test_concurrent_claimers_never_get_one_task_twice(where: tuple[str, str]) -> None:
    # Given 300 ready tasks,
    url, schema = where
    async with PostgresStore(url, schema=schema) as owner:
        d = await Driver.start(owner)
        await d.start_run("r1", enqueue=[task("r1", "m", i) for i in range(300)])
        async with AsyncExitStack() as stack:
            stores = [
                await stack.enter_async_context(PostgresStore(url, schema=schema, pool_size=2))
                for _ in range(4)
            ]

            # when four stores' claimers take them, plain and from commits, all at once until none is left,
            async def claimer(n: int) -> list[str]:
                store = stores[n % len(stores)]
                got: list[str] = []
                while True:
                    if n % 2:
                        leases = await store.claim(claim_request(f"w{n}", limit=7))
                    else:
                        result = await store.commit(
                            CommitBatch(d.epoch, claims=[claim_request(f"w{n}", limit=5)])
                        )
                        leases = result.leases.get(f"w{n}", [])
                    if not leases and not await _ready(owner):
                        return got
                    got.extend(lease.task_id for lease in leases)

            granted = await asyncio.gather(*(claimer(n) for n in range(8)))

        # then every task was granted exactly once, with lease number 1.
        every = [task_id for got in granted for task_id in got]
        assert len(every) == len(set(every)) == 300
        tasks = await owner.list_tasks("r1")
        assert {(t.status, t.lease_no) for t in tasks} == {("leased", 1)}
        owners = {t.task_id: t.worker_id for t in tasks}
        assert all(owners[task_id] == f"w{n}" for n, got in enumerate(granted) for task_id in got)


async def _ready(store: PostgresStore) -> bool:
    return any(t.status == "ready" for t in await store.list_tasks("r1"))


async def test_the_change_feed_is_numbered_in_commit_order_under_concurrent_writers(
    where: tuple[str, str],
) -> None:
    # Given four store objects adding to one key, and a watcher following the feed meanwhile,
    url, schema = where
    async with AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(PostgresStore(url, schema=schema, pool_size=3)) for _ in range(4)
        ]
        done = asyncio.Event()
        seen: list[tuple[int, int]] = []

        async def watch() -> None:
            cursor = 0
            while True:
                finished = done.is_set()
                for change in await stores[0].state_changes("ns", cursor):
                    seen.append((change.seq, change.version))
                    cursor = change.seq
                if finished:
                    return

        async def write(store: PostgresStore) -> None:
            for _ in range(25):
                await store.state_apply([StateOp("update", "ns", "n", 1, "add")])

        watcher = asyncio.ensure_future(watch())
        await asyncio.gather(*(write(store) for store in stores for _ in range(2)))
        done.set()
        await watcher

    # then the watcher saw every change once, with no gap: seq n is version n of the key.
    assert seen == [(n, n) for n in range(1, 201)]


async def test_a_commit_waiting_behind_a_takeover_fails(where: tuple[str, str]) -> None:
    # Given a loop holding shard of r1 whose lease ended, and another loop taking it over in an open transaction,
    url, schema = where
    async with PostgresStore(url, schema=schema) as store:
        one = await store.join_epoch()
        two = await store.join_epoch()
        d = Driver(store, one)
        await store.take_shards(one, list(range(256)), 60_000)
        await d.start_run("r1")
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await conn.execute(f'UPDATE "{schema}".shards SET epoch = $1', two)
                # when the old loop commits meanwhile,
                pending = asyncio.ensure_future(d.commit(d.write("r1")))
                await wait_for(lambda: _blocked(url, schema), message="the commit to wait for the shard lock")
            # then, once the takeover commits, the old loop's commit fails as a whole.
            with pytest.raises(CoveyError, match="no longer holds"):
                await pending
        finally:
            await conn.close()
        info = await store.get_run("r1")
        assert info is not None
        assert info.seq == 1


async def _blocked(url: str, schema: str) -> bool:
    rows = await _sql(
        url,
        "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        f"covey/{schema}",
    )
    return bool(rows)


# -- connections killed server-side --------------------------------------------------------


async def _kill_store_connections(url: str, schema: str) -> int:
    """Terminate this store's connections from a connection of its own; how many there were.

    Only this test's store is hit (by its application name): other tests share the server.
    """
    rows = await _sql(
        url,
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = $1",
        f"covey/{schema}",
    )
    killed = [row["pid"] for row in rows]

    async def gone() -> bool:
        return not await _sql(url, "SELECT 1 FROM pg_stat_activity WHERE pid = ANY($1::integer[])", killed)

    await wait_for(gone, message="the terminated backends to exit")
    return len(killed)


async def _kill_active(url: str, schema: str) -> None:
    """Terminate this store's connections that are running a statement (waiting on a lock, sleeping)."""
    application = f"covey/{schema}"

    async def busy() -> list[Any]:
        return await _sql(
            url,
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'",
            application,
        )

    pids = [row["pid"] for row in await wait_for(busy, message="a call of the store to be running")]
    await _sql(url, "SELECT pg_terminate_backend(pid) FROM unnest($1::integer[]) AS pid", pids)


async def test_idle_connections_killed_server_side_are_replaced(where: tuple[str, str]) -> None:
    url, schema = where
    async with PostgresStore(url, schema=schema, pool_size=3) as store:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "m", i) for i in range(6)])
        # Open every connection of the pool, then kill them all.
        await asyncio.gather(*(store.list_tasks("r1") for _ in range(6)))
        assert await _kill_store_connections(url, schema) >= 1

        # Calls right after it work, one at a time or all at once.
        assert await store.get_run("r1") is not None
        assert not (await d.commit(d.write("r1"))).conflicts
        assert len(await store.claim(claim_request(limit=1))) == 1
        await _kill_store_connections(url, schema)
        results = await asyncio.gather(*(store.list_tasks("r1") for _ in range(6)))
        assert all(len(tasks) == 6 for tasks in results)


async def test_a_commit_whose_connection_is_killed_midway_is_retried_whole(where: tuple[str, str]) -> None:
    # Given a commit blocked behind another connection's lock on its run,
    url, schema = where
    async with PostgresStore(url, schema=schema) as store:
        d = await Driver.start(store)
        await d.start_run("r1")
        write = d.write("r1", SignalReceived("s1", "go", None, 0))
        write.enqueue.append(task("r1", "a"))
        write.state_ops.append(StateOp("update", "docs", "n", 1, "add"))
        blocker = await asyncpg.connect(url)
        try:
            async with blocker.transaction():
                await blocker.execute(f'SELECT 1 FROM "{schema}".runs WHERE run_id = $1 FOR UPDATE', "r1")
                pending = asyncio.ensure_future(d.commit(write))
                # when its connection is killed while it waits (the server rolls its transaction back),
                await _kill_active(url, schema)
            # then it is tried again on a new connection, and applied once.
            result = await pending
        finally:
            await blocker.close()
        assert result.conflicts == set()
        info = await store.get_run("r1")
        assert info is not None
        assert info.seq == 2
        assert [e["type"] for e in await store.load_history("r1")] == ["RunSubmitted", "SignalReceived"]
        assert [t.task_id for t in await store.list_tasks("r1")] == ["r1/a"]
        entry = await store.state_get("docs", "n")
        assert entry is not None
        assert (entry.value, entry.version) == (1, 1)


async def test_a_state_write_whose_connection_is_killed_midway_is_retried_whole(
    where: tuple[str, str],
) -> None:
    url, schema = where
    async with PostgresStore(url, schema=schema) as store:
        await store.state_apply([StateOp("put", "docs", "k", 0)])
        blocker = await asyncpg.connect(url)
        try:
            async with blocker.transaction():
                await blocker.execute(
                    f'SELECT 1 FROM "{schema}".state_seq WHERE namespace = $1 FOR UPDATE', "docs"
                )
                pending = asyncio.ensure_future(store.state_apply([StateOp("update", "docs", "n", 5, "add")]))
                await _kill_active(url, schema)
            (entry,) = await pending
        finally:
            await blocker.close()
        assert (entry.value, entry.version) == (5, 1)
        changes = await store.state_changes("docs", 0)
        assert [(c.seq, c.key, c.value) for c in changes] == [(1, "k", 0), (2, "n", 5)]


async def test_a_statement_killed_midway_fails_once_unless_it_may_be_repeated(where: tuple[str, str]) -> None:
    # A single statement's outcome is unknown when its connection breaks before the answer:
    # a call that must not run twice (a claim, say) fails with BackendUnavailable; the next call works.
    url, schema = where
    async with PostgresStore(url, schema=schema) as store:
        pending = asyncio.ensure_future(
            store._db.run(lambda conn: conn.fetchval("SELECT pg_sleep(30)"), idempotent=False)
        )
        await _kill_active(url, schema)
        with pytest.raises(BackendUnavailable, match="outcome is unknown"):
            await pending
        assert await store.get_run("r1") is None

        # One that may be repeated (a heartbeat here, blocked on its task's row) is tried again.
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a")])
        (lease,) = await store.claim(claim_request(lease_ms=1_000))
        blocker = await asyncpg.connect(url)
        try:
            async with blocker.transaction():
                await blocker.execute(f'SELECT 1 FROM "{schema}".tasks WHERE task_id = $1 FOR UPDATE', "r1/a")
                beat = asyncio.ensure_future(store.heartbeat("w1", [(lease.task_id, lease.lease_no)], 60_000))
                await _kill_active(url, schema)
            assert await beat == []
        finally:
            await blocker.close()
        (row,) = await store.list_tasks("r1")
        assert row.lease_until_ms is not None
        assert row.lease_until_ms > lease.lease_until_ms
