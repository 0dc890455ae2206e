"""Conformance: shared state, versioned per key, written atomically, fenced by leases and staged in commits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from covey.errors import Conflict, InputError, StaleLease, VersionConflict
from covey.state.model import StateEntry, StateOp, run_namespace
from covey.store.base import Lease, RunWrite, Store
from covey.testing.conformance import StoreFactory
from covey.testing.conformance.driver import Driver, claim_request, task, wait_past

__all__ = ["TestState"]

NS = "docs"


def put(key: str, value: Any, *, namespace: str = NS, if_version: int | None = None) -> StateOp:
    """A ``put`` write."""
    return StateOp("put", namespace, key, value, None, if_version)


def delete(key: str, *, namespace: str = NS, if_version: int | None = None) -> StateOp:
    """A ``delete`` write."""
    return StateOp("delete", namespace, key, None, None, if_version)


def update(key: str, reducer: str, value: Any, *, namespace: str = NS) -> StateOp:
    """An ``update`` write with a reducer."""
    return StateOp("update", namespace, key, value, reducer)


async def _leased(store: Store, run_id: str = "r1") -> tuple[Driver, Lease]:
    """A run with one ready task ``<run_id>/a``, claimed by w1."""
    d = await Driver.start(store)
    await d.start_run(run_id, enqueue=[task(run_id, "a")])
    (lease,) = await store.claim(claim_request("w1"))
    return d, lease


def _staged(write: RunWrite, *ops: StateOp) -> RunWrite:
    write.state_ops.extend(ops)
    return write


# (reducer, value before or None for a missing key, argument, value after)
REDUCED: list[tuple[str, Any, Any, Any]] = [
    ("append", None, "x", ["x"]),
    ("append", ["a"], {"b": 1}, ["a", {"b": 1}]),
    ("append", [], [1], [[1]]),
    ("extend", None, [1, 2], [1, 2]),
    ("extend", [0], [1, [2]], [0, 1, [2]]),
    ("extend", [0], [], [0]),
    ("merge", None, {"a": 1}, {"a": 1}),
    ("merge", {"a": 1, "b": {"x": 1}}, {"b": {"y": 2}, "c": None}, {"a": 1, "b": {"y": 2}, "c": None}),
    ("add", None, 5, 5),
    ("add", 5, 2, 7),
    ("add", 5, 2.5, 7.5),
    ("add", 5, -7, -2),
    ("max", None, 3, 3),
    ("max", 3, 7, 7),
    ("max", 7, 1, 7),
    ("max", -1.5, -2, -1.5),
    ("min", None, 3, 3),
    ("min", 3, 7, 3),
    ("min", 7, 1, 1),
    ("min", 0.5, 1, 0.5),
]

# (reducer, value before or None for a missing key, argument) that do not fit
MISFITS: list[tuple[str, Any, Any]] = [
    ("append", {"a": 1}, 1),
    ("append", "text", 1),
    ("extend", None, "not a list"),
    ("extend", {"a": 1}, [1]),
    ("merge", None, [1]),
    ("merge", [1], {"a": 1}),
    ("add", "3", 1),
    ("add", 1, "2"),
    ("add", None, True),
    ("add", True, 1),
    ("add", None, None),
    ("max", [1], 2),
    ("max", None, {"n": 1}),
    ("min", 1, False),
]


@pytest.mark.asyncio
class TestState:
    """state_get, state_apply (versions, CAS, reducers, atomic batches, fences), state_list, staged writes."""

    # -- versions ----------------------------------------------------------------------

    async def test_a_missing_key_reads_as_none(self, store: Store) -> None:
        assert await store.state_get(NS, "missing") is None
        assert await store.state_list(NS) == []
        assert await store.state_apply([]) == []

    async def test_put_creates_version_1_and_every_write_bumps_it(self, store: Store) -> None:
        (first,) = await store.state_apply([put("k", {"v": 1})])
        assert first == StateEntry(NS, "k", {"v": 1}, 1)
        assert await store.state_get(NS, "k") == first

        (second,) = await store.state_apply([put("k", [1, "two", None, 3.5, True])])
        (third,) = await store.state_apply([update("k", "append", 4)])
        (fourth,) = await store.state_apply([put("k", [1, "two", None, 3.5, True, 4])])

        assert [e.version for e in (second, third, fourth)] == [2, 3, 4]
        assert third.value == [1, "two", None, 3.5, True, 4]
        assert await store.state_get(NS, "k") == StateEntry(NS, "k", [1, "two", None, 3.5, True, 4], 4)

    async def test_a_key_holding_null_exists(self, store: Store) -> None:
        await store.state_apply([put("k", None)])

        assert await store.state_get(NS, "k") == StateEntry(NS, "k", None, 1)
        assert await store.state_list(NS) == [StateEntry(NS, "k", None, 1)]

    async def test_delete_removes_the_key_and_versions_keep_counting(self, store: Store) -> None:
        await store.state_apply([put("k", "a")])
        await store.state_apply([put("k", "b")])

        (deleted,) = await store.state_apply([delete("k")])

        assert deleted.version == 3
        assert await store.state_get(NS, "k") is None
        assert await store.state_list(NS) == []
        # A write that read version 2 before the delete must not land on the new value.
        with pytest.raises(VersionConflict) as caught:
            await store.state_apply([put("k", "stale", if_version=2)])
        assert caught.value.version == 0
        # Absent again: "if absent" may create it, and its version continues the count.
        (again,) = await store.state_apply([put("k", "c", if_version=0)])
        assert again == StateEntry(NS, "k", "c", 4)
        assert await store.state_get(NS, "k") == again

    async def test_deleting_a_missing_key_changes_nothing(self, store: Store) -> None:
        await store.state_apply([delete("missing")])
        await store.state_apply([delete("missing", if_version=0)])

        assert await store.state_get(NS, "missing") is None
        (created,) = await store.state_apply([put("missing", 1, if_version=0)])
        assert created.version == 1

    # -- compare-and-set ---------------------------------------------------------------

    async def test_if_version_0_creates_a_missing_key_only(self, store: Store) -> None:
        (created,) = await store.state_apply([put("k", "first", if_version=0)])
        assert created == StateEntry(NS, "k", "first", 1)

        with pytest.raises(VersionConflict) as caught:
            await store.state_apply([put("k", "second", if_version=0)])

        err = caught.value
        assert isinstance(err, Conflict)
        assert (err.namespace, err.key, err.expected, err.version) == (NS, "k", 0, 1)
        assert await store.state_get(NS, "k") == created

    async def test_if_version_must_be_the_current_version(self, store: Store) -> None:
        await store.state_apply([put("k", 1)])
        await store.state_apply([put("k", 2)])

        for stale in (1, 3):
            with pytest.raises(VersionConflict) as caught:
                await store.state_apply([put("k", "lost", if_version=stale)])
            assert (caught.value.expected, caught.value.version) == (stale, 2)
        (won,) = await store.state_apply([put("k", "won", if_version=2)])

        assert won == StateEntry(NS, "k", "won", 3)
        assert await store.state_get(NS, "k") == won

    async def test_if_version_on_a_missing_key_reports_version_0(self, store: Store) -> None:
        with pytest.raises(VersionConflict) as caught:
            await store.state_apply([put("k", 1, if_version=1)])

        assert (caught.value.key, caught.value.expected, caught.value.version) == ("k", 1, 0)
        assert await store.state_get(NS, "k") is None

    async def test_a_conditional_delete(self, store: Store) -> None:
        await store.state_apply([put("k", 1)])
        await store.state_apply([put("k", 2)])

        with pytest.raises(VersionConflict) as caught:
            await store.state_apply([delete("k", if_version=1)])
        assert caught.value.version == 2
        assert await store.state_get(NS, "k") == StateEntry(NS, "k", 2, 2)

        await store.state_apply([delete("k", if_version=2)])
        assert await store.state_get(NS, "k") is None

    # -- atomic batches ----------------------------------------------------------------

    async def test_a_batch_sees_its_own_earlier_writes(self, store: Store) -> None:
        entries = await store.state_apply(
            [
                put("n", 1, if_version=0),
                update("n", "add", 2),
                put("log", [], if_version=0),
                update("log", "append", "a"),
                update("n", "add", 3),
                put("n", "six?", if_version=3),
            ]
        )

        assert [(e.key, e.value, e.version) for e in entries] == [
            ("n", 1, 1),
            ("n", 3, 2),
            ("log", [], 1),
            ("log", ["a"], 2),
            ("n", 6, 3),
            ("n", "six?", 4),
        ]
        assert await store.state_get(NS, "n") == StateEntry(NS, "n", "six?", 4)

    async def test_one_failing_compare_and_set_writes_nothing_of_the_batch(self, store: Store) -> None:
        await store.state_apply([put("a", "old"), put("b", "old")])

        with pytest.raises(VersionConflict) as caught:
            await store.state_apply(
                [
                    put("a", "new"),
                    delete("b"),
                    put("c", "new"),
                    update("d", "add", 1, namespace="other"),
                    put("b", "new", if_version=1),  # b was deleted above: its version is 0 by now
                ]
            )

        assert (caught.value.key, caught.value.version) == ("b", 0)
        assert await store.state_get(NS, "a") == StateEntry(NS, "a", "old", 1)
        assert await store.state_get(NS, "b") == StateEntry(NS, "b", "old", 1)
        assert await store.state_get(NS, "c") is None
        assert await store.state_get("other", "d") is None

    async def test_one_reducer_that_does_not_fit_writes_nothing_of_the_batch(self, store: Store) -> None:
        await store.state_apply([put("a", "old"), put("tags", {"not": "a list"})])

        with pytest.raises(InputError) as caught:
            await store.state_apply(
                [put("a", "new"), put("c", 1, if_version=0), update("tags", "append", "x"), put("d", 1)]
            )

        assert "tags" in str(caught.value)
        assert await store.state_get(NS, "a") == StateEntry(NS, "a", "old", 1)
        assert await store.state_get(NS, "tags") == StateEntry(NS, "tags", {"not": "a list"}, 1)
        assert await store.state_get(NS, "c") is None
        assert await store.state_get(NS, "d") is None

    # -- reducers ----------------------------------------------------------------------

    @pytest.mark.parametrize(("reducer", "before", "arg", "after"), REDUCED)
    async def test_each_reducer_on_a_missing_or_existing_key(
        self, store: Store, reducer: str, before: Any, arg: Any, after: Any
    ) -> None:
        if before is not None:
            await store.state_apply([put("k", before)])
        version = 1 if before is None else 2

        (entry,) = await store.state_apply([update("k", reducer, arg)])

        assert entry == StateEntry(NS, "k", after, version)
        assert type(entry.value) is type(after)
        stored = await store.state_get(NS, "k")
        assert stored == StateEntry(NS, "k", after, version)
        assert stored is not None
        assert type(stored.value) is type(after)  # 7 stays an int, 7.5 a float, through the store

    @pytest.mark.parametrize(("reducer", "before", "arg"), MISFITS)
    async def test_a_reducer_that_does_not_fit_raises_input_error_naming_the_key(
        self, store: Store, reducer: str, before: Any, arg: Any
    ) -> None:
        if before is not None:
            await store.state_apply([put("the-key", before)])

        with pytest.raises(InputError) as caught:
            await store.state_apply([update("the-key", reducer, arg)])

        assert "the-key" in str(caught.value)
        assert reducer in str(caught.value)
        expected = None if before is None else StateEntry(NS, "the-key", before, 1)
        assert await store.state_get(NS, "the-key") == expected

    async def test_an_unknown_reducer_raises_input_error(self, store: Store) -> None:
        with pytest.raises(InputError) as caught:
            await store.state_apply([update("k", "multiply", 2)])

        assert "multiply" in str(caught.value)
        assert await store.state_get(NS, "k") is None

    async def test_an_add_past_what_json_numbers_hold_is_refused_not_stored_as_null(
        self, store: Store
    ) -> None:
        await store.state_apply([put("f", 1e308)])

        with pytest.raises(InputError) as caught:
            await store.state_apply([update("f", "add", 1e308)])

        assert "f" in str(caught.value)
        assert await store.state_get(NS, "f") == StateEntry(NS, "f", 1e308, 1)

    async def test_a_huge_integer_sum_is_kept_exactly_or_refused(self, store: Store) -> None:
        # A store may hold integers wider than 64 bits or refuse them; it never stores another number.
        big = 2**64 - 1
        await store.state_apply([put("n", big)])

        try:
            (entry,) = await store.state_apply([update("n", "add", 1)])
        except InputError:
            assert await store.state_get(NS, "n") == StateEntry(NS, "n", big, 1)
        else:
            assert entry.value == 2**64
            assert await store.state_get(NS, "n") == StateEntry(NS, "n", 2**64, 2)

    # -- namespaces and listing --------------------------------------------------------

    async def test_namespaces_are_isolated(self, store: Store) -> None:
        run_ns = run_namespace("r1")
        await store.state_apply(
            [
                put("k", "docs"),
                put("k", "cache", namespace="team-a.cache"),
                put("k", "run", namespace=run_ns),
                update("n", "add", 1, namespace="team-a.cache"),
            ]
        )
        await store.state_apply([put("k", "docs again"), update("n", "add", 5)])

        assert await store.state_get(NS, "k") == StateEntry(NS, "k", "docs again", 2)
        assert await store.state_get("team-a.cache", "k") == StateEntry("team-a.cache", "k", "cache", 1)
        assert await store.state_get(run_ns, "k") == StateEntry(run_ns, "k", "run", 1)
        assert await store.state_get(NS, "n") == StateEntry(NS, "n", 5, 1)
        assert await store.state_get("team-a.cache", "n") == StateEntry("team-a.cache", "n", 1, 1)
        assert await store.state_get("run:r2", "k") is None

        await store.state_apply([delete("k", namespace=run_ns)])

        assert await store.state_get(run_ns, "k") is None
        assert await store.state_get(NS, "k") == StateEntry(NS, "k", "docs again", 2)
        assert [e.key for e in await store.state_list("team-a.cache")] == ["k", "n"]
        assert await store.state_list(run_ns) == []

    async def test_state_list_gives_a_prefix_in_key_order(self, store: Store) -> None:
        keys = [
            "a/2",
            "a/10",
            "a/1",
            "a0",
            "a",
            "b/1",
            "A/1",
            "a/é",
            "a/z",
            "a/Z",
            "a/\U0001f600",
            "a/\ufffd",
        ]
        await store.state_apply([put(key, index) for index, key in enumerate(keys)])
        await store.state_apply([put("a/1", "other", namespace="docs2"), put("a/3", 0, namespace="doc")])

        everything = await store.state_list(NS)
        under_a = await store.state_list(NS, prefix="a/")

        # Key order is code point order (binary, not a locale's collation): "A" < "Z" < "a" < "z" < "é".
        assert [e.key for e in everything] == sorted(keys)
        assert [e.key for e in under_a] == [
            "a/1",
            "a/10",
            "a/2",
            "a/Z",
            "a/z",
            "a/é",
            "a/\ufffd",
            "a/\U0001f600",
        ]
        assert all(e.namespace == NS for e in everything)
        assert under_a[0] == StateEntry(NS, "a/1", keys.index("a/1"), 1)
        assert [e.key for e in await store.state_list(NS, prefix="a")] == sorted(
            k for k in keys if k[0] == "a"
        )
        assert await store.state_list(NS, prefix="c") == []
        assert [e.key for e in await store.state_list(NS, prefix="b/1")] == ["b/1"]
        assert [e.value for e in await store.state_list("docs2")] == ["other"]

    async def test_state_list_prefixes_are_literal_text(self, store: Store) -> None:
        keys = ["x_1", "xy1", "x%1", "x%%", "xz", "x\\1", "x*1", "x[1]", "x.1", "x?1"]
        await store.state_apply([put(key, 0) for key in keys])

        for prefix in ("x_", "x%", "x\\", "x*", "x[", "x.", "x?"):
            found = [e.key for e in await store.state_list(NS, prefix=prefix)]
            assert found == sorted(k for k in keys if k.startswith(prefix)), prefix

    async def test_state_list_pages_with_after_and_limit(self, store: Store) -> None:
        keys = [f"p/{n:02d}" for n in range(7)]
        await store.state_apply(
            [put(key, n) for n, key in enumerate(keys)] + [put("q/00", 0), put("o/99", 0)]
        )

        pages: list[list[str]] = []
        after = ""
        for _ in range(5):  # bounded: a store that ignores ``after`` fails here instead of looping
            page = await store.state_list(NS, prefix="p/", after=after, limit=3)
            if not page:
                break
            pages.append([e.key for e in page])
            after = page[-1].key

        assert pages == [keys[0:3], keys[3:6], keys[6:7]]
        assert [e.key for e in await store.state_list(NS, after="p/03", limit=2)] == ["p/04", "p/05"]
        assert [e.key for e in await store.state_list(NS, prefix="p/", after="p/035")] == keys[4:]
        # ``after`` need not be a key, nor start with the prefix.
        assert [e.key for e in await store.state_list(NS, prefix="p/", after="a", limit=1)] == ["p/00"]
        assert await store.state_list(NS, prefix="p/", after="p/99") == []
        assert await store.state_list(NS, after="q/00") == []
        assert [e.key for e in await store.state_list(NS, limit=1)] == ["o/99"]
        assert await store.state_list(NS, limit=0) == []
        assert await store.state_list(NS, limit=-1) == []

    # -- fencing -----------------------------------------------------------------------

    async def test_a_write_fenced_with_the_current_lease_is_applied(self, store: Store) -> None:
        _, lease = await _leased(store)

        entries = await store.state_apply(
            [put("k", 1), update("n", "add", 2)], fence=(lease.task_id, lease.lease_no)
        )

        assert [(e.key, e.value, e.version) for e in entries] == [("k", 1, 1), ("n", 2, 1)]
        assert await store.state_get(NS, "k") == StateEntry(NS, "k", 1, 1)

    async def test_a_write_fenced_with_an_older_lease_is_refused(self, store: Store) -> None:
        # Given a task leased to w1, released, and leased again (lease 2) to w2,
        _, first = await _leased(store)
        await store.release("w1", [(first.task_id, first.lease_no)])
        (second,) = await store.claim(claim_request("w2"))
        assert second.lease_no > first.lease_no

        # then w1's write is refused and writes nothing, and w2's goes through.
        with pytest.raises(StaleLease):
            await store.state_apply([put("k", "w1"), put("j", "w1")], fence=(first.task_id, first.lease_no))
        assert await store.state_get(NS, "k") is None
        assert await store.state_get(NS, "j") is None
        with pytest.raises(StaleLease):
            await store.state_apply([put("k", "future")], fence=(second.task_id, second.lease_no + 1))

        await store.state_apply([put("k", "w2")], fence=(second.task_id, second.lease_no))
        assert await store.state_get(NS, "k") == StateEntry(NS, "k", "w2", 1)

    async def test_a_write_fenced_by_a_task_that_is_not_leased_is_refused(self, store: Store) -> None:
        # Given tasks that were: never claimed, released, dropped, expired, and never existed,
        d = await Driver.start(store)
        await d.start_run(
            "r1", enqueue=[task("r1", "ready", target="nobody"), task("r1", "short", target="s")]
        )
        await d.start_run("r2", enqueue=[task("r2", "released"), task("r2", "dropped", target="d")])
        (released,) = await store.claim(claim_request("w1"))
        (dropped,) = await store.claim(claim_request("w1", ["d"]))
        (short,) = await store.claim(claim_request("w1", ["s"], lease_ms=30))
        await store.release("w1", [(released.task_id, released.lease_no)])
        await d.update("r2", drop=[dropped.task_id])
        await wait_past(store, short.lease_until_ms)
        assert await store.fire_due(10) == 1
        statuses = {t.task_id: (t.status, t.lease_no) for t in await store.list_tasks("r1")}
        statuses.update({t.task_id: (t.status, t.lease_no) for t in await store.list_tasks("r2")})
        assert statuses == {
            "r1/ready": ("ready", 0),
            "r1/short": ("expired", 1),
            "r2/released": ("ready", 1),
        }
        fences = [
            ("r1/ready", 0),
            ("r1/short", short.lease_no),
            (released.task_id, released.lease_no),
            (dropped.task_id, dropped.lease_no),
            ("r9/nothing", 1),
        ]

        # then a write fenced by any of them is refused, and writes nothing.
        for fence in fences:
            with pytest.raises(StaleLease):
                await store.state_apply([put("k", list(fence)), update("n", "add", 1)], fence=fence)
        assert await store.state_list(NS) == []

    async def test_a_fenced_batch_is_still_all_or_nothing(self, store: Store) -> None:
        _, lease = await _leased(store)
        await store.state_apply([put("k", 1)])

        with pytest.raises(VersionConflict):
            await store.state_apply(
                [put("j", 1), put("k", 2, if_version=0)], fence=(lease.task_id, lease.lease_no)
            )

        assert await store.state_get(NS, "j") is None
        assert await store.state_get(NS, "k") == StateEntry(NS, "k", 1, 1)

    # -- staged writes in a commit -----------------------------------------------------

    async def test_staged_writes_are_applied_by_the_commit(self, store: Store) -> None:
        d = await Driver.start(store)
        ns = run_namespace("r1")
        first = _staged(d.submit("r1"), put("plan", {"steps": 2}, namespace=ns), put("shared", 1))

        result = await d.commit(first)

        assert (result.conflicts, result.state_errors) == (set(), {})
        assert await store.state_get(ns, "plan") == StateEntry(ns, "plan", {"steps": 2}, 1)
        assert await store.state_get(NS, "shared") == StateEntry(NS, "shared", 1, 1)

        later = _staged(
            d.write("r1"),
            update("notes", "append", "a", namespace=ns),
            update("notes", "append", "b", namespace=ns),
            delete("plan", namespace=ns),
            update("shared", "add", 10),
        )
        result = await d.commit(later)

        assert (result.conflicts, result.state_errors) == (set(), {})
        assert await store.state_get(ns, "notes") == StateEntry(ns, "notes", ["a", "b"], 2)
        assert await store.state_get(ns, "plan") is None
        assert await store.state_get(NS, "shared") == StateEntry(NS, "shared", 11, 2)
        info = await store.get_run("r1")
        assert info is not None
        assert info.seq == 2

    async def test_a_commit_drops_a_namespace_after_the_staged_writes_before_it(self, store: Store) -> None:
        # Given namespaces with keys and a change feed,
        d = await Driver.start(store)
        for run_id in ("r1", "r2", "r3"):
            await d.start_run(run_id)
        await store.state_apply([put("k", 1, namespace="run:r1"), put("k", 1, namespace="gone")])
        # when one batch writes to one, drops it (r1), writes to it again (r2), and drops another (r3),
        first = _staged(d.write("r1"), put("k", 2, namespace="run:r1"))
        first.drop_namespace = "run:r1"
        second = _staged(d.write("r2"), update("later", "add", 1, namespace="run:r1"))
        third = _staged(d.write("r3"), put("j", 1, namespace="gone"))
        third.drop_namespace = "gone"
        result = await d.commit(first, second, third)

        # then each write applies in batch order: a namespace starts over after its drop.
        assert (result.conflicts, result.state_errors) == (set(), {})
        assert [(e.key, e.value, e.version) for e in await store.state_list("run:r1")] == [("later", 1, 1)]
        assert [(c.seq, c.key) for c in await store.state_changes("run:r1", 0)] == [(1, "later")]
        assert await store.state_list("gone") == []
        assert await store.state_changes("gone", 0) == []
        (again,) = await store.state_apply([put("k", 3, namespace="gone")])
        assert again.version == 1

    async def test_staged_writes_of_several_runs_in_one_batch_all_apply(self, store: Store) -> None:
        d = await Driver.start(store)
        for run_id in ("r1", "r2", "r3"):
            await d.start_run(run_id)

        result = await d.commit(
            *(
                _staged(d.write(run_id), update("count", "add", n))
                for n, run_id in enumerate(("r1", "r2", "r3"), 1)
            )
        )

        assert (result.conflicts, result.state_errors) == (set(), {})
        assert await store.state_get(NS, "count") == StateEntry(NS, "count", 6, 3)

    async def test_a_run_that_conflicts_applies_none_of_its_staged_writes(self, store: Store) -> None:
        # Given r1's write prepared at seq 1, and another commit of r1 before it,
        d = await Driver.start(store)
        await d.start_run("r1")
        await d.start_run("r2")
        stale = _staged(d.write("r1"), put("from-r1", 1), update("count", "add", 1))
        await d.commit(d.write("r1"))

        # when the stale write is committed with r2's in one batch,
        result = await d.commit(stale, _staged(d.write("r2"), put("from-r2", 2), update("count", "add", 2)))

        # then r1's staged writes are left out with it, and r2's apply.
        assert result.conflicts == {"r1"}
        assert result.state_errors == {}
        assert await store.state_get(NS, "from-r1") is None
        assert await store.state_get(NS, "from-r2") == StateEntry(NS, "from-r2", 2, 1)
        assert await store.state_get(NS, "count") == StateEntry(NS, "count", 2, 1)

    async def test_a_first_write_of_an_unknown_run_without_new_applies_nothing(self, store: Store) -> None:
        d = await Driver.start(store)
        orphan = _staged(RunWrite("ghost", expected_seq=0, new_seq=1), put("ghost", 1))

        result = await d.commit(orphan)

        assert result.conflicts == {"ghost"}
        assert await store.state_get(NS, "ghost") is None

    async def test_a_commit_with_a_stale_epoch_applies_no_staged_writes(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1")
        assert await store.begin_epoch() > d.epoch

        with pytest.raises(Conflict):
            await d.commit(_staged(d.write("r1"), put("k", 1)), _staged(d.submit("r2"), put("j", 1)))

        assert await store.state_list(NS) == []
        assert await store.get_run("r2") is None

    async def test_a_staged_update_that_does_not_fit_is_skipped_and_reported(self, store: Store) -> None:
        # Given "tally" holding text, and two runs each staging writes,
        d = await Driver.start(store)
        for run_id in ("r1", "r2"):
            await d.start_run(run_id)
        await store.state_apply([put("tally", "text")])
        r1 = _staged(
            d.write("r1"),
            put("before", 1),
            update("tally", "add", 1),
            update("after", "append", "x"),
            update("before", "add", 1),
        )
        r2 = _staged(d.write("r2"), update("list", "extend", [1]), update("list", "merge", {"a": 1}))

        # when they commit in one batch,
        result = await d.commit(r1, r2)

        # then only the two misfits are skipped, each reported for its run, and the rest commits.
        assert result.conflicts == set()
        assert set(result.state_errors) == {"r1", "r2"}
        (r1_error,) = result.state_errors["r1"]
        (r2_error,) = result.state_errors["r2"]
        assert "tally" in r1_error
        assert "add" in r1_error
        assert "list" in r2_error
        assert "merge" in r2_error
        assert await store.state_get(NS, "tally") == StateEntry(NS, "tally", "text", 1)
        assert await store.state_get(NS, "before") == StateEntry(NS, "before", 2, 2)
        assert await store.state_get(NS, "after") == StateEntry(NS, "after", ["x"], 1)
        assert await store.state_get(NS, "list") == StateEntry(NS, "list", [1], 1)
        for run_id in ("r1", "r2"):
            info = await store.get_run(run_id)
            assert info is not None
            assert info.seq == 2
        assert len(await store.load_history("r1")) == 2

    async def test_a_staged_add_that_overflows_is_skipped_not_the_commit(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1")
        await store.state_apply([put("f", 1e308)])

        result = await d.commit(_staged(d.write("r1"), update("f", "add", 1e308), put("ok", 1)))

        assert result.conflicts == set()
        assert list(result.state_errors) == ["r1"]
        assert await store.state_get(NS, "f") == StateEntry(NS, "f", 1e308, 1)
        assert await store.state_get(NS, "ok") == StateEntry(NS, "ok", 1, 1)

    # -- concurrency and durability ----------------------------------------------------

    async def test_concurrent_updates_lose_nothing(self, store: Store) -> None:
        async def add_ones() -> list[int]:
            versions = []
            for _ in range(50):
                (entry,) = await store.state_apply([update("counter", "add", 1)])
                versions.append(entry.version)
            return versions

        seen = await asyncio.gather(*(add_ones() for _ in range(8)))

        assert await store.state_get(NS, "counter") == StateEntry(NS, "counter", 400, 400)
        # Every write got its own version: none was applied on a stale read.
        assert sorted(v for versions in seen for v in versions) == list(range(1, 401))

    async def test_state_is_there_after_reopening(self, store_factory: StoreFactory) -> None:
        async with store_factory() as first:
            await first.state_apply(
                [
                    put("k", {"v": [1, 2]}),
                    update("n", "add", 1),
                    put("gone", 1),
                    put("k", "run", namespace="run:r1"),
                ]
            )
            await first.state_apply([update("n", "add", 2), delete("gone")])
        async with store_factory() as second:
            assert await second.state_get(NS, "k") == StateEntry(NS, "k", {"v": [1, 2]}, 1)
            assert await second.state_get(NS, "n") == StateEntry(NS, "n", 3, 2)
            assert await second.state_get(NS, "gone") is None
            assert [e.key for e in await second.state_list(NS)] == ["k", "n"]
            assert await second.state_list("run:r1") == [StateEntry("run:r1", "k", "run", 1)]
            (entry,) = await second.state_apply([update("n", "add", 4, namespace=NS)])
            assert entry == StateEntry(NS, "n", 7, 3)
            with pytest.raises(VersionConflict):
                await second.state_apply([put("k", 0, if_version=0)])
