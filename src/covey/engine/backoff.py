"""Retry delays: exponential backoff with deterministic jitter.

The jitter is drawn from a hash of the task id and try number instead of a
random generator, so ``decide`` stays pure and a replay schedules the same
retry at the same time.
"""

from __future__ import annotations

import math
import zlib

from covey.spec.model import RetryPolicy

__all__ = ["retry_delay_ms"]


def retry_delay_ms(policy: RetryPolicy, task_id: str, failed_try: int) -> int:
    """Delay before the try after ``failed_try`` (1-based), in milliseconds."""
    try:
        growth = policy.multiplier ** (failed_try - 1)
    except OverflowError:  # a steep multiplier over many tries: the cap applies long before
        growth = math.inf
    capped = min(policy.backoff_s * growth, policy.max_backoff_s) if policy.backoff_s else 0.0
    unit = zlib.crc32(f"{task_id}:{failed_try}".encode()) / 0xFFFFFFFF
    factor = 1.0 - policy.jitter + 2.0 * policy.jitter * unit
    return max(0, int(capped * factor * 1000))
