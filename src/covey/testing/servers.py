"""Where the backend tests find their servers, and what happens when one is missing.

Backend tests talk to real servers (PostgreSQL, Redis, RabbitMQ). On a
laptop without them, those tests skip with a reason that names the server
and the variable to point at one. Under ``CI=true`` a missing server fails
the test instead, so a stopped service never turns into silently skipped
coverage.

Each URL can be set in the environment; the defaults are the servers'
standard ports on loopback:

=========================  ============================================
``COVEY_TEST_POSTGRES``    ``postgresql://127.0.0.1:5432/test``
``COVEY_TEST_REDIS``       ``redis://127.0.0.1:6379/0``
``COVEY_TEST_AMQP``        ``amqp://guest:guest@127.0.0.1:5672/``
=========================  ============================================
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

__all__ = ["amqp_url", "in_ci", "postgres_url", "redis_url", "require_server"]

_DEFAULTS = {
    "COVEY_TEST_POSTGRES": "postgresql://127.0.0.1:5432/test",
    "COVEY_TEST_REDIS": "redis://127.0.0.1:6379/0",
    "COVEY_TEST_AMQP": "amqp://guest:guest@127.0.0.1:5672/",
}
_PORTS = {"postgresql": 5432, "redis": 6379, "amqp": 5672}


def in_ci() -> bool:
    """True when running under CI (``CI=true``): missing servers fail instead of skipping."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_server(variable: str, name: str) -> str:
    """The URL in ``variable`` (or its default) if its server accepts connections; else skip or fail."""
    url = os.environ.get(variable, _DEFAULTS[variable])
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or _PORTS.get(parts.scheme, 0)
    try:
        with socket.create_connection((host, port), timeout=1.0):
            pass
    except OSError as exc:
        reason = f"{name} is not reachable at {host}:{port} ({exc}); set {variable} to a {name} server URL"
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    return url


def postgres_url() -> str:
    """A reachable PostgreSQL server's URL (tests isolate themselves with a schema each)."""
    return require_server("COVEY_TEST_POSTGRES", "PostgreSQL")


def redis_url() -> str:
    """A reachable Redis server's URL (tests isolate themselves with a key prefix each)."""
    return require_server("COVEY_TEST_REDIS", "Redis")


def amqp_url() -> str:
    """A reachable RabbitMQ server's URL (tests isolate themselves with names of their own)."""
    return require_server("COVEY_TEST_AMQP", "RabbitMQ")
