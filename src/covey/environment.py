"""covey's settings from environment variables, read one way and refused with one kind of message.

A setting every process must agree on (how much a change feed keeps, how
large a backlog is accepted) is an environment variable rather than an
option per command: worker processes and commands inherit it.
"""

from __future__ import annotations

import os

from covey.errors import ConfigError

__all__ = ["positive_int"]


def positive_int(variable: str, default: int, *, words: frozenset[str] = frozenset()) -> int | str:
    """The whole number of at least 1 that ``variable`` holds, ``default`` if it is unset or blank.

    ``words`` are other values it may hold (``unlimited``): one of them is
    returned as given, lowercased.

    Raises:
        ConfigError: naming the variable and what it holds, when it is anything else.
    """
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    if text.lower() in words:
        return text.lower()
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        also = "".join(f" or {word!r}" for word in sorted(words))
        raise ConfigError(f"{variable} must be a whole number of at least 1{also}; got {text!r}")
    return value
