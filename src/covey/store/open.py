"""Choosing a store by URL: ``sqlite:///path/to/covey.db`` (more schemes as backends land)."""

from __future__ import annotations

from covey.errors import ConfigError
from covey.store.sqlite import SQLiteStore

__all__ = ["open_store", "sqlite_path"]

_KNOWN = ("sqlite",)


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///...`` URL (a bare path is accepted too)."""
    if "://" not in url:
        return url
    scheme, _, rest = url.partition("://")
    if scheme != "sqlite":
        raise ConfigError(f"not a SQLite URL: {url!r}")
    if not rest.startswith("/"):
        raise ConfigError(
            f"SQLite URLs look like sqlite:///relative.db or sqlite:////abs/path.db, got {url!r}"
        )
    return rest[1:]


def open_store(url: str, *, durable: bool = True, readonly: bool = False) -> SQLiteStore:
    """A store for ``url``, to be entered with ``async with``.

    Raises:
        ConfigError: for an unknown scheme, naming the ones covey knows.
    """
    scheme = url.partition("://")[0] if "://" in url else "sqlite"
    if scheme not in _KNOWN:
        raise ConfigError(f"unknown store URL scheme {scheme!r}; expected one of {list(_KNOWN)}")
    return SQLiteStore(sqlite_path(url), durable=durable, readonly=readonly)
