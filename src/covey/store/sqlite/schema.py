"""The SQLite store's schema, as an append-only list of migrations.

Each entry runs once, in order, inside the transaction that records the new
``schema_version``. Never edit an entry that has shipped: append a new one.
A database whose version is newer than this list is refused.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE specs (hash TEXT PRIMARY KEY, body BLOB NOT NULL);
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, spec_hash TEXT NOT NULL,
        status TEXT NOT NULL, seq INTEGER NOT NULL, input BLOB, output BLOB, error BLOB,
        parent TEXT, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, finished_ms INTEGER
    );
    CREATE INDEX runs_by_created ON runs (created_ms);
    CREATE INDEX runs_by_status ON runs (status, created_ms);
    CREATE TABLE events (
        run_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, at_ms INTEGER NOT NULL,
        body BLOB NOT NULL, PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, step TEXT NOT NULL, idx INTEGER NOT NULL,
        target TEXT NOT NULL, labels BLOB, priority INTEGER NOT NULL, prio_key INTEGER NOT NULL,
        status TEXT NOT NULL, try_no INTEGER NOT NULL, lease_no INTEGER NOT NULL,
        worker_id TEXT, lease_until_ms INTEGER, try_deadline_ms INTEGER, timeout_ms INTEGER,
        input_template BLOB NOT NULL, item BLOB, input_schema BLOB, ready_ms INTEGER NOT NULL
    );
    CREATE INDEX tasks_to_claim ON tasks (target, status, prio_key);
    CREATE INDEX tasks_by_lease ON tasks (status, lease_until_ms);
    CREATE TABLE outputs (
        run_id TEXT NOT NULL, step TEXT NOT NULL, idx INTEGER NOT NULL, body BLOB NOT NULL,
        PRIMARY KEY (run_id, step, idx)
    ) WITHOUT ROWID;
    CREATE TABLE timers (
        timer_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, due_ms INTEGER NOT NULL, kind TEXT NOT NULL,
        task_id TEXT, lease_no INTEGER NOT NULL
    );
    CREATE INDEX timers_by_due ON timers (due_ms);
    CREATE TABLE inbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, run_id TEXT NOT NULL,
        body BLOB NOT NULL, output BLOB
    );
    CREATE TABLE seen (id TEXT PRIMARY KEY, run_id TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE workers (
        worker_id TEXT PRIMARY KEY, info BLOB NOT NULL, heartbeat_ms INTEGER NOT NULL,
        started_ms INTEGER NOT NULL
    );
    """,
    # 2: shared state: a value and version per key (a deleted key keeps its row, value NULL, so its
    # versions keep counting), and a change feed per namespace.
    """
    CREATE TABLE state (
        namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB, version INTEGER NOT NULL,
        PRIMARY KEY (namespace, key)
    ) WITHOUT ROWID;
    CREATE TABLE state_changes (
        namespace TEXT NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL,
        value BLOB, PRIMARY KEY (namespace, seq)
    ) WITHOUT ROWID;
    CREATE TABLE state_seq (namespace TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
    """,
    # 3: locks and semaphores for agents: a row per permit; tokens only grow (fencing).
    """
    CREATE TABLE locks (
        name TEXT NOT NULL, slot INTEGER NOT NULL, holder TEXT, token INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL, PRIMARY KEY (name, slot)
    ) WITHOUT ROWID;
    CREATE TABLE lock_tokens (name TEXT PRIMARY KEY, token INTEGER NOT NULL) WITHOUT ROWID;
    """,
    # 4: shards leased to engine loops by epoch (the embedded runner takes all of them), and staged
    # state writes carried by an inbox report.
    """
    CREATE TABLE shards (
        shard INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, until_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    ALTER TABLE inbox ADD COLUMN state_ops BLOB;
    """,
    # 5: partial task indexes. A ready task is in one, a leased task in the other, so a commit that
    # leases, finishes or re-queues a task rewrites fewer index pages (each page is a WAL frame, two
    # writes, before the commit's fsync).
    """
    DROP INDEX tasks_to_claim;
    DROP INDEX tasks_by_lease;
    CREATE INDEX tasks_ready ON tasks (target, prio_key) WHERE status = 'ready';
    CREATE INDEX tasks_leased ON tasks (lease_until_ms) WHERE status = 'leased';
    """,
    # 6: the journal: a small commit's writes as one row, made durable first and applied to the
    # tables just after (see covey.store.sqlite.journal). A later migration that changes a table a
    # journal row writes must run after the rows are replayed.
    """
    CREATE TABLE journal (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
    """,
    # 7: retention. Finished runs by finish time (a partial index: running runs are not in it), and
    # remembered signal and cancel ids and timers by run, so purging a run's does not read them all
    # (both grow with the runs kept or in flight).
    """
    CREATE INDEX runs_finished ON runs (finished_ms, run_id) WHERE finished_ms IS NOT NULL;
    CREATE INDEX seen_by_run ON seen (run_id);
    CREATE INDEX timers_by_run ON timers (run_id);
    """,
]
