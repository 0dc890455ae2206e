"""PostgreSQL specifics: topics packed into as few notifications as the payload cap allows, and stray notifications."""

from __future__ import annotations

import logging
import uuid

import asyncpg  # type: ignore[import-untyped]
import pytest

from covey.bus.postgres import PAYLOAD_CAP_BYTES, PostgresBus, parse_payload, payloads
from covey.testing.bus_conformance import Seen, collect
from covey.testing.servers import postgres_url


def test_one_publish_is_one_payload_when_it_fits() -> None:
    assert payloads(["inbox", "ready:a", "inbox"]) == (['["inbox","ready:a"]'], [])


def test_many_topics_are_split_under_the_cap() -> None:
    topics = [f"ready:skill-{i:04d}-" + "x" * 40 for i in range(500)]
    packed, too_long = payloads(topics)
    assert too_long == []
    assert len(packed) > 1
    assert all(len(payload.encode()) <= PAYLOAD_CAP_BYTES for payload in packed)
    unpacked = [topic for payload in packed for topic in parse_payload(payload) or []]
    assert unpacked == topics


def test_a_topic_that_cannot_fit_is_left_out() -> None:
    huge = "state:" + "é" * 5000  # 10,000 bytes in UTF-8
    assert payloads([huge, "inbox"]) == (['["inbox"]'], [huge])


@pytest.mark.parametrize("payload", ["", "not json", '{"a": 1}', '["ok", 2]', "null"])
def test_a_payload_that_is_not_a_list_of_topics_is_refused(payload: str) -> None:
    assert parse_payload(payload) is None


async def test_a_large_publish_arrives_whole() -> None:
    topics = {
        f"state:namespace-{i:04d}-" + "y" * 60 for i in range(300)
    }  # about 25 kB: several notifications
    async with PostgresBus(postgres_url(), channel=f"covey_test_{uuid.uuid4().hex[:12]}") as bus:
        seen = Seen(await bus.subscribe(topics))
        await bus.publish(sorted(topics))
        assert await collect(seen, topics) == topics


async def test_a_stray_notification_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    channel = f"covey_test_{uuid.uuid4().hex[:12]}"
    async with PostgresBus(postgres_url(), channel=channel) as bus:
        seen = Seen(await bus.subscribe({"inbox"}))
        other = await asyncpg.connect(postgres_url())
        try:
            await other.execute("SELECT pg_notify($1, $2)", channel, "inbox")  # not a JSON list
        finally:
            await other.close()
        await bus.publish(["inbox"])
        await collect(seen, {"inbox"})
    assert any(
        record.levelno == logging.WARNING and "not a JSON list" in record.getMessage()
        for record in caplog.records
    )
