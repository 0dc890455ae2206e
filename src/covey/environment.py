"""covey's settings from environment variables, read one way and refused with one kind of message.

A setting every process must agree on (how much a change feed keeps, how
large a backlog is accepted) is an environment variable rather than an
option per command: worker processes and commands inherit it.
"""

from __future__ import annotations

import os

from covey.errors import ConfigError

__all__ = ["positive_int", "positive_int_or_word"]


def positive_int(variable: str, default: int) -> int:
    """The whole number of at least 1 that ``variable`` holds, ``default`` if it is unset or blank.

    Raises:
        ConfigError: naming the variable and what it holds, when it is anything else.
    """
    value = positive_int_or_word(variable, default, "")
    assert value is not None  # no word is accepted
    return value


def positive_int_or_word(variable: str, default: int, word: str) -> int | None:
    """As :func:`positive_int`, or None when ``variable`` holds ``word`` (``unlimited``, ``off``) in any case.

    Raises:
        ConfigError: naming the variable and what it holds, when it is anything else.
    """
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    if word and text.lower() == word:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        also = f" or {word!r}" if word else ""
        raise ConfigError(f"{variable} must be a whole number of at least 1{also}; got {text!r}")
    return value
