"""One measured number, and the percentile the workloads need."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Figure", "percentile"]


@dataclass(frozen=True, slots=True)
class Figure:
    """A measurement: which workload, on which system and store, what metric, its value.

    ``n`` says how many runs, chains, repeats or commits it summarizes; ``note``
    how it was measured (shown in the table, not in ``--json``).
    """

    workload: str
    system: str
    store: str
    metric: str
    value: float
    n: int = 0
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` line of this figure: the five keys, plus ``n``."""
        return {
            "workload": self.workload,
            "system": self.system,
            "store": self.store,
            "metric": self.metric,
            "value": round(self.value, 3),
            "n": self.n,
        }


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between order statistics; NaN if empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * min(max(q, 0.0), 100.0) / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))
