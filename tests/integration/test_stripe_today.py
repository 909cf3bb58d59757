"""Stripe as it is today (add-ons, periods on items, flexible billing mode, thin and
Connect events, livemode) through the real server, the inbox worker and the fake API.
Fixtures: tests/fixtures/stripe (see its README)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from statebus.testing.fake_stripe import FakeStripe, make_event
from statebus.testing.server import RunningServer
from tests.helpers import version_of
from tests.stripe_fixtures import fixture
from tests.stripe_support import (
    GLOW,
    VIRAL,
    add_customer_user,
    deliver,
    seed,
    settled,
    subscription_event,
    subscription_row,
)

pytestmark = pytest.mark.asyncio

USER = "user_today_1"
ADDON = "price_extra_seats"


async def note(conn: asyncpg.Connection, event_id: str) -> str:
    text: str | None = await conn.fetchval(
        "SELECT last_error FROM statebus.stripe_events WHERE id = $1", event_id
    )
    return text or ""


async def on_plan(conn: asyncpg.Connection, user_id: str, sub_id: str, plan: str) -> None:
    await conn.execute(
        "INSERT INTO user_subscriptions (user_id, plan, status, stripe_subscription_id)"
        " VALUES ($1, $2, 'active', $3)",
        user_id,
        plan,
        sub_id,
    )


# 1. The plan is the item whose price is a plan's, wherever it is listed.


async def test_an_add_on_listed_first_is_not_taken_for_the_plan(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await add_customer_user(conn, USER, "cus_1")
    sub = fixture("subscription_addon_first", customer="cus_1")
    fake.put_subscription(sub, plan_item="si_plan000000000000000")

    await deliver(client, make_event("customer.subscription.created", sub, event_id="e_1"))
    await settled(conn, "e_1")

    row = await subscription_row(conn, USER)
    assert row is not None and row["plan"] == "glow_up"
    assert row["current_period_end"] == datetime.fromtimestamp(1767052800, UTC)


async def test_the_upgrade_swaps_the_plan_item_and_keeps_the_add_on(
    app: RunningServer, client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await add_customer_user(conn, USER, "cus_1")
    sub = fake.add_subscription(
        customer="cus_1", price=GLOW, sub_id="sub_1", addons=[ADDON], addons_first=True
    )
    await on_plan(conn, USER, "sub_1", "glow_up")

    response = await client.post(
        "/v1/billing/upgrade",
        json={"plan": "viral_surge"},
        headers={"Authorization": f"Bearer {app.token(USER)}"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["state"]["plan"]["code"] == "viral_surge"
    items = fake.get_subscription("sub_1")["items"]["data"]
    assert [i["id"] for i in items] == [i["id"] for i in sub["items"]["data"]]
    assert [i["price"]["id"] for i in items] == [ADDON, VIRAL]


# 2. No plan item: status still written; several: a clear, final error.


async def test_prices_that_map_to_no_plan_still_write_the_status(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await add_customer_user(conn, USER, "cus_1")
    fake.add_subscription(customer="cus_1", price="price_legacy_bundle", sub_id="sub_1")
    await on_plan(conn, USER, "sub_1", "glow_up")
    fake.set_subscription("sub_1", status="past_due")

    body = subscription_event(fake, "customer.subscription.updated", "sub_1", event_id="e_1")
    await deliver(client, body)
    await settled(conn, "e_1")

    row = await subscription_row(conn, USER)
    assert row is not None and (row["plan"], row["status"]) == ("glow_up", "past_due")
    assert "price_legacy_bundle" in await note(conn, "e_1")


async def test_several_plan_items_fail_for_good_with_a_clear_error(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await add_customer_user(conn, USER, "cus_1")
    fake.add_subscription(customer="cus_1", price=GLOW, sub_id="sub_1", addons=[VIRAL])

    body = subscription_event(fake, "customer.subscription.created", "sub_1", event_id="e_1")
    await deliver(client, body)
    await settled(conn, "e_1", "failed")

    assert "several plan items (glow_up, viral_surge)" in await note(conn, "e_1")
    attempts = await conn.fetchval("SELECT attempts FROM statebus.stripe_events WHERE id = 'e_1'")
    assert attempts == 1
    assert await subscription_row(conn, USER) is None


# 3. One ranking: an incomplete second subscription does not hide the active one.


async def test_an_incomplete_second_subscription_does_not_replace_the_active_one(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await add_customer_user(conn, USER, "cus_1")
    fake.add_subscription(customer="cus_1", price=GLOW, sub_id="sub_1")
    await on_plan(conn, USER, "sub_1", "glow_up")
    fake.add_subscription(customer="cus_1", price=VIRAL, sub_id="sub_2", status="incomplete")
    version = await version_of(conn, USER)

    body = subscription_event(fake, "customer.subscription.created", "sub_2", event_id="e_2")
    await deliver(client, body)
    await settled(conn, "e_2", "ignored")

    row = await subscription_row(conn, USER)
    assert row is not None and (row["stripe_subscription_id"], row["status"]) == (
        "sub_1",
        "active",
    )
    assert await version_of(conn, USER) == version

    # 3-D Secure done: now both bill. The user keeps the first; the second is a duplicate
    # for an operator (docs/stripe.md), until the first ends.
    fake.set_subscription("sub_2", status="active")
    body = subscription_event(fake, "customer.subscription.updated", "sub_2", event_id="e_3")
    await deliver(client, body)
    await settled(conn, "e_3", "ignored")
    row = await subscription_row(conn, USER)
    assert row is not None and row["stripe_subscription_id"] == "sub_1"
    assert (
        await conn.fetchval(
            "SELECT kept_subscription_id FROM statebus.stripe_duplicates"
            " WHERE subscription_id = 'sub_2' AND resolved_at IS NULL"
        )
        == "sub_1"
    )

    fake.set_subscription("sub_1", status="canceled")
    body = subscription_event(fake, "customer.subscription.deleted", "sub_1", event_id="e_4")
    await deliver(client, body)
    await settled(conn, "e_4")  # the user's row shows sub_1 ended: it no longer outranks sub_2
    body = subscription_event(fake, "customer.subscription.updated", "sub_2", event_id="e_5")
    await deliver(client, body)
    await settled(conn, "e_5")
    row = await subscription_row(conn, USER)
    assert row is not None and (row["stripe_subscription_id"], row["plan"]) == (
        "sub_2",
        "viral_surge",
    )
    assert await conn.fetchval(
        "SELECT resolved_at IS NOT NULL FROM statebus.stripe_duplicates"
        " WHERE subscription_id = 'sub_2'"
    )


# 4. Checkout links a customer only for subscriptions, and never steals one.


async def test_payment_and_setup_checkouts_link_nothing(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await add_customer_user(conn, USER)
    for mode in ("payment", "setup"):
        obj = fixture(f"checkout_session_{mode}", customer="cus_9", user=USER)
        await deliver(client, make_event("checkout.session.completed", obj, event_id=mode))
        await settled(conn, mode, "ignored")

    linked = await conn.fetchval("SELECT count(*) FROM user_billing WHERE user_id = $1", USER)
    assert linked == 0


async def test_a_customer_linked_to_another_user_fails_once_and_visibly(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await add_customer_user(conn, "user_owner", "cus_1")
    await add_customer_user(conn, USER)
    fake.add_subscription(customer="cus_1", price=GLOW, sub_id="sub_1")
    obj = fixture("checkout_session_subscription", customer="cus_1", sub="sub_1", user=USER)

    await deliver(client, make_event("checkout.session.completed", obj, event_id="e_cs"))
    await settled(conn, "e_cs", "failed")

    assert "linked to another user" in await note(conn, "e_cs")
    owner = await conn.fetchval(
        "SELECT user_id FROM user_billing WHERE stripe_customer_id = 'cus_1'"
    )
    assert owner == "user_owner"


# 5. Flexible billing mode: cancel_at says the subscription ends, and when.


async def test_cancel_at_shows_that_the_subscription_ends_and_when(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await add_customer_user(conn, USER, "cus_1")
    sub = fixture("subscription_flexible_cancel_at", customer="cus_1")
    fake.put_subscription(sub)

    await deliver(client, make_event("customer.subscription.updated", sub, event_id="e_1"))
    await settled(conn, "e_1")

    state = json.loads(
        await conn.fetchval("SELECT state::text FROM statebus.build_states(ARRAY[$1])", USER)
    )
    ends = datetime.fromtimestamp(1767052800, UTC)
    assert datetime.fromisoformat(state["subscription"]["cancel_at"]) == ends
    assert state["subscription"]["cancel_at_period_end"] is True  # it ends at period end


# 6. Retries end; resource_missing is final; Connect and livemode are checked.


async def test_a_missing_subscription_fails_at_once(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    gone = {"id": "sub_gone", "object": "subscription", "customer": "cus_1"}
    await deliver(client, make_event("customer.subscription.updated", gone, event_id="e_1"))
    await settled(conn, "e_1", "failed")

    assert "resource_missing" in await note(conn, "e_1")
    metrics = (await client.get("/metrics")).text
    assert "statebus_stripe_events_failed" in metrics


async def test_retries_end_as_failed_after_the_last_attempt(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    from statebus.stripe.worker import MAX_ATTEMPTS

    await add_customer_user(conn, USER, "cus_1")
    fake.add_subscription(customer="cus_1", price=GLOW, sub_id="sub_1")
    fake.fail_next(1000, status=500, path_prefix="/v1/subscriptions")
    body = subscription_event(fake, "customer.subscription.updated", "sub_1", event_id="e_1")
    await deliver(client, body)
    await settled(conn, "e_1", "retrying")
    await conn.execute(  # as if the earlier attempts had all run (each waits up to an hour)
        "UPDATE statebus.stripe_events SET attempts = $1 - 1, next_attempt_at = now()"
        " WHERE id = 'e_1'",
        MAX_ATTEMPTS,
    )
    await settled(conn, "e_1", "failed")
    assert "api_error" in await note(conn, "e_1") or "500" in await note(conn, "e_1")


async def test_connect_and_livemode_mismatch_events_are_stored_not_applied(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await add_customer_user(conn, USER, "cus_1")
    fake.add_subscription(customer="cus_1", price=GLOW, sub_id="sub_1")
    connect = fixture("event_connect", customer="cus_1", sub="sub_1")
    live = json.loads(subscription_event(fake, "customer.subscription.updated", "sub_1"))
    live.update(id="e_live", livemode=True)

    await deliver(client, json.dumps(connect).encode())
    await deliver(client, json.dumps(live).encode())
    await settled(conn, connect["id"], "ignored")
    await settled(conn, "e_live", "ignored")

    assert "STATEBUS_STRIPE_CONNECT" in await note(conn, connect["id"])
    assert "livemode mismatch" in await note(conn, "e_live")
    assert await subscription_row(conn, USER) is None
    assert not [r for r in fake.requests if r[1] == "/v1/subscriptions/sub_1"]


# 7. Thin events: 2xx, and v1.customer.subscription.* syncs the subscription.


async def test_a_thin_event_is_accepted_and_syncs_its_subscription(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await add_customer_user(conn, USER, "cus_1")
    fake.add_subscription(customer="cus_1", price=VIRAL, sub_id="sub_1")
    thin = fixture("thin_subscription_updated", sub="sub_1")

    response = await deliver(client, json.dumps(thin).encode())

    assert response.status_code == 200, response.text
    await settled(conn, thin["id"])
    row = await subscription_row(conn, USER)
    assert row is not None and row["plan"] == "viral_surge"


# 8. The pinned API version is what reaches Stripe.


async def test_every_call_sends_the_pinned_api_version(
    client: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    from statebus.config import STRIPE_API_VERSION

    await add_customer_user(conn, USER, "cus_1")
    fake.add_subscription(customer="cus_1", price=GLOW, sub_id="sub_1")
    body = subscription_event(fake, "customer.subscription.created", "sub_1", event_id="e_1")
    await deliver(client, body)
    await settled(conn, "e_1")

    versions = {headers.get("stripe-version") for _, _, headers in fake.requests}
    assert versions == {STRIPE_API_VERSION}


async def test_the_cli_lists_failed_events_with_their_error_and_requeues_one(
    client: httpx.AsyncClient, conn: asyncpg.Connection, dsn: str
) -> None:
    import io

    from statebus.stripe.inbox_cli import _run

    gone = {"id": "sub_gone", "object": "subscription", "customer": "cus_1"}
    await deliver(client, make_event("customer.subscription.updated", gone, event_id="e_1"))
    await settled(conn, "e_1", "failed")

    out = io.StringIO()
    assert await _run(dsn, True, None, out) == 0
    listed = out.getvalue()
    assert "e_1  customer.subscription.updated  failed  attempts=1" in listed
    assert "resource_missing" in listed and "1 failed event(s)" in listed

    out = io.StringIO()
    assert await _run(dsn, False, "e_1", out) == 0
    assert out.getvalue() == "e_1: re-queued\n"
    await settled(conn, "e_1", "failed")  # still gone in Stripe: fails again, once
    assert await _run(dsn, False, "evt_unknown", io.StringIO()) == 1


async def test_with_connect_configured_the_account_is_sent_to_stripe(
    dsn: str, tmp_path: Path, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    from tests.stripe_support import stripe_settings

    await seed(conn, fake)
    await add_customer_user(conn, USER, "cus_1")
    fake.add_subscription(customer="cus_1", price=GLOW, sub_id="sub_1")
    connect = fixture("event_connect", customer="cus_1", sub="sub_1")
    server = RunningServer(stripe_settings(tmp_path, fake, stripe_connect=True), dsn).start()
    try:
        async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
            await deliver(http, json.dumps(connect).encode())
            await settled(conn, connect["id"])
    finally:
        server.stop()

    reads = [h for _, path, h in fake.requests if path == "/v1/subscriptions/sub_1"]
    assert reads and {h.get("stripe-account") for h in reads} == {connect["account"]}
