"""Checkout, cancel and resume reaching another tab: the fake Stripe's checkout page is
paid in one tab, its signed webhooks reach the server, and the other tab follows.
The billing calls go straight to the routes; the demo page's buttons call the same."""

from __future__ import annotations

import asyncpg
import httpx
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
    await expect(watcher.get_by_test_id("status")).to_have_text("live", timeout=T)
    headers = {"Authorization": f"Bearer {app.token(USER)}"}

    async with httpx.AsyncClient(base_url=app.http, headers=headers, timeout=30) as http:
        checkout = await http.post("/v1/billing/checkout", json={"plan": "glow_up"})
        assert checkout.status_code == 200, checkout.text
        await payer.goto(checkout.json()["url"])
        await payer.get_by_role("button", name="Pay (test)").click()
        await payer.wait_for_url(f"{app.http}/?checkout=success", timeout=T)
        await expect(watcher.get_by_test_id("plan-code")).to_have_text("glow_up", timeout=T)

        cancelled = await http.post("/v1/billing/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"]["subscription"]["cancel_at"] is not None
        await expect(watcher.get_by_test_id("cancel-at-period-end")).to_have_text(
            "Cancels", timeout=T
        )

        resumed = await http.post("/v1/billing/resume")
        assert resumed.status_code == 200, resumed.text
        await expect(watcher.get_by_test_id("cancel-at-period-end")).to_have_text(
            "Renews", timeout=T
        )
