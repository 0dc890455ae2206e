"""Targets and ratios: how each covey figure compares with its peer or physical bound.

The targets come from the issues. Embedded (SQLite): W1 >= 2x LangGraph's W1
and >= 3,000 runs/s; W2 p50 <= 3x one durable SQLite commit's p50; W3 median
<= 25 ms; W4 >= 2x LangGraph's durable steps/s. Shared stores, against the
peers measured in the same run (:data:`SHARED_TARGETS`): Redis store + Redis
bus W1 >= 1.2x Dramatiq's and W2 p50 <= Celery-RabbitMQ's; Redis store +
RabbitMQ bus W1 >= 2x Celery-RabbitMQ's; PostgreSQL W4 >= 3x DBOS's and W1 >=
2x DBOS's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from covey.bench.figures import Figure

__all__ = ["SHARED_TARGETS", "Comparison", "Target", "compare"]


@dataclass(frozen=True, slots=True)
class Comparison:
    """One covey figure against one reference: the ratio and, when there is a target, the verdict."""

    figure: Figure
    ratio: float | None
    """covey / reference for rates, covey / reference for latencies (lower is better there)."""
    against: str
    """What the ratio compares with (``"langgraph"``, ``"sqlite commit p50"``, a fixed bound)."""
    target: str
    met: bool | None


@dataclass(frozen=True, slots=True)
class Target:
    """covey on ``store`` against ``peer`` (system, store) on one workload metric: ratio at least / at most."""

    store: str
    workload: str
    metric: str
    peer: tuple[str, str]
    bound: float
    higher_is_better: bool

    @property
    def text(self) -> str:
        """``>=1.2x`` or ``<=1x``."""
        return f"{'>=' if self.higher_is_better else '<='}{self.bound:g}x"


#: The shared-store targets of the issue, each against a peer in the same run.
SHARED_TARGETS = (
    Target("redis", "W1", "runs/s", ("dramatiq", "redis"), 1.2, True),
    Target("redis", "W2", "p50 µs", ("celery", "rabbitmq"), 1.0, False),
    Target("redis+amqp", "W1", "runs/s", ("celery", "rabbitmq"), 2.0, True),
    Target("postgres", "W4", "steps/s", ("dbos", "postgres"), 3.0, True),
    Target("postgres", "W1", "runs/s", ("dbos", "postgres"), 2.0, True),
)


def _find(
    figures: Sequence[Figure], workload: str, system: str, metric: str, store: str = "sqlite"
) -> Figure | None:
    for figure in figures:
        if (figure.workload, figure.system, figure.metric, figure.store) == (workload, system, metric, store):
            return figure
    return None


def _ratio(a: float, b: float | None) -> float | None:
    if b is None or b == 0 or math.isnan(b) or math.isnan(a):
        return None
    return a / b


def compare(figures: Sequence[Figure]) -> list[Comparison]:
    """Every comparison the figures allow (a missing peer or baseline leaves its comparison out)."""
    out: list[Comparison] = []

    def peer(workload: str, metric: str) -> float | None:
        found = _find(figures, workload, "langgraph", metric)
        return found.value if found else None

    commit = _find(figures, "commit", "sqlite", "p50 µs")
    out += _shared(figures)
    for figure in figures:
        if figure.system != "covey" or figure.store != "sqlite":
            continue
        key = (figure.workload, figure.metric)
        if key == ("W1", "runs/s"):
            ratio = _ratio(figure.value, peer("W1", "runs/s"))
            out.append(Comparison(figure, ratio, "langgraph", ">=2x", None if ratio is None else ratio >= 2))
            out.append(Comparison(figure, None, "", ">=3000/s", figure.value >= 3_000))
        elif key == ("W4", "steps/s"):
            ratio = _ratio(figure.value, peer("W4", "steps/s"))
            out.append(Comparison(figure, ratio, "langgraph", ">=2x", None if ratio is None else ratio >= 2))
        elif key == ("W2", "p50 µs"):
            ratio = _ratio(figure.value, commit.value if commit else None)
            out.append(Comparison(figure, ratio, "commit p50", "<=3x", None if ratio is None else ratio <= 3))
            floor = _find(figures, "hand-off floor", "sqlite", "p50 µs")
            if floor is not None:
                out.append(
                    Comparison(figure, _ratio(figure.value, floor.value), "hand-off floor p50", "", None)
                )
            lg = _ratio(figure.value, peer("W2", "p50 µs"))
            if lg is not None:
                out.append(Comparison(figure, lg, "langgraph p50", "", None))
        elif key == ("W2", "p99 µs"):
            lg = _ratio(figure.value, peer("W2", "p99 µs"))
            if lg is not None:
                out.append(Comparison(figure, lg, "langgraph p99", "", None))
        elif key == ("W3", "median ms"):
            out.append(Comparison(figure, None, "", "<=25ms", figure.value <= 25))
    return out


def _shared(figures: Sequence[Figure]) -> list[Comparison]:
    out = []
    for target in SHARED_TARGETS:
        mine = _find(figures, target.workload, "covey", target.metric, target.store)
        if mine is None:
            continue
        theirs = _find(figures, target.workload, target.peer[0], target.metric, target.peer[1])
        ratio = _ratio(mine.value, theirs.value if theirs else None)
        met = (
            None
            if ratio is None
            else (ratio >= target.bound if target.higher_is_better else ratio <= target.bound)
        )
        out.append(Comparison(mine, ratio, " ".join(target.peer), target.text, met))
    return out
