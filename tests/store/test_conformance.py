"""The store conformance suite (covey.testing.conformance), run against every store in conftest.py."""

from __future__ import annotations

from covey.testing.conformance.claim import TestClaim
from covey.testing.conformance.commit import TestCommit
from covey.testing.conformance.feed import TestChangeFeed
from covey.testing.conformance.inbox import TestInbox
from covey.testing.conformance.leases import TestLeases
from covey.testing.conformance.locks import TestLocks
from covey.testing.conformance.outputs import TestOutputs
from covey.testing.conformance.reads import TestReads
from covey.testing.conformance.registry import TestRegistry
from covey.testing.conformance.retention import TestRetention
from covey.testing.conformance.shards import TestShards
from covey.testing.conformance.state import TestState
from covey.testing.conformance.timers import TestTimers

__all__ = [
    "TestChangeFeed",
    "TestClaim",
    "TestCommit",
    "TestInbox",
    "TestLeases",
    "TestLocks",
    "TestOutputs",
    "TestReads",
    "TestRegistry",
    "TestRetention",
    "TestShards",
    "TestState",
    "TestTimers",
]
