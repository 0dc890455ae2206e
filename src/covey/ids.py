"""Ids: run ids chosen by clients or generated, checked at the edge.

Generation lives here, outside the engine, because it reads a clock and a
random source. Generated run ids sort by creation time.
"""

from __future__ import annotations

import os
import re
import time

from covey.errors import InputError

__all__ = ["RUN_ID", "check_run_id", "new_id"]

#: What a run id may look like: it becomes part of task ids (``run/step/index``).
RUN_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


def new_id() -> str:
    """A new time-ordered id: milliseconds then 48 random bits, in hex."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(6).hex()}"


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if valid; InputError naming the rule otherwise."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise InputError(
            f"{run_id!r} is not a valid run id: use 1-128 of A-Z a-z 0-9 _ . : -", field="run_id"
        )
    return run_id
