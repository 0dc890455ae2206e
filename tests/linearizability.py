"""A linearizability checker for per-key histories of get / put / compare-and-set calls.

Every write gets the key's next version, so a valid linearization is "by
version, each write before the reads of its version"; :func:`check_key`
verifies that this order exists and respects real time:

* the writes of a key have versions 1, 2, 3... with no gap or repeat;
* a read returns exactly the value written with the version it reports;
* a failed CAS saw a version other than the one it expected;
* if call A returned before call B started, A's version <= B's, and < when B
  is a successful write (B must come after A in any linearization).

A record is a dict: ``op`` (``get``, ``put`` or ``cas``), ``version`` and
``value`` (what was read, or written), ``ok`` and ``expected`` for writes,
and ``invoke`` / ``response``, times from one clock shared by every caller.
"""

from __future__ import annotations

from typing import Any


def check_key(history: list[dict[str, Any]]) -> None:
    """Raise AssertionError if this key's history has no linearization."""
    writes = [r for r in history if r["op"] != "get" and r.get("ok")]
    versions = sorted(r["version"] for r in writes)
    assert versions == list(range(1, len(writes) + 1)), f"write versions {versions}"
    value_of = {r["version"]: r["value"] for r in writes} | {0: None}
    for r in history:
        if r["op"] == "get":
            assert r["value"] == value_of[r["version"]], f"read {r} saw a value never written at that version"
        elif not r["ok"]:
            assert r["expected"] != r["version"], f"CAS {r} failed although the version matched"
    for a in history:
        for b in history:
            if a["response"] < b["invoke"]:
                b_writes = b["op"] != "get" and b.get("ok")
                assert a["version"] < b["version"] if b_writes else a["version"] <= b["version"], (
                    f"real time violated: {a} returned before {b} started"
                )
