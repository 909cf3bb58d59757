"""Shared pieces of the Stripe tests (no tests here): settings, seeding, signed delivery.

Kept as a test_stripe_* module because the Stripe work may only add files of that name;
each test module wraps these in its own small fixtures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import httpx

from statebus.config import Settings
from statebus.testing.fake_stripe import TEST_API_KEY, FakeStripe, make_event, sign_payload
from statebus.testing.server import settings_for_tests
from tests.helpers import seed_plans, wait_for

SECRET = "whsec_test_current"
OLD_SECRET = "whsec_test_previous"
GLOW, VIRAL = "price_glow_up", "price_viral_surge"


def stripe_settings(home: Path, fake: FakeStripe, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "stripe_api_key": TEST_API_KEY,
        "stripe_webhook_secrets": (SECRET,),
        "stripe_api_base": fake.url,
    }
    values.update(changes)
    return settings_for_tests(home, **values)


async def seed(conn: asyncpg.Connection, fake: FakeStripe) -> None:
    """The three demo plans in the database, their prices in the fake."""
    await seed_plans(conn)
    fake.add_price(GLOW, product="prod_glow")
    fake.add_price(VIRAL, product="prod_viral")


async def add_customer_user(
    conn: asyncpg.Connection, user_id: str, customer: str | None = None
) -> None:
    """A user (and, when given, their linked Stripe customer) without a subscription row."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO users (id, email) VALUES ($1, $1 || '@example.com')", user_id
        )
        if customer is not None:
            await conn.execute(
                "INSERT INTO user_billing (user_id, stripe_customer_id) VALUES ($1, $2)",
                user_id,
                customer,
            )


def subscription_event(
    fake: FakeStripe, type: str, sub_id: str, *, created: int | None = None, **kw: Any
) -> bytes:
    """An event carrying the fake's current copy of the subscription."""
    return make_event(type, fake.get_subscription(sub_id), created=created, **kw)


async def deliver(
    client: httpx.AsyncClient,
    body: bytes,
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
) -> httpx.Response:
    headers = {
        "Stripe-Signature": sign_payload(body, secret, timestamp),
        "Content-Type": "application/json",
    }
    return await client.post("/v1/stripe/webhook", content=body, headers=headers)


async def event_status(conn: asyncpg.Connection, event_id: str) -> str | None:
    status: str | None = await conn.fetchval(
        "SELECT status FROM statebus.stripe_events WHERE id = $1", event_id
    )
    return status


async def subscription_row(conn: asyncpg.Connection, user_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT plan, status, stripe_subscription_id, current_period_end, cancel_at_period_end,"
        " cancel_at FROM user_subscriptions WHERE user_id = $1",
        user_id,
    )
    return None if row is None else dict(row)


async def history_sources(conn: asyncpg.Connection, user_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT source FROM statebus.history WHERE user_id = $1 ORDER BY version", user_id
    )
    return [row["source"] for row in rows]


async def seed_subscriber(conn: asyncpg.Connection, fake: FakeStripe, user_id: str) -> None:
    """`user_id` on glow_up as customer cus_demo with subscription sub_demo, in the fake
    Stripe and in the database alike."""
    await seed(conn, fake)
    sub = fake.add_subscription(customer="cus_demo", price=GLOW, sub_id="sub_demo")
    async with conn.transaction():
        await conn.execute("INSERT INTO users (id, email) VALUES ($1, 'demo@example.com')", user_id)
        await conn.execute(
            "INSERT INTO user_billing (user_id, stripe_customer_id) VALUES ($1, 'cus_demo')",
            user_id,
        )
        await conn.execute(
            "INSERT INTO user_subscriptions (user_id, plan, status, stripe_subscription_id,"
            " current_period_end) VALUES ($1, 'glow_up', 'active', 'sub_demo',"
            " to_timestamp($2))",
            user_id,
            sub["items"]["data"][0]["current_period_end"],
        )


async def settled(conn: asyncpg.Connection, event_id: str, status: str = "applied") -> None:
    """Waits until the stored event reaches `status` (the worker runs on its own)."""

    async def check() -> bool:
        return await event_status(conn, event_id) == status

    await wait_for(check, timeout=15, what=f"{event_id} {status}")
