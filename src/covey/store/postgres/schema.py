"""The PostgreSQL store's schema, as an append-only list of migrations.

Each entry runs once, in order, in the transaction that records the new
``schema_version`` (PostgreSQL's DDL is transactional, so a migration applies
whole or not at all). Never edit an entry that has shipped: append a new one.
A schema whose version is newer than this list is refused.

Every table lives in the store's own schema, reached through ``search_path``,
so the statements name tables unqualified. Text that is compared or sorted
(ids, keys, step names) uses the ``"C"`` collation: byte order, which for
UTF-8 is code point order, the same on every server whatever its locale.
JSON bodies are ``bytea`` holding the exact bytes covey encoded: the server
never parses them, and they come back bit for bit.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE meta (key text COLLATE "C" PRIMARY KEY, value bigint NOT NULL);
    INSERT INTO meta VALUES ('epoch', 0);
    CREATE TABLE specs (hash text COLLATE "C" PRIMARY KEY, body bytea NOT NULL);
    CREATE TABLE runs (
        run_id text COLLATE "C" PRIMARY KEY, workflow text NOT NULL, spec_hash text NOT NULL,
        status text NOT NULL, seq bigint NOT NULL, input bytea, output bytea, error bytea,
        parent text COLLATE "C", created_ms bigint NOT NULL, updated_ms bigint NOT NULL, finished_ms bigint
    );
    CREATE INDEX runs_by_created ON runs (created_ms DESC, run_id);
    CREATE INDEX runs_by_status ON runs (status, created_ms DESC, run_id);
    CREATE TABLE events (
        run_id text COLLATE "C" NOT NULL, seq bigint NOT NULL, type text NOT NULL, at_ms bigint NOT NULL,
        body bytea NOT NULL, PRIMARY KEY (run_id, seq)
    );
    -- Claim order breaks ties of prio_key by this counter: it only orders, it numbers nothing.
    CREATE SEQUENCE task_order;
    CREATE TABLE tasks (
        task_id text COLLATE "C" PRIMARY KEY, run_id text COLLATE "C" NOT NULL, step text COLLATE "C" NOT NULL,
        idx integer NOT NULL, target text COLLATE "C" NOT NULL, labels jsonb, priority integer NOT NULL,
        prio_key bigint NOT NULL, ord bigint NOT NULL, status text NOT NULL, try_no integer NOT NULL,
        lease_no bigint NOT NULL, worker_id text COLLATE "C", lease_until_ms bigint, try_deadline_ms bigint,
        timeout_ms bigint, input_template bytea NOT NULL, item bytea, input_schema bytea,
        reads_input boolean NOT NULL, reads_steps text[] COLLATE "C" NOT NULL, reads_state boolean NOT NULL,
        ready_ms bigint NOT NULL
    );
    CREATE INDEX tasks_to_claim ON tasks (target, prio_key DESC, ord) WHERE status = 'ready';
    CREATE INDEX tasks_by_lease ON tasks (lease_until_ms) WHERE status = 'leased';
    CREATE INDEX tasks_by_run ON tasks (run_id, step, idx);
    CREATE TABLE outputs (
        run_id text COLLATE "C" NOT NULL, step text COLLATE "C" NOT NULL, idx integer NOT NULL,
        body bytea NOT NULL, PRIMARY KEY (run_id, step, idx)
    );
    CREATE TABLE timers (
        timer_id text COLLATE "C" PRIMARY KEY, run_id text COLLATE "C" NOT NULL, due_ms bigint NOT NULL,
        kind text NOT NULL, task_id text COLLATE "C", lease_no bigint NOT NULL
    );
    CREATE INDEX timers_by_due ON timers (due_ms);
    -- Inbox row numbers come from an identity column, so they commit out of order: the engine
    -- loop reads the inbox from the start every time, never from a cursor it advanced.
    CREATE TABLE inbox (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id text COLLATE "C" NOT NULL UNIQUE,
        run_id text COLLATE "C" NOT NULL, shard smallint NOT NULL, body bytea NOT NULL, output bytea,
        state_ops bytea
    );
    CREATE INDEX inbox_by_shard ON inbox (shard, seq);
    CREATE TABLE seen (id text COLLATE "C" PRIMARY KEY, run_id text COLLATE "C" NOT NULL);
    CREATE TABLE workers (
        worker_id text COLLATE "C" PRIMARY KEY, targets text[] NOT NULL, labels bytea NOT NULL,
        slots integer NOT NULL, heartbeat_ms bigint NOT NULL, started_ms bigint NOT NULL
    );
    -- Shared state: a deleted key keeps its row (value NULL), so its versions keep counting.
    CREATE TABLE state (
        namespace text COLLATE "C" NOT NULL, key text COLLATE "C" NOT NULL, value bytea,
        version bigint NOT NULL, PRIMARY KEY (namespace, key)
    );
    CREATE TABLE state_changes (
        namespace text COLLATE "C" NOT NULL, seq bigint NOT NULL, key text COLLATE "C" NOT NULL,
        version bigint NOT NULL, value bytea, PRIMARY KEY (namespace, seq)
    );
    -- The change feed's counter: a row per namespace, locked and bumped by every writer of the
    -- namespace in its own transaction, so seq order is commit order (a sequence's is not).
    CREATE TABLE state_seq (namespace text COLLATE "C" PRIMARY KEY, seq bigint NOT NULL);
    CREATE TABLE locks (
        name text COLLATE "C" NOT NULL, slot integer NOT NULL, holder text, token bigint NOT NULL,
        expires_ms bigint NOT NULL, PRIMARY KEY (name, slot)
    );
    CREATE TABLE lock_tokens (name text COLLATE "C" PRIMARY KEY, token bigint NOT NULL);
    CREATE TABLE shards (shard smallint PRIMARY KEY, epoch bigint NOT NULL, until_ms bigint NOT NULL);
    """,
    # 2: retention. Finished runs in purge order (a partial index: running runs are not in it); then,
    # so that purging a run's rows reads only those, remembered client ids by run (that table grows with
    # every signal and cancel) and timers by run (one per deadline or wait of every run in flight).
    # The inbox needs none: the engine loops drain it as rows arrive.
    """
    CREATE INDEX runs_finished ON runs (finished_ms, run_id)
        WHERE status <> 'running' AND finished_ms IS NOT NULL;
    CREATE INDEX seen_by_run ON seen (run_id);
    CREATE INDEX timers_by_run ON timers (run_id);
    """,
]
