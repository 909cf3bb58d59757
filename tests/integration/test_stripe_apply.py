"""Stored Stripe events applied by the inbox worker of a real server against the fake API."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from statebus.testing.fake_stripe import FakeStripe, make_event
from tests.helpers import version_of, wait_for
from tests.stripe_support import (
    GLOW,
    VIRAL,
    add_customer_user,
    deliver,
    history_sources,
    settled,
    subscription_event,
    subscription_row,
)

pytestmark = pytest.mark.asyncio

USER = "user_apply_1"


def expected_row(fake: FakeStripe, sub_id: str) -> dict[str, object]:
    """The row Stripe's subscription should give: plan and period from the plan item
    (add-ons are the other items), the scheduled end from cancel_at."""
    sub = fake.get_subscription(sub_id)
    plans = {GLOW: "glow_up", VIRAL: "viral_surge"}
    item = next(i for i in sub["items"]["data"] if i["price"]["id"] in plans)
    period_end = datetime.fromtimestamp(item["current_period_end"], UTC)
    cancel_at = sub["cancel_at"] and datetime.fromtimestamp(sub["cancel_at"], UTC)
    return {
        "plan": plans[item["price"]["id"]],
        "status": sub["status"],
        "stripe_subscription_id": sub_id,
        "current_period_end": period_end,
        "cancel_at_period_end": sub["cancel_at_period_end"] or cancel_at == period_end,
        "cancel_at": cancel_at or None,
    }


async def test_an_event_applies_stripes_current_subscription(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await add_customer_user(conn, USER, "cus_1")
    fake.add_subscription(customer="cus_1", price=GLOW, sub_id="sub_1")
    body = subscription_event(fake, "customer.subscription.created", "sub_1", event_id="evt_1")

    assert (await deliver(client, body)).status_code == 200
    await settled(conn, "evt_1")

    assert await subscription_row(conn, USER) == expected_row(fake, "sub_1")
    assert (await history_sources(conn, USER))[-1] == "stripe_webhook"


async def test_created_delivered_after_updated_does_not_go_back(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await add_customer_user(conn, USER, "cus_1")
    fake.add_subscription(customer="cus_1", price=GLOW, sub_id="sub_1")
    created = subscription_event(fake, "customer.subscription.created", "sub_1", event_id="e_c")
    fake.set_subscription("sub_1", price=VIRAL, cancel_at_period_end=True)
    updated = subscription_event(fake, "customer.subscription.updated", "sub_1", event_id="e_u")

    await deliver(client, updated)
    await settled(conn, "e_u")
    version = await version_of(conn, USER)
    await deliver(client, created)  # late, carrying the older price
    await settled(conn, "e_c")

    assert await subscription_row(conn, USER) == expected_row(fake, "sub_1")
    assert (await subscription_row(conn, USER) or {})["plan"] == "viral_surge"
    assert await version_of(conn, USER) == version  # the late event wrote nothing


async def test_two_events_in_the_same_second_end_at_the_latest_state(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await add_customer_user(conn, USER, "cus_1")
    fake.add_subscription(customer="cus_1", price=GLOW, sub_id="sub_1")
    second = int(time.time())
    first = subscription_event(
        fake, "customer.subscription.updated", "sub_1", event_id="e_1", created=second
    )
    fake.set_subscription("sub_1", status="past_due", price=VIRAL)
    later = make_event(
        "invoice.payment_failed",
        {"id": "in_1", "object": "invoice", "customer": "cus_1", "subscription": "sub_1"},
        event_id="e_2",
        created=second,
    )

    await asyncio.gather(deliver(client, later), deliver(client, first))
    await settled(conn, "e_1")
    await settled(conn, "e_2")

    assert await subscription_row(conn, USER) == expected_row(fake, "sub_1")
    assert (await subscription_row(conn, USER) or {})["status"] == "past_due"


async def test_a_thousand_shuffled_duplicated_concurrent_events_end_at_stripes_state(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    rng = random.Random(7)
    subs = [f"sub_{n:02d}" for n in range(50)]
    for n, sub_id in enumerate(subs):
        await add_customer_user(conn, f"user_{n:02d}", f"cus_{n:02d}")
        fake.add_subscription(  # add-ons, listed before the plan item for half of them
            customer=f"cus_{n:02d}",
            price=GLOW,
            sub_id=sub_id,
            addons=["price_extra_seats"] if n % 3 else ["price_extra_seats", "price_storage"],
            addons_first=n % 2 == 0,
        )
    events: list[bytes] = []
    for step in range(20):  # 20 changes of each of the 50 subscriptions: 1,000 events
        for sub_id in subs:
            period_end = int(time.time()) + 86400 * (step + 1)
            ending = rng.choice(["no", "no", "classic", "flexible"])
            fake.set_subscription(
                sub_id,
                price=rng.choice([GLOW, VIRAL]),
                status=rng.choice(["active", "past_due", "trialing", "unpaid"]),
                current_period_end=period_end,
                cancel_at_period_end=ending == "classic",
                # flexible billing mode ends at period end with cancel_at alone
                **({"cancel_at": period_end} if ending == "flexible" else {}),
            )
            kind = rng.choice(["updated", "paused", "resumed"])
            events.append(
                subscription_event(fake, f"customer.subscription.{kind}", sub_id, created=step)
            )
    deliveries = events + rng.sample(events, 200)  # Stripe delivers some twice
    rng.shuffle(deliveries)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in deliveries:
        queue.put_nowait(body)

    async def sender() -> list[int]:
        statuses = []
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30) as http:
            while not queue.empty():
                statuses.append((await deliver(http, queue.get_nowait())).status_code)
        return statuses

    results = await asyncio.gather(*(sender() for _ in range(8)))

    assert sorted({s for statuses in results for s in statuses}) == [200]
    assert await conn.fetchval("SELECT count(*) FROM statebus.stripe_events") == 1000

    async def all_applied() -> bool:
        left: int = await conn.fetchval(
            "SELECT count(*) FROM statebus.stripe_events WHERE status <> 'applied'"
        )
        return left == 0

    await wait_for(all_applied, timeout=120, what="1,000 events applied")
    for n, sub_id in enumerate(subs):
        assert await subscription_row(conn, f"user_{n:02d}") == expected_row(fake, sub_id)
        # User created (1), then Stripe's final state (2); every later event wrote nothing.
        assert await version_of(conn, f"user_{n:02d}") == 2


async def test_stripe_unreachable_retries_the_event_then_it_applies(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await add_customer_user(conn, USER, "cus_1")
    fake.add_subscription(customer="cus_1", price=VIRAL, sub_id="sub_1")
    fake.set_unreachable(True)

    body = subscription_event(fake, "customer.subscription.updated", "sub_1", event_id="e_1")
    assert (await deliver(client, body)).json() == {"received": True, "duplicate": False}
    await settled(conn, "e_1", "retrying")
    row = await conn.fetchrow(
        "SELECT attempts, last_error FROM statebus.stripe_events WHERE id = 'e_1'"
    )
    assert row is not None and row["attempts"] >= 1
    assert "APIConnectionError" in row["last_error"] and "sk_" not in row["last_error"]
    assert await subscription_row(conn, USER) is None

    fake.set_unreachable(False)
    await settled(conn, "e_1")
    assert await subscription_row(conn, USER) == expected_row(fake, "sub_1")


async def test_an_unknown_customer_waits_as_unmatched_until_checkout_links_it(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await add_customer_user(conn, USER)  # signed up; Stripe customer not linked yet
    fake.add_subscription(customer="cus_new", price=GLOW, sub_id="sub_1")
    early = subscription_event(fake, "customer.subscription.created", "sub_1", event_id="e_1")

    assert (await deliver(client, early)).status_code == 200
    await settled(conn, "e_1", "unmatched")
    assert await subscription_row(conn, USER) is None
    before = await version_of(conn, USER)

    session = {
        "id": "cs_1",
        "object": "checkout.session",
        "mode": "subscription",
        "client_reference_id": USER,
        "customer": "cus_new",
        "subscription": "sub_1",
    }
    await deliver(client, make_event("checkout.session.completed", session, event_id="e_cs"))
    await settled(conn, "e_cs")
    await settled(conn, "e_1")

    assert await subscription_row(conn, USER) == expected_row(fake, "sub_1")
    billing = await conn.fetchval(
        "SELECT stripe_customer_id FROM user_billing WHERE user_id = $1", USER
    )
    assert billing == "cus_new"
    assert await version_of(conn, USER) == before + 1  # link and subscription: one version


async def test_unknown_price_without_a_row_is_ignored_with_why_and_other_events_too(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await add_customer_user(conn, USER, "cus_1")
    fake.add_subscription(customer="cus_1", price="price_mystery", sub_id="sub_1")
    await deliver(
        client, subscription_event(fake, "customer.subscription.created", "sub_1", event_id="e_1")
    )
    await deliver(client, make_event("customer.created", {"id": "cus_2"}, event_id="e_2"))

    await settled(conn, "e_1", "ignored")  # no plan to write, and no row to update
    await settled(conn, "e_2", "ignored")
    error = await conn.fetchval("SELECT last_error FROM statebus.stripe_events WHERE id = 'e_1'")
    assert "price_mystery" in error and "stripe_price_id" in error
    assert await subscription_row(conn, USER) is None


async def test_errors_kept_in_last_error_never_quote_a_key() -> None:
    import stripe

    from statebus.stripe.worker import describe

    error = stripe.AuthenticationError("Invalid API Key provided: sk_live_abc123", http_status=401)
    described = describe(error)

    assert described.startswith("stripe AuthenticationError 401")
    assert "abc123" not in described and "sk_[redacted]" in described
