"""Checkout, cancel and resume reaching another tab: the fake Stripe's checkout page is
paid in one tab, its signed webhooks reach the server, and the other tab follows.
The billing calls go straight to the routes; the demo page's buttons call the same."""

from __future__ import annotations

import asyncpg
import pytest
from playwright.async_api import expect

from statebus.testing.fake_stripe import FakeStripe
from statebus.testing.server import RunningServer
from tests.e2e.conftest import Tabs
from tests.helpers import USER
from tests.stripe_support import SECRET, add_customer_user, seed

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

T = 15_000  # ms: a webhook's way (fake -> server -> worker -> Stripe read -> socket)


async def test_checkout_then_cancel_then_resume_show_in_the_other_tab(
    stripe_tabs: Tabs, app: RunningServer, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await seed(conn, fake)
    await add_customer_user(conn, USER)
    fake.send_webhooks(f"{app.http}/v1/stripe/webhook", SECRET)
    watcher = await stripe_tabs.open(USER)
    payer = await stripe_tabs.open(USER)
    await expect(watcher.get_by_test_id("status")).to_have_attribute(
        "data-status", "live", timeout=T
    )

    # Checkout, paid on the fake's page; its webhook brings the plan to the other tab.
    await payer.get_by_test_id("checkout-glow_up").click()
    await payer.get_by_role("button", name="Pay (test)").click()
    await payer.wait_for_url(f"{app.http}/?checkout=success", timeout=T)
    await expect(watcher.get_by_test_id("plan-code")).to_have_text("glow_up", timeout=T)
    await expect(watcher.get_by_test_id("provenance")).to_contain_text("Checkout", timeout=T)

    # Cancel at period end from the page: the other tab says when it ends.
    await expect(payer.get_by_test_id("cancel")).to_be_enabled(timeout=T)
    await payer.get_by_test_id("cancel").click()
    await expect(watcher.get_by_test_id("cancel-at-period-end")).to_contain_text(
        "Ends on", timeout=T
    )
    assert await subscription_cancel_at(conn, USER) is not None

    # Resume: it no longer ends.
    await expect(payer.get_by_test_id("resume")).to_be_enabled(timeout=T)
    await payer.get_by_test_id("resume").click()
    await expect(watcher.get_by_test_id("cancel-at-period-end")).to_have_text("Renews", timeout=T)
    assert await subscription_cancel_at(conn, USER) is None


async def subscription_cancel_at(conn: asyncpg.Connection, user_id: str) -> object:
    return await conn.fetchval(
        "SELECT cancel_at FROM user_subscriptions WHERE user_id = $1", user_id
    )
