"""`POST /v1/stripe/webhook` on the real server: verification, limits, storing once."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from statebus.testing.fake_stripe import FakeStripe, make_event, sign_payload
from statebus.testing.server import RunningServer
from tests.stripe_support import (
    OLD_SECRET,
    SECRET,
    deliver,
    stripe_settings,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture
def app(dsn: str, tmp_path: Path, fake: FakeStripe) -> Iterator[RunningServer]:
    settings = stripe_settings(tmp_path, fake, stripe_webhook_secrets=(OLD_SECRET, SECRET))
    running = RunningServer(settings, dsn).start()
    yield running
    running.stop()


@pytest.fixture
async def client(app: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app.http, timeout=10) as http:
        yield http


def ping(event_id: str = "evt_ping") -> bytes:
    return make_event("customer.created", {"id": "cus_x", "object": "customer"}, event_id=event_id)


async def stored(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT id FROM statebus.stripe_events ORDER BY id")
    return [row["id"] for row in rows]


async def test_an_event_is_stored_once_and_a_duplicate_says_so(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    body = ping("evt_dup")
    first = await deliver(client, body)
    second = await deliver(client, body)

    assert first.status_code == second.status_code == 200
    assert first.json() == {"received": True, "duplicate": False}
    assert second.json() == {"received": True, "duplicate": True}
    row = await conn.fetchrow("SELECT type, payload FROM statebus.stripe_events")
    assert row is not None and row["type"] == "customer.created"
    assert json.loads(row["payload"])["id"] == "evt_dup"
    assert await stored(conn) == ["evt_dup"]


async def test_a_bad_or_missing_signature_is_400_and_stores_nothing(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    body = ping()
    wrong = await deliver(client, body, secret="whsec_someone_else")
    tampered = await client.post(
        "/v1/stripe/webhook",
        content=body.replace(b"cus_x", b"cus_y"),
        headers={"Stripe-Signature": sign_payload(body, SECRET)},
    )
    missing = await client.post("/v1/stripe/webhook", content=body)

    for response in (wrong, tampered, missing):
        assert response.status_code == 400
        assert response.json()["error"] == "bad_signature"
    assert await stored(conn) == []


async def test_a_signature_older_than_300_seconds_is_refused(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    now = int(time.time())
    stale = await deliver(client, ping("evt_stale"), timestamp=now - 301)
    recent = await deliver(client, ping("evt_recent"), timestamp=now - 250)

    assert stale.status_code == 400 and stale.json()["error"] == "bad_signature"
    assert recent.status_code == 200
    assert await stored(conn) == ["evt_recent"]


async def test_every_configured_secret_is_accepted_during_rotation(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    old = await deliver(client, ping("evt_old"), secret=OLD_SECRET)
    new = await deliver(client, ping("evt_new"), secret=SECRET)

    assert old.status_code == new.status_code == 200
    assert await stored(conn) == ["evt_new", "evt_old"]


async def test_a_body_over_one_mebibyte_is_413(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    big = b'{"id": "evt_big", "type": "x", "pad": "' + b"a" * (1024 * 1024) + b'"}'
    declared = await deliver(client, big)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    streamed = await client.post(
        "/v1/stripe/webhook",
        content=chunks(),
        headers={"Stripe-Signature": sign_payload(big, SECRET)},
    )

    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"
    assert await stored(conn) == []


@pytest.mark.parametrize(
    "body",
    [b"not json at all", b"[1, 2]", b'{"type": "invoice.paid"}', b'{"id": "evt_1"}'],
    ids=["text", "array", "no-id", "no-type"],
)
async def test_a_signed_body_that_is_no_event_is_400_bad_payload(
    client: httpx.AsyncClient, conn: asyncpg.Connection, body: bytes
) -> None:
    response = await deliver(client, body)

    assert response.status_code == 400
    assert response.json()["error"] == "bad_payload"
    assert await stored(conn) == []


async def test_unconfigured_stripe_answers_503(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        webhook = await deliver(http, ping())
        upgrade = await http.post(
            "/v1/billing/upgrade",
            json={"plan": "viral_surge"},
            headers={"Authorization": f"Bearer {server.token('user_1')}"},
        )

    assert webhook.status_code == upgrade.status_code == 503
    assert webhook.json()["error"] == upgrade.json()["error"] == "stripe_not_configured"
