"""covey's processes collect garbage rarely while their loop runs, and give the settings back after."""

from __future__ import annotations

import gc

from covey.runtime.eventloop import run_async
from covey.runtime.gc_tuning import THRESHOLDS


def test_run_async_collects_rarely_inside_and_restores_the_callers_settings() -> None:
    previous = gc.get_threshold()
    gc.set_threshold(1_000, 11, 12)
    try:

        async def inside() -> tuple[tuple[int, int, int], int]:
            return gc.get_threshold(), gc.get_freeze_count()

        thresholds, frozen = run_async(inside())

        assert thresholds == THRESHOLDS
        assert frozen > 0  # what was alive on entry is not walked again
        assert gc.get_threshold() == (1_000, 11, 12)
        assert gc.get_freeze_count() == 0
    finally:
        gc.set_threshold(*previous)
