"""The store conformance suite: what every :class:`~covey.store.base.Store` must do.

DESIGN.md, invariant 8: one suite, parametrized over every store, defines the
semantics, and a backend is done when it passes it against the real server.
The suite is a set of pytest test classes, one per capability:

========================================  =====================================================
:class:`~.commit.TestCommit`              atomic group commit, sequence conflicts, epochs,
                                          histories, run output, drops, timers, seen ids
:class:`~.feed.TestChangeFeed`            each namespace's change feed: order, no gaps, its last
                                          ``feed_keep`` changes kept, ``CursorExpired`` past them
:class:`~.claim.TestClaim`                which ready tasks a claim takes, in which order,
                                          lease numbers, inputs resolved at claim time
:class:`~.leases.TestLeases`              heartbeat, release, epochs voiding leases
:class:`~.timers.TestTimers`              ``fire_due``: timers, expired leases, try timeouts
:class:`~.inbox.TestInbox`                ``append_inbox`` / ``read_inbox``, idempotent by id
:class:`~.outputs.TestOutputs`            ``get_outputs`` for plain and map steps
:class:`~.registry.TestRegistry`          the worker registry
:class:`~.locks.TestLocks`                locks and semaphores, fencing tokens, lock-fenced writes
:class:`~.reads.TestReads`                ``get_run``, ``list_runs``, ``list_tasks``, reopening
:class:`~.retention.TestRetention`        ``purge_finished``: finished runs past their retention,
                                          with all that was theirs
:class:`~.shards.TestShards`              shards leased to engine loops by epoch; commits
                                          need the shards of their runs
:class:`~.state.TestState`                shared state: versions, compare-and-set, reducers,
                                          atomic batches, ``state_list`` paging, lease fences,
                                          writes staged in a commit, concurrent updates
========================================  =====================================================

Running it against a backend
----------------------------
The tests are ``async`` and marked ``@pytest.mark.asyncio`` (install
``pytest-asyncio``, which covey's ``dev`` extra brings). They use two
fixtures that the backend's test package defines in its ``conftest.py``:

* ``store_factory``: a callable returning a *new, not yet entered* store
  object (an async context manager) on the same, initially empty database.
  Tests call it to open a second connection (another runner taking over with
  ``begin_epoch``) or to reopen the store after closing it (durability). Each
  test needs its own database: a fresh file, a schema or key prefix per test.
* ``store``: one store from the factory, entered for the test's duration.

A minimal ``conftest.py``::

    from collections.abc import AsyncIterator
    from pathlib import Path

    import pytest

    from covey.store.base import Store
    from covey.testing.conformance import StoreFactory
    from mystore import MyStore


    @pytest.fixture
    def store_factory(tmp_path: Path) -> StoreFactory:
        return lambda: MyStore(f"mystore://localhost/{tmp_path.name}")


    @pytest.fixture
    async def store(store_factory: StoreFactory) -> AsyncIterator[Store]:
        async with store_factory() as store:
            yield store

and a test module that imports the classes, so pytest collects them there::

    from covey.testing.conformance.claim import TestClaim
    from covey.testing.conformance.commit import TestCommit
    ...

    __all__ = ["TestClaim", "TestCommit", ...]

``tests/store/conftest.py`` in covey's repository does exactly this for
SQLite, with the store fixture parametrized so that each new backend is one
more parameter.

Conventions of the suite
------------------------
* Each test starts with ``Driver.start(store)``, which calls ``begin_epoch``
  (no test assumes a starting epoch) and then writes batches the way the
  engine loop does (:mod:`covey.testing.conformance.driver`).
* Time is the store's clock (``store.now_ms()``). Tests that need time to pass
  (a 30 ms lease expiring, two commits at different store times) poll with
  :func:`covey.testing.wait_for` and a deadline; none sleeps a fixed time, and
  the whole suite runs in seconds.
* Priority aging (one level per ``AGING_MS``, ten seconds) cannot be observed
  black-box without waiting that long; each backend checks it in its own
  tests by controlling its clock (see ``tests/store/test_sqlite_specific.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeAlias

import pytest

from covey.store.base import Store

# The test modules live in an installed package, not in a test directory: ask pytest to
# rewrite their asserts (before they are imported) so failures show the values compared.
pytest.register_assert_rewrite(
    *(
        f"{__name__}.{name}"
        for name in (
            "claim",
            "commit",
            "driver",
            "inbox",
            "leases",
            "outputs",
            "reads",
            "registry",
            "shards",
            "state",
            "locks",
            "timers",
        )
    )
)

__all__ = ["StoreFactory"]

StoreFactory: TypeAlias = Callable[[], AbstractAsyncContextManager[Store]]
"""Opens the test's store: each call returns a new, not yet entered store on the same database."""
