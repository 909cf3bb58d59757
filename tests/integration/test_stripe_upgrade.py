"""`POST /v1/billing/upgrade`: Stripe first, then the database, in one request."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from statebus.client import Session
from statebus.core_messages import Snapshot
from statebus.testing.fake_stripe import FakeStripe
from statebus.testing.server import RunningServer
from tests.helpers import version_of, wait_for
from tests.stripe_support import (
    GLOW,
    VIRAL,
    deliver,
    event_status,
    history_sources,
    seed_subscriber,
    subscription_event,
    subscription_row,
)

pytestmark = pytest.mark.asyncio

USER = "user_2zRnraoVNDAegfHnci1xUMWybwz"


@pytest.fixture
async def client(
    app: RunningServer, conn: asyncpg.Connection, fake: FakeStripe
) -> AsyncIterator[httpx.AsyncClient]:
    """The demo user on glow_up, with the subscription in Stripe and in the database."""
    await seed_subscriber(conn, fake, USER)
    headers = {"Authorization": f"Bearer {app.token(USER)}"}
    async with httpx.AsyncClient(base_url=app.http, timeout=30, headers=headers) as http:
        yield http


def stripe_price(fake: FakeStripe) -> str:
    price: str = fake.get_subscription("sub_demo")["items"]["data"][0]["price"]["id"]
    return price


async def test_upgrade_changes_stripe_and_the_database_and_its_webhook_adds_nothing(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe, app: RunningServer
) -> None:
    before = await version_of(conn, USER)
    socket = await Session.open(app.ws, app.token(USER))
    assert (await socket.recv()).version == before

    response = await client.post("/v1/billing/upgrade", json={"plan": "viral_surge"})

    assert response.status_code == 200, response.text
    envelope = response.json()
    assert envelope["user_id"] == USER and envelope["version"] == before + 1
    assert envelope["state"]["plan"]["code"] == "viral_surge"
    pushed = await socket.recv()  # the socket gets the very version the response carries
    assert isinstance(pushed, Snapshot)
    assert (pushed.version, pushed.state) == (envelope["version"], envelope["state"])
    assert stripe_price(fake) == VIRAL
    updates = [(i, h) for i, (m, _, h) in enumerate(fake.requests) if m == "POST"]
    assert len(updates) == 1
    index, headers = updates[0]
    assert headers["idempotency-key"].startswith("statebus-upgrade-")
    assert fake.params_log[index]["proration_behavior"] == "always_invoice"
    assert fake.params_log[index]["items[0][price]"] == VIRAL
    assert (await history_sources(conn, USER))[-1] == "upgrade_api"

    body = subscription_event(fake, "customer.subscription.updated", "sub_demo", event_id="e_up")
    assert (await deliver(client, body)).status_code == 200

    async def applied() -> bool:
        return await event_status(conn, "e_up") == "applied"

    await wait_for(applied, timeout=15, what="the upgrade's webhook applied")
    assert await version_of(conn, USER) == before + 1  # exactly one version for the upgrade
    # And nothing more was pushed: a later write (a marker) must be the socket's next
    # message; a push caused by the webhook would have been queued before it.
    await conn.execute("UPDATE user_subscriptions SET status = 'past_due' WHERE user_id = $1", USER)
    marker = await socket.recv()
    assert isinstance(marker, Snapshot)
    assert marker.version == before + 2
    assert marker.state["subscription"]["status"] == "past_due"
    await socket.close()


async def test_stripe_failing_is_502_and_leaves_the_database_alone(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    row, version = await subscription_row(conn, USER), await version_of(conn, USER)
    fake.fail_next(10, status=500)

    response = await client.post("/v1/billing/upgrade", json={"plan": "viral_surge"})

    assert response.status_code == 502
    assert response.json()["error"] == "stripe_failed"
    assert await subscription_row(conn, USER) == row
    assert await version_of(conn, USER) == version
    assert stripe_price(fake) == GLOW


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b'{"plan": "platinum"}', 404, "unknown_plan"),
        (b'{"plan": "free"}', 404, "unknown_plan"),  # not sold through Stripe
        (b'{"plan": "glow_up"}', 409, "already_on_plan"),
        (b'{"plan": 3}', 400, "bad_request"),
        (b'{"plan": "viral_surge", "extra": 1}', 400, "bad_request"),
        (b"nope", 400, "bad_request"),
    ],
)
async def test_requests_that_change_nothing(
    client: httpx.AsyncClient,
    conn: asyncpg.Connection,
    fake: FakeStripe,
    body: bytes,
    status: int,
    error: str,
) -> None:
    version = await version_of(conn, USER)

    response = await client.post("/v1/billing/upgrade", content=body)

    assert (response.status_code, response.json()["error"]) == (status, error)
    assert await version_of(conn, USER) == version
    assert not [m for m, _, _ in fake.requests if m == "POST"]


async def test_no_subscription_is_409_and_no_token_is_401(
    client: httpx.AsyncClient, conn: asyncpg.Connection, app: RunningServer
) -> None:
    await conn.execute("INSERT INTO users (id, email) VALUES ('user_free', 'f@example.com')")
    free = await client.post(
        "/v1/billing/upgrade",
        json={"plan": "viral_surge"},
        headers={"Authorization": f"Bearer {app.token('user_free')}"},
    )
    anonymous = await client.post(
        "/v1/billing/upgrade", json={"plan": "viral_surge"}, headers={"Authorization": ""}
    )

    assert (free.status_code, free.json()["error"]) == (409, "no_subscription")
    assert anonymous.status_code == 401
