"""Conformance: task outputs are stored once per task and read back per step."""

from __future__ import annotations

import pytest

from covey.store.base import Store
from covey.testing.conformance.driver import Driver

__all__ = ["TestOutputs"]


@pytest.mark.asyncio
class TestOutputs:
    """get_outputs: a plain step's value, a map step's list in index order, None when there is none."""

    async def test_plain_and_map_steps_and_steps_without_output(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", outputs=[("a", -1, {"v": 1}), ("m", 2, "two")])
        await d.update("r1", outputs=[("m", 0, "zero"), ("text", -1, "plain string")])
        await d.update("r1", outputs=[("m", 1, ["one"]), ("empty", -1, [])])

        outputs = await store.get_outputs("r1", ["a", "m", "text", "empty", "none"])

        assert outputs == {
            "a": {"v": 1},
            "m": ["zero", ["one"], "two"],
            "text": "plain string",
            "empty": [],
            "none": None,
        }
        assert await store.get_outputs("r1", ["m"]) == {"m": ["zero", ["one"], "two"]}
        assert await store.get_outputs("r1", []) == {}

    async def test_outputs_belong_to_their_run(self, store: Store) -> None:
        d = await Driver.start(store)
        await d.start_run("r1", outputs=[("a", -1, 1), ("m", 0, "r1")])
        await d.start_run("r2", outputs=[("a", -1, 2)])

        assert await store.get_outputs("r1", ["a", "m"]) == {"a": 1, "m": ["r1"]}
        assert await store.get_outputs("r2", ["a", "m"]) == {"a": 2, "m": None}
        assert await store.get_outputs("missing", ["a"]) == {"a": None}
