"""open_bus chooses a bus by URL scheme, and says clearly what is wrong with a bad URL."""

from __future__ import annotations

import builtins
import re
import sys
from typing import Any

import pytest

from covey.bus.amqp import AmqpBus
from covey.bus.memory import MemoryBus
from covey.bus.open import KNOWN_SCHEMES, open_bus, redact_url
from covey.bus.postgres import PostgresBus
from covey.bus.redis import RedisBus
from covey.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        (None, MemoryBus),
        ("memory://", MemoryBus),
        ("redis://127.0.0.1:6379/0", RedisBus),
        ("rediss://user:pw@redis.example:6380/1", RedisBus),
        ("amqp://guest:guest@127.0.0.1:5672/", AmqpBus),
        ("amqps://u:p@rabbit.example/vhost", AmqpBus),
        ("postgresql://127.0.0.1:5432/test", PostgresBus),
        ("postgres://u:p@db.example/covey?sslmode=require", PostgresBus),
        ("REDIS://127.0.0.1", RedisBus),
    ],
)
def test_the_scheme_chooses_the_bus(url: str | None, kind: type) -> None:
    assert isinstance(open_bus(url), kind)


def test_an_unknown_scheme_names_the_known_ones_and_hides_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        open_bus("kafka://user:hunter2@broker:9092")
    message = str(caught.value)
    assert "'kafka'" in message
    for scheme in KNOWN_SCHEMES:
        assert f"{scheme}://" in message
    assert "hunter2" not in message
    assert "user:***@broker:9092" in message


@pytest.mark.parametrize("url", ["", "127.0.0.1:6379", "://nothing", "redis:/127.0.0.1"])
def test_a_url_without_a_scheme_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="scheme://"):
        open_bus(url)


def test_an_empty_prefix_is_refused() -> None:
    with pytest.raises(ConfigError, match="prefix"):
        open_bus("memory://", prefix="")


def test_a_bad_redis_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Redis URL"):
        RedisBus("redis://127.0.0.1:6379/0?socket_timeout=soon")


def test_a_postgres_channel_name_must_fit_an_identifier() -> None:
    with pytest.raises(ConfigError, match="63 bytes"):
        open_bus("postgresql://127.0.0.1/test", prefix="x" * 64)


@pytest.mark.parametrize(
    ("url", "extra"),
    [
        ("redis://127.0.0.1", "covey[redis]"),
        ("amqp://127.0.0.1", "covey[rabbitmq]"),
        ("postgresql://127.0.0.1/test", "covey[postgres]"),
    ],
)
def test_a_missing_driver_names_the_extra_to_install(
    url: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    drivers = ("redis", "aio_pika", "asyncpg")
    real_import = builtins.__import__

    def no_drivers(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.partition(".")[0] in drivers:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    # The bus modules import their driver at the top: forget them so they are imported again, without it.
    for module in ("covey.bus.redis", "covey.bus.amqp", "covey.bus.postgres"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(builtins, "__import__", no_drivers)
    with pytest.raises(ConfigError, match=re.escape(f"pip install '{extra}'")):
        open_bus(url)


def test_memory_buses_opened_on_one_prefix_share_hints_and_others_do_not() -> None:
    one, two, other = (
        open_bus(None, prefix="p1"),
        open_bus("memory://", prefix="p1"),
        open_bus(None, prefix="p2"),
    )
    assert isinstance(one, MemoryBus)
    assert isinstance(two, MemoryBus)
    assert isinstance(other, MemoryBus)
    assert one._hub is two._hub
    assert one._hub is not other._hub
    assert MemoryBus()._hub is not MemoryBus()._hub


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("amqp://guest:s3cr%40t@host/", "amqp://guest:***@host/"),
        ("postgresql://me@host/db", "postgresql://me@host/db"),
        ("postgresql://me:p@ss@host/db", "postgresql://me:***@host/db"),
        ("memory://", "memory://"),
    ],
)
def test_redact_url_masks_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown
