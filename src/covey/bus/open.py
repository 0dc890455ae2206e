"""Choosing a bus by URL.

=========================================  ==============================================
``memory://`` (or no URL)                  in-process (:class:`~covey.bus.memory.MemoryBus`)
``redis://host:6379/0``, ``rediss://``     Redis pub/sub (:class:`~covey.bus.redis.RedisBus`)
``amqp://user:pw@host:5672/vhost``,        RabbitMQ (:class:`~covey.bus.amqp.AmqpBus`)
``amqps://``
``postgresql://user@host/db``,             PostgreSQL LISTEN/NOTIFY
``postgres://``                            (:class:`~covey.bus.postgres.PostgresBus`)
=========================================  ==============================================

``prefix`` keeps the hints of one covey installation apart from another's on
a shared server: Redis channel names and RabbitMQ exchange and queue names
start with it, and it is PostgreSQL's NOTIFY channel. In-process buses opened
here with the same prefix share their hints (the process is their server).

Backends are imported only when asked for, so a missing driver is a clear
:class:`~covey.errors.ConfigError` naming the extra to install, not an
``ImportError`` at startup. Messages show URLs with the password masked.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from urllib.parse import urlsplit, urlunsplit

from covey.bus.base import Bus
from covey.errors import ConfigError

__all__ = ["KNOWN_SCHEMES", "open_bus", "redact_url"]

#: URL scheme -> (module, class, the extra that brings its driver).
_BUSES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("covey.bus.memory", "MemoryBus", None),
    "redis": ("covey.bus.redis", "RedisBus", "redis"),
    "rediss": ("covey.bus.redis", "RedisBus", "redis"),
    "amqp": ("covey.bus.amqp", "AmqpBus", "rabbitmq"),
    "amqps": ("covey.bus.amqp", "AmqpBus", "rabbitmq"),
    "postgresql": ("covey.bus.postgres", "PostgresBus", "postgres"),
    "postgres": ("covey.bus.postgres", "PostgresBus", "postgres"),
}

#: The URL schemes :func:`open_bus` knows.
KNOWN_SCHEMES = tuple(sorted(_BUSES))


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: safe for logs and messages."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{name}:***@{host}"))


def open_bus(url: str | None, *, prefix: str = "covey") -> Bus:
    """A bus for ``url``, to be entered with ``async with``.

    Args:
        url: the bus URL; None means in-process.
        prefix: keeps these hints apart from other installations on the same
            server (see the module docstring).

    Raises:
        ConfigError: an unknown scheme (naming the known ones), a missing
            driver (naming the extra to install), or a bad prefix.
    """
    if not prefix:
        raise ConfigError("the bus prefix must not be empty")
    scheme = "memory" if url is None else _scheme(url)
    try:
        module_name, class_name, extra = _BUSES[scheme]
    except KeyError:
        shown = redact_url(url or "")
        raise ConfigError(
            f"unknown bus URL scheme {scheme!r} in {shown!r}; expected one of "
            + ", ".join(f"{known}://" for known in KNOWN_SCHEMES)
        ) from None
    module = _import(module_name, extra)
    if scheme == "memory":
        return module.MemoryBus(hub=module.MemoryHub.named(prefix))  # type: ignore[no-any-return]
    assert url is not None
    if scheme in ("postgresql", "postgres"):
        return module.PostgresBus(url, channel=prefix)  # type: ignore[no-any-return]
    return getattr(module, class_name)(url, prefix=prefix)  # type: ignore[no-any-return]


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ConfigError(
            f"a bus URL looks like scheme://..., got {redact_url(url)!r}; known schemes: "
            + ", ".join(f"{known}://" for known in KNOWN_SCHEMES)
        )
    return scheme.lower()


def _import(module: str, extra: str | None) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if extra is None:
            raise
        raise ConfigError(
            f"this bus needs a driver that is not installed ({exc.name or exc}); "
            f"install it with: pip install 'covey[{extra}]'"
        ) from None
