"""``covey bench``: workloads, physical baselines and peers, measured side by side.

Not part of the test suite. :mod:`covey.bench.agents` holds the agents the
worker processes import; :mod:`covey.bench.workloads` drives covey's embedded
runtime; :mod:`covey.bench.baselines` measures the bounds of this machine (one
durable SQLite commit); :mod:`covey.bench.peers` runs LangGraph on the same
workloads when the ``bench`` extra is installed.
"""

from __future__ import annotations

from covey.bench.figures import Figure

__all__ = ["Figure"]
