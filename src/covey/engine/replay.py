"""Replay: a run's state as the fold of its recorded input events.

``fold(history)`` re-decides every input event in order and checks that the
derived events it produces are the ones recorded, so a history written by one
covey and replayed by another proves the engine deterministic (invariant 2).
"""

from __future__ import annotations

from collections.abc import Iterable

from covey.engine.decide import decide
from covey.engine.events import Event
from covey.engine.state import RunState

__all__ = ["ReplayMismatch", "fold"]


class ReplayMismatch(Exception):
    """Re-deciding a history gave other derived events than those recorded."""


def fold(history: Iterable[Event], *, check: bool = True) -> RunState | None:
    """The state after every event of ``history``; None for an empty history.

    Raises:
        ReplayMismatch: when ``check`` and a recorded derived event differs from
            the one re-deciding produces.
    """
    state: RunState | None = None
    expected: list[Event] = []
    for event in history:
        if not event.is_input:
            if check:
                if not expected or expected[0] != event:
                    got = expected[0] if expected else None
                    raise ReplayMismatch(f"recorded {event!r}, replay produced {got!r}")
                expected.pop(0)
            continue
        if check and expected:
            raise ReplayMismatch(f"replay produced {expected[0]!r}, which the history lacks")
        decision = decide(state, event)
        state = decision.state
        state.seq += 1 + len(decision.events)
        expected = list(decision.events)
    if check and expected:
        raise ReplayMismatch(f"replay produced {expected[0]!r}, which the history lacks")
    return state
