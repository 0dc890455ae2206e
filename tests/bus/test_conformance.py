"""Every bus against the conformance suite (tests/bus/conftest.py says which, and how)."""

from __future__ import annotations

from covey.testing.bus_conformance import TestBus

__all__ = ["TestBus"]
