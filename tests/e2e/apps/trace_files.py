"""Trace files the test agents leave for the test watching them (imported beside the app that uses it)."""

from __future__ import annotations

import os
from pathlib import Path


def announce(trace: Path, name: str, text: str) -> None:
    """Write ``trace / name`` whole: a test that sees the file never reads it half written."""
    partial = trace / f".{name}.{os.getpid()}"
    partial.write_text(text)
    partial.replace(trace / name)
