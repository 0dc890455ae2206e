"""Conformance: ``claim`` leases ready tasks by target, labels and priority, inputs resolved."""

from __future__ import annotations

import orjson
import pytest

from covey.state.model import StateOp
from covey.store.base import Lease, Store
from covey.testing.conformance.driver import Driver, claim_request, task, wait_past

__all__ = ["TestClaim"]


def _ids(leases: list[Lease]) -> list[str]:
    return [lease.task_id for lease in leases]


@pytest.mark.asyncio
class TestClaim:
    """Which ready tasks a claim takes, in which order, and what each lease carries."""

    async def test_a_claim_takes_only_ready_tasks_of_its_targets(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run(
            "r1",
            enqueue=[
                task("r1", "a"),
                task("r1", "b", target="other"),
                task("r1", "c", target="agent:bob"),
            ],
        )

        first = await store.claim(claim_request("w1", ["echo", "agent:bob"]))
        again = await store.claim(claim_request("w2", ["echo", "agent:bob"]))
        other = await store.claim(claim_request("w3", ["other"]))

        assert sorted(_ids(first)) == ["r1/a", "r1/c"]
        assert again == []
        assert _ids(other) == ["r1/b"]
        assert await store.claim(claim_request("w4", [])) == []

    async def test_a_lease_carries_what_the_worker_needs(self, store: Store) -> None:
        d = await Driver.start(store)
        schema = {"type": "object"}
        await d.start_run(
            "r1",
            {"q": 1},
            enqueue=[task("r1", "m", 2, target="t", try_no=3, lease_floor=4, item="x", input_schema=schema)],
        )
        before = await store.now_ms()

        (lease,) = await store.claim(claim_request("w1", ["t"], lease_ms=50_000))

        after = await store.now_ms()
        assert (lease.task_id, lease.run_id, lease.step, lease.index, lease.target) == (
            "r1/m/2",
            "r1",
            "m",
            2,
            "t",
        )
        assert (lease.lease_no, lease.try_no, lease.timeout_ms) == (5, 3, None)
        assert (lease.input, lease.input_schema, lease.input_error) == ("x", schema, None)
        assert before + 50_000 <= lease.lease_until_ms <= after + 50_000
        (row,) = await store.list_tasks("r1")
        assert (row.status, row.worker_id, row.lease_no, row.lease_until_ms) == (
            "leased",
            "w1",
            5,
            lease.lease_until_ms,
        )

    async def test_a_try_timeout_caps_the_lease(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a", timeout_ms=2_000)])

        (lease,) = await store.claim(claim_request(lease_ms=60_000))

        assert lease.timeout_ms == 2_000
        (row,) = await store.list_tasks("r1")
        assert row.lease_until_ms == lease.lease_until_ms
        assert lease.lease_until_ms <= await store.now_ms() + 2_000

    async def test_highest_priority_first_then_oldest(self, store: Store) -> None:
        # Given the oldest task at priority 0, a newer one at 0 and the newest at 5
        # (task ids sort the other way, so neither id nor insertion order can pass this),
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "z")])
        await wait_past(store, await store.now_ms())
        await d.update("r1", enqueue=[task("r1", "y")])
        await wait_past(store, await store.now_ms())
        await d.update("r1", enqueue=[task("r1", "x", priority=5), task("r1", "w", priority=-1)])

        # when a worker claims one at a time,
        order = [_ids(await store.claim(claim_request(limit=1))) for _ in range(5)]

        # then priority wins, and age breaks ties.
        assert order == [["r1/x"], ["r1/z"], ["r1/y"], ["r1/w"], []]

    async def test_the_limit_is_respected(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "m", i) for i in range(5)])

        sizes = [len(await store.claim(claim_request(limit=2))) for _ in range(4)]

        assert sizes == [2, 2, 1, 0]
        assert await store.claim(claim_request(limit=0)) == []

    async def test_required_labels_must_all_be_offered(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run(
            "r1",
            enqueue=[
                task("r1", "both", labels={"gpu": "true", "region": "eu"}, priority=3),
                task("r1", "gpu", labels={"gpu": "true"}, priority=2),
                task("r1", "plain", priority=1),
            ],
        )

        bare = await store.claim(claim_request("w1"))
        gpu = await store.claim(claim_request("w2", labels={"gpu": "true"}))
        wrong = await store.claim(claim_request("w3", labels={"gpu": "false", "region": "eu"}))
        full = await store.claim(claim_request("w4", labels={"gpu": "true", "region": "eu", "extra": "1"}))

        assert _ids(bare) == ["r1/plain"]
        assert _ids(gpu) == ["r1/gpu"]
        assert wrong == []
        assert _ids(full) == ["r1/both"]

    async def test_tasks_a_worker_cannot_run_do_not_hide_those_it_can(self, store: Store) -> None:
        # Many higher-priority tasks need a label this worker lacks; those it can run are still found,
        # each once, in claim order (two of them hide between the others at the same priority).
        d = await Driver.start(store)
        tasks = [task("r1", "g", i, labels={"gpu": "true"}, priority=9) for i in range(40)]
        tasks[13] = task("r1", "p", 13, priority=9)
        tasks[29] = task("r1", "p", 29, priority=9)
        await d.start_run(
            "r1", enqueue=[*tasks, task("r1", "low", priority=0), task("r1", "lower", priority=-1)]
        )

        first = await store.claim(claim_request("cpu", labels={"gpu": "false"}, limit=3))
        rest = await store.claim(claim_request("cpu", labels={"gpu": "false"}, limit=3))

        assert sorted(_ids(first[:2])) == ["r1/p/13", "r1/p/29"]
        assert _ids(first[2:]) == ["r1/low"]
        assert _ids(rest) == ["r1/lower"]

    async def test_lease_numbers_grow_across_re_enqueues(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a")])
        (first,) = await store.claim(claim_request())
        # The engine retries the task: the row is replaced, with the last lease number as its floor.
        await d.update("r1", enqueue=[task("r1", "a", try_no=2, lease_floor=first.lease_no)])
        (row,) = await store.list_tasks("r1")
        assert (row.status, row.try_no, row.lease_no, row.worker_id) == ("ready", 2, 1, None)

        (second,) = await store.claim(claim_request("w2"))

        assert (first.lease_no, second.lease_no, second.try_no) == (1, 2, 2)

    async def test_inputs_are_resolved_from_run_input_outputs_item_and_index(self, store: Store) -> None:
        d = await Driver.start(store)
        whole = {
            "who": "${input.name}",
            "x": "${steps.a.x}",
            "m": "${steps.m}",
            "greet": "hi ${input.name}",
            "none": "${steps.never}",
            "lit": 5,
        }
        per_item = {"it": "${item.k}", "i": "${index}", "all": "${item}"}
        await d.start_run("r1", {"name": "Ann"}, outputs=[("a", -1, {"x": 1}), ("m", 1, "one")])
        await d.update(
            "r1",
            outputs=[("m", 0, "zero")],
            enqueue=[
                task("r1", "whole", template=whole),
                task("r1", "each", 3, item={"k": "v"}, template=per_item),
                task("r1", "plain_default"),
                task("r1", "map_default", 0, item=[1, 2]),
                task("r1", "literal", 1, item="ignored", template={"fixed": [True]}),
            ],
        )

        leases = {lease.step: lease for lease in await store.claim(claim_request())}

        assert leases["whole"].input == {
            "who": "Ann",
            "x": 1,
            "m": ["zero", "one"],
            "greet": "hi Ann",
            "none": None,
            "lit": 5,
        }
        assert leases["each"].input == {"it": "v", "i": 3, "all": {"k": "v"}}
        assert leases["plain_default"].input == {}
        assert leases["map_default"].input == [1, 2]
        assert leases["literal"].input == {"fixed": [True]}
        assert all(lease.input_error is None for lease in leases.values())

    async def test_inputs_read_the_runs_shared_state_and_deleted_keys_are_absent(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1")
        await store.state_apply(
            [StateOp("put", "run:r1", "kept", 7, None, None), StateOp("put", "run:r1", "gone", 1, None, None)]
        )
        await store.state_apply([StateOp("delete", "run:r1", "gone", None, None, None)])
        await d.update("r1", enqueue=[task("r1", "s", template={"k": "${state.kept}", "g": "${state.gone}"})])

        (lease,) = await store.claim(claim_request())

        assert lease.input_error is None
        assert lease.input == {"k": 7, "g": None}

    async def test_each_task_reads_its_own_run(self, store: Store) -> None:
        d = await Driver.start(store)
        for run_id, value in (("r1", 1), ("r2", 2)):
            await d.start_run(
                run_id,
                {"v": value},
                outputs=[("a", -1, value * 10)],
                enqueue=[task(run_id, "b", template={"v": "${input.v}", "a": "${steps.a}"})],
            )

        leases = {lease.run_id: lease.input for lease in await store.claim(claim_request())}

        assert leases == {"r1": {"v": 1, "a": 10}, "r2": {"v": 2, "a": 20}}

    async def test_a_mapping_that_fails_gives_an_input_error_not_an_exception(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run(
            "r1",
            {"name": "Ann"},
            enqueue=[
                task("r1", "bad", template="${abs(input.name)}"),
                task("r1", "good", template="${input.name}"),
            ],
        )

        leases = {lease.step: lease for lease in await store.claim(claim_request())}

        assert leases["bad"].input is None
        assert leases["bad"].input_error is not None
        assert "abs" in leases["bad"].input_error
        assert leases["bad"].lease_no == 1
        assert (leases["good"].input, leases["good"].input_error) == ("Ann", None)
        assert {t.status for t in await store.list_tasks("r1")} == {"leased"}

    async def test_a_batch_claim_sees_the_tasks_and_outputs_that_batch_wrote(self, store: Store) -> None:
        # The hand-off in one commit: "a" succeeds, its output is kept, "b" becomes ready and is leased.
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "a")])
        write = d.write("r1")
        write.outputs.append(("a", -1, orjson.dumps({"y": 7})))
        write.drop.append("r1/a")
        write.enqueue.append(task("r1", "b", target="next", template={"y": "${steps.a.y}"}))

        result = await d.commit(write, claims=[claim_request("w1", ["next"])])

        (lease,) = result.leases["w1"]
        assert (lease.task_id, lease.lease_no, lease.input) == ("r1/b", 1, {"y": 7})
        (row,) = await store.list_tasks("r1")
        assert (row.task_id, row.status, row.worker_id) == ("r1/b", "leased", "w1")

    async def test_a_batch_claim_takes_an_older_ready_task_of_higher_priority_first(
        self, store: Store
    ) -> None:
        d = await Driver.start(store)
        await d.start_run("r0", enqueue=[task("r0", "urgent", target="next", priority=5)])
        await d.start_run("r1")

        result = await d.update(
            "r1", enqueue=[task("r1", "b", target="next")], claims=[claim_request("w1", ["next"], limit=1)]
        )

        assert _ids(result.leases["w1"]) == ["r0/urgent"]
        (row,) = await store.list_tasks("r1")
        assert row.status == "ready"
        assert _ids(await store.claim(claim_request("w2", ["next"]))) == ["r1/b"]

    async def test_a_batch_claim_after_others_sees_a_task_made_ready_since(self, store: Store) -> None:
        # Hand-offs that found nothing else ready, then tasks become ready outside a hand-off (enqueued
        # without a claim, a lease given back): the next hand-off's claim takes those first.
        d = await Driver.start(store)
        await d.start_run("r1")
        first = await d.update(
            "r1", enqueue=[task("r1", "a", target="next")], claims=[claim_request("w1", ["next"])]
        )
        assert _ids(first.leases["w1"]) == ["r1/a"]

        await d.start_run("r0", enqueue=[task("r0", "urgent", target="next", priority=5)])
        second = await d.update(
            "r1", enqueue=[task("r1", "b", target="next")], claims=[claim_request("w1", ["next"], limit=1)]
        )
        assert _ids(second.leases["w1"]) == ["r0/urgent"]

        (taken,) = await store.claim(claim_request("w2", ["next"]))
        assert taken.task_id == "r1/b"
        third = await d.update(
            "r1", enqueue=[task("r1", "c", target="next")], claims=[claim_request("w1", ["next"], limit=1)]
        )
        assert _ids(third.leases["w1"]) == ["r1/c"]  # nothing else was ready

        await store.release("w2", [(taken.task_id, taken.lease_no)])
        fourth = await d.update(
            "r1", enqueue=[task("r1", "d", target="next")], claims=[claim_request("w1", ["next"], limit=1)]
        )
        assert _ids(fourth.leases["w1"]) == ["r1/b"]

    async def test_a_batch_claim_leaves_a_new_task_needing_labels_it_lacks(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1")

        result = await d.update(
            "r1",
            enqueue=[task("r1", "gpu", labels={"gpu": "yes"}), task("r1", "cpu")],
            claims=[claim_request("w1", labels={"gpu": "no"})],
        )

        assert _ids(result.leases["w1"]) == ["r1/cpu"]
        statuses = {row.step: row.status for row in await store.list_tasks("r1")}
        assert statuses == {"gpu": "ready", "cpu": "leased"}
        assert _ids(await store.claim(claim_request("w2", labels={"gpu": "yes"}))) == ["r1/gpu"]

    async def test_a_batch_claim_resolves_the_run_input_and_a_whole_map_output(self, store: Store) -> None:
        # The batch writes one element of map step "m": the lease must see every element, in order.
        d = await Driver.start(store)
        await d.start_run("r1", {"q": 1}, outputs=[("m", 0, "a"), ("m", 1, "b")])

        result = await d.update(
            "r1",
            outputs=[("m", 2, "c")],
            enqueue=[task("r1", "j", target="join", template={"all": "${steps.m}", "q": "${input.q}"})],
            claims=[claim_request("w1", ["join"])],
        )

        (lease,) = result.leases["w1"]
        assert lease.input == {"all": ["a", "b", "c"], "q": 1}

    async def test_a_batch_lease_is_fenced_and_timed_like_any_other(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1")
        before = await store.now_ms()

        result = await d.update(
            "r1",
            enqueue=[task("r1", "b", lease_floor=4, try_no=2, timeout_ms=1_000)],
            claims=[claim_request("w1", lease_ms=50_000)],
        )

        (lease,) = result.leases["w1"]
        assert (lease.lease_no, lease.try_no, lease.timeout_ms) == (5, 2, 1_000)
        assert before + 1_000 <= lease.lease_until_ms <= await store.now_ms() + 1_000
        assert await store.heartbeat("w1", [("r1/b", 4)], 50_000) == ["r1/b"]
        assert await store.heartbeat("w1", [("r1/b", 5)], 50_000) == []
        (row,) = await store.list_tasks("r1")
        assert (row.status, row.worker_id, row.lease_no) == ("leased", "w1", 5)

    async def test_every_lease_a_batch_grants_is_returned(self, store: Store) -> None:
        # Two claims of one worker and one of another in one batch: no task may end up
        # leased without its lease reaching someone, or it would only come back by expiring.
        d = await Driver.start(store)
        await d.start_run("r1", enqueue=[task("r1", "m", i) for i in range(4)])

        result = await d.commit(
            claims=[claim_request("w1", limit=1), claim_request("w2", limit=1), claim_request("w1", limit=1)]
        )

        granted = [lease.task_id for leases in result.leases.values() for lease in leases]
        leased = [t.task_id for t in await store.list_tasks("r1") if t.status == "leased"]
        assert len(granted) == 3
        assert sorted(granted) == sorted(leased)
        assert len(result.leases["w1"]) == 2
        assert len(result.leases["w2"]) == 1
