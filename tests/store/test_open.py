"""Choosing a store and its bus by URL: schemes, options, pairing, and clear errors."""

from __future__ import annotations

import pytest

from covey.errors import ConfigError
from covey.store.open import backend_of, masked, open_store, paired_bus_url, split_option, store_namespace


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("sqlite:///covey.db", "sqlite"),
        ("covey.db", "sqlite"),
        ("postgresql://u@db/app?schema=s", "postgres"),
        ("postgres://db/app", "postgres"),
        ("redis://cache:6379/0", "redis"),
        ("rediss://cache:6380/0?prefix=p", "redis"),
    ],
)
def test_backend_by_scheme(url: str, backend: str) -> None:
    assert backend_of(url) == backend


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown store URL scheme 'mysql'.*postgresql.*redis.*sqlite"):
        open_store("mysql://db/app")


def test_options_come_out_of_the_url_and_the_rest_stays() -> None:
    assert split_option("postgresql://db/app?schema=s&sslmode=require", "schema", "covey") == (
        "postgresql://db/app?sslmode=require",
        "s",
    )
    assert split_option("redis://cache/0", "prefix", "covey") == ("redis://cache/0", "covey")
    with pytest.raises(ConfigError, match="'prefix' option"):
        split_option("redis://cache/0?prefix=", "prefix", "covey")


def test_the_store_server_carries_the_hints_without_the_stores_own_options() -> None:
    assert paired_bus_url("sqlite:///x.db") == "memory://"
    assert paired_bus_url("postgresql://db/app?schema=s") == "postgresql://db/app"
    assert paired_bus_url("redis://cache/0?prefix=p&check_eviction=false") == "redis://cache/0"
    assert store_namespace("redis://cache/0?prefix=p") == "p"
    assert store_namespace("postgresql://db/app?schema=s") == "s"


def test_check_eviction_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match=r"check_eviction.*true or false"):
        open_store("redis://cache/0?check_eviction=maybe")


def test_passwords_are_masked_in_messages() -> None:
    assert masked("redis://:secret@cache/0") == "redis://:***@cache/0"
    assert masked("amqp://guest:guest@mq:5672/") == "amqp://guest:***@mq:5672/"
    with pytest.raises(ConfigError) as caught:
        open_store("redis://:secret@cache/0?check_eviction=maybe")
    assert "secret" not in str(caught.value)
