"""Choosing a store, and the bus that goes with it, by URL.

========================================================  =========================================
``sqlite:///covey.db``, ``sqlite:////abs/path.db``        the embedded store (one file, one runner)
``postgresql://user@host:5432/db?schema=covey``           PostgreSQL; every table in ``schema``
``redis://host:6379/0?prefix=covey`` (``rediss://``)      Redis; every key under ``prefix``
                                                          (``&check_eviction=false`` where CONFIG GET
                                                          is forbidden: check the policy yourself)
========================================================  =========================================

When no bus is given, the store's own server carries the hints: LISTEN/NOTIFY
with PostgreSQL, pub/sub with Redis, and the runner's process with SQLite.
Credentials stay in the URL the user gave and are never printed: errors show
the URL with its password masked.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from covey.bus.base import Bus
from covey.errors import ConfigError
from covey.store.base import Store
from covey.store.sqlite import SQLiteStore

__all__ = [
    "backend_of",
    "masked",
    "open_bus_for",
    "open_store",
    "paired_bus_url",
    "split_option",
    "sqlite_path",
    "store_namespace",
]

_SCHEMES = {
    "sqlite": "sqlite",
    "postgresql": "postgres",
    "postgres": "postgres",
    "redis": "redis",
    "rediss": "redis",
}


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///...`` URL (a bare path is accepted too)."""
    if "://" not in url:
        return url
    scheme, _, rest = url.partition("://")
    if scheme != "sqlite":
        raise ConfigError(f"not a SQLite URL: {masked(url)!r}")
    if not rest.startswith("/"):
        raise ConfigError(
            f"SQLite URLs look like sqlite:///relative.db or sqlite:////abs/path.db, got {url!r}"
        )
    return rest[1:]


def masked(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def split_option(url: str, name: str, default: str) -> tuple[str, str]:
    """Take query option ``name`` out of ``url``: (the URL without it, its value or ``default``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    value = default
    kept = []
    for key, item in query:
        if key == name:
            value = item
        else:
            kept.append((key, item))
    if not value:
        raise ConfigError(f"the {name!r} option of {masked(url)!r} is empty")
    return urlunsplit(parts._replace(query=urlencode(kept))), value


def backend_of(url: str) -> str:
    """``sqlite``, ``postgres`` or ``redis``; ConfigError naming the known schemes otherwise."""
    scheme = url.partition("://")[0] if "://" in url else "sqlite"
    backend = _SCHEMES.get(scheme)
    if backend is None:
        raise ConfigError(f"unknown store URL scheme {scheme!r}; expected one of {sorted(_SCHEMES)}")
    return backend


def open_store(
    url: str, *, durable: bool = True, readonly: bool = False
) -> AbstractAsyncContextManager[Store]:
    """A store for ``url``, to be entered with ``async with``.

    Raises:
        ConfigError: for an unknown scheme (naming the ones covey knows), or a
            backend whose extra is not installed (naming the extra).
    """
    backend = backend_of(url)
    if backend == "sqlite":
        return SQLiteStore(sqlite_path(url), durable=durable, readonly=readonly)
    if backend == "postgres":
        module: Any = _import("covey.store.postgres", "postgres")
        dsn, schema = split_option(url, "schema", "covey")
        return module.PostgresStore(dsn, schema=schema)  # type: ignore[no-any-return]
    module = _import("covey.store.redis", "redis")
    address, prefix = split_option(url, "prefix", "covey")
    address, check = split_option(address, "check_eviction", "true")
    if check not in ("true", "false"):
        raise ConfigError(f"check_eviction in {masked(url)!r} must be true or false, got {check!r}")
    return module.RedisStore(address, prefix=prefix, check_eviction=check == "true")  # type: ignore[no-any-return]


def paired_bus_url(store_url: str) -> str:
    """The bus to use with a store when none is given: the store's own server, or in-process for SQLite."""
    backend = backend_of(store_url)
    if backend == "sqlite":
        return "memory://"
    if backend == "postgres":
        return split_option(store_url, "schema", "covey")[0]
    return split_option(split_option(store_url, "prefix", "covey")[0], "check_eviction", "true")[0]


def store_namespace(store_url: str) -> str:
    """What isolates this store on a shared server (its schema or key prefix): its bus topics use it too."""
    backend = backend_of(store_url)
    if backend == "postgres":
        return split_option(store_url, "schema", "covey")[1]
    if backend == "redis":
        return split_option(store_url, "prefix", "covey")[1]
    return "covey"


def open_bus_for(store_url: str, bus_url: str | None = None) -> Bus:
    """The bus at ``bus_url`` (or the store's own), its topics kept apart per store namespace."""
    from covey.bus.open import open_bus

    return open_bus(bus_url or paired_bus_url(store_url), prefix=store_namespace(store_url))


def _import(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"the {extra} store needs its driver: pip install 'covey[{extra}]' ({exc})"
        ) from None
