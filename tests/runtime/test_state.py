"""Shared state from agents through a real runner: staged writes exactly once, live writes at once.

Each case runs with in-process workers and with worker processes (the
socket protocol), since both links carry state.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from covey import Embedded
from covey.state.model import run_namespace

APP = str(Path(__file__).parent / "apps" / "stateful.py")

COUNT = {
    "name": "count",
    "steps": {
        "count": {"skill": "count", "retry": {"attempts": 2, "backoff_s": 0}},
        "show": {
            "skill": "show",
            "input": {"n": "${state.n}", "tries": "${state.tries}"},
            "after": ["count"],
        },
    },
}


@pytest.fixture(params=[False, True], ids=["in-process", "processes"])
async def covey(request: pytest.FixtureRequest, tmp_path: Path) -> Embedded:
    async with Embedded(tmp_path / "covey.db", app=APP, processes=request.param) as embedded:
        yield embedded


async def test_staged_writes_land_once_with_the_accepted_result(covey: Embedded) -> None:
    info = await covey.wait(await covey.submit(COUNT))

    assert info.status == "succeeded"
    assert info.output == {"show": {"n": 1, "tries": [2]}}, "the failed try's staged writes were dropped"
    store = covey.runner.store
    namespace = run_namespace(info.run_id)
    last = await store.state_get(namespace, "last")
    assert last is not None
    assert last.value == {"by": f"{info.run_id}/count"}
    assert [e.key for e in await store.state_list(namespace)] == ["last", "n", "tries"]


async def test_live_compare_and_set_reports_the_current_version(covey: Embedded) -> None:
    info = await covey.wait(await covey.submit({"name": "cas", "steps": {"c": {"skill": "claim_once"}}}))
    assert info.status == "succeeded"
    assert info.output == {"c": {"first_version": 1, "conflict_version": 1, "owner": f"{info.run_id}/c"}}


@pytest.mark.parametrize("flag", [True, False])
async def test_a_condition_tests_state_written_by_an_earlier_step(covey: Embedded, flag: bool) -> None:
    workflow = {
        "name": "gate",
        "steps": {
            "set": {"skill": "set_flag", "input": "${input.flag}"},
            "gated": {"skill": "show", "input": "ran", "after": ["set"], "when": "state.go"},
        },
    }
    info = await covey.wait(await covey.submit(workflow, {"flag": flag}))
    assert info.status == "succeeded"
    assert info.output == {"gated": "ran" if flag else None}
    history = await covey.runner.store.load_history(info.run_id)
    [read] = [e for e in history if e["type"] == "StateRead"]
    assert read["values"] == {"go": {"value": flag, "version": 1}}


@pytest.mark.parametrize(
    ("step", "field", "message"),
    [
        ({"skill": "show", "map": "state.items"}, "map", "a map source cannot read shared state"),
        ({"skill": "show", "when": "length(state) > `0`"}, "when", "name its keys"),
    ],
)
async def test_state_in_map_or_whole_in_when_is_refused(
    covey: Embedded, step: dict[str, str], field: str, message: str
) -> None:
    from covey import SpecError

    with pytest.raises(SpecError, match=message) as caught:
        await covey.submit({"name": "w", "steps": {"a": step}})
    assert (caught.value.step, caught.value.field) == ("a", field)


async def test_agents_of_a_worker_share_one_subscription(covey: Embedded, tmp_path: Path) -> None:
    from covey import LocalClient
    from covey.state.model import StateOp
    from covey.testing import wait_for

    agents, writes = 20, 10
    workflow = {
        "name": "listen",
        "steps": {"l": {"skill": "listen", "map": "${input.n}", "input": "${item}"}},
    }
    run_id = await covey.submit(workflow, {"n": list(range(agents))})
    feed = covey.runner.feed
    assert feed is not None
    await wait_for(lambda: feed.reads >= 1, timeout=10, message="the listeners subscribed")
    client = LocalClient(covey.path)
    for i in range(writes):
        await client.state_apply([StateOp("put", "bcast", f"k{i}", i)])
    await client.state_apply([StateOp("put", "bcast", "stop", True)])
    info = await covey.wait(run_id)

    assert info.status == "succeeded"
    assert info.output == {"l": [list(range(1, writes + 1))] * agents}, "every agent saw every change once"
    workers = covey.workers
    # One subscription reads the feed about twice per change (one read finds it, the next finds nothing and
    # waits); per-agent subscriptions would read it {agents} times as often.
    bound = workers * 2 * (writes + 3)
    assert feed.reads <= bound, f"{feed.reads} feed reads: bounded by workers, not {agents} agents"


@pytest.mark.parametrize(("policy", "kept"), [("keep", True), ("delete", False)])
async def test_a_run_namespace_is_kept_or_deleted_when_the_run_ends(
    covey: Embedded, policy: str, kept: bool
) -> None:
    workflow = {"name": "flag", "run_state": policy, "steps": {"set": {"skill": "set_flag", "input": True}}}
    info = await covey.wait(await covey.submit(workflow))
    assert info.status == "succeeded"
    store = covey.runner.store
    namespace = run_namespace(info.run_id)
    assert (await store.state_get(namespace, "go") is not None) is kept
    assert bool(await store.state_changes(namespace, 0)) is kept


async def test_an_agent_lists_keys_in_pages(covey: Embedded) -> None:
    info = await covey.wait(await covey.submit({"name": "list", "steps": {"l": {"skill": "lister"}}}))
    assert info.status == "succeeded"
    assert info.output == {"l": ["p1", "p2", "p3"]}


async def test_an_agent_behind_the_feed_gets_cursor_expired_or_resyncs_from_a_snapshot(
    covey: Embedded,
) -> None:
    from covey import LocalClient

    covey.runner.store.feed_keep = 3
    client = LocalClient(covey.path)
    for i in range(10):
        await client.state_put("far", f"k{i % 4}", i)
    workflow = {"name": "far", "steps": {"late": {"skill": "too_late"}, "resync": {"skill": "resync"}}}
    run_id = await covey.submit(workflow)
    await client.state_put("far", "stop", True)
    info = await covey.wait(run_id)

    assert info.status == "succeeded", info.error
    assert info.output["late"]["after"] == 0
    assert info.output["late"]["oldest"] >= 8, "changes 1 - 7 are trimmed"
    assert info.output["resync"]["snapshots"] == 1
    assert info.output["resync"]["view"] == {"k0": 8, "k1": 9, "k2": 6, "k3": 7, "stop": True}
