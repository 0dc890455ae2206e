"""``covey bench``: placeholder until the benchmark module lands."""

from __future__ import annotations

COMMANDS: list[object] = []
