"""The SQLite store's synchronous core: every layer of its SQL on one connection.

See :mod:`covey.store.sqlite.connection` for why there is one writer and how
the layers stack.
"""

from __future__ import annotations

from typing import Any

from covey.store.sqlite.retention import Retention

__all__ = ["SQLiteCore"]


class SQLiteCore(Retention):
    """All SQL of the embedded store; not thread-safe, callers keep it on one thread."""

    def settled(self, name: str, *args: Any) -> Any:
        """Call method ``name`` once the journaled writes are applied: it then sees every commit."""
        self.settle()
        return getattr(self, name)(*args)
