"""N3: the fake Stripe retries refused deliveries as Stripe does, reports each attempt
and why the server refuses it; the server logs its first unconfigured refusal once."""

from __future__ import annotations

import logging
from dataclasses import replace

import asyncpg
import pytest

from statebus.stripe import webhook
from statebus.testing.fake_stripe import FakeStripe
from statebus.testing.server import RunningServer
from tests.helpers import wait_for

pytestmark = pytest.mark.asyncio

SUB = "sub_delivery"


def customer_with_subscription(fake: FakeStripe) -> None:
    fake.add_price("price_glow_up", product="prod_glow_up", unit_amount=1900)
    fake.add_customer("cus_delivery", email="d@example.com")
    fake.add_subscription(
        customer="cus_delivery", price="price_glow_up", sub_id=SUB, metadata={"user_id": "u1"}
    )


async def test_refused_events_are_retried_until_the_server_has_the_secret(
    server: RunningServer,
    fake: FakeStripe,
    conn: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhook, "_refusals_told", False)  # another test may have said it
    caplog.set_level(logging.WARNING, logger="statebus.stripe")
    customer_with_subscription(fake)
    lines: list[str] = []
    sender = fake.send_webhooks(f"{server.http}/v1/stripe/webhook")
    sender.report = lines.append
    sender.retry_delays = (0.2,) * 100

    fake.set_subscription(SUB, cancel_at_period_end=True)
    await wait_for(lambda: len(sender.attempts) >= 3, what="three refused attempts")
    refused = sender.attempts[:3]
    assert {(a.attempt, a.status) for a in refused} == {(1, 503), (2, 503), (3, 503)}
    assert refused[0].error == "stripe_not_configured: STRIPE_WEBHOOK_SECRET is not set"
    event_id = refused[0].event_id
    assert lines[0] == (
        f"fake Stripe: customer.subscription.updated {event_id}: 503"
        " (stripe_not_configured: STRIPE_WEBHOOK_SECRET is not set)"
    )
    explained = [line for line in lines if "refuses this fake's events" in line]
    assert len(explained) == 1 and "without STRIPE_WEBHOOK_SECRET" in explained[0]
    assert "fake Stripe:   retry 1 of 100 in 0.2 s" in lines
    told = [r for r in caplog.records if "refused a Stripe webhook" in r.getMessage()]
    assert len(told) == 1, told  # once per process, not once per retry
    assert "STRIPE_WEBHOOK_SECRET" in told[0].getMessage()

    # The developer pastes the export line into the server's shell and restarts it.
    server.settings = replace(server.settings, stripe_webhook_secrets=(sender.secret,))
    server.restart()
    await wait_for(lambda: sender.sent == [("customer.subscription.updated", 200)], timeout=15)
    stored = await conn.fetchval("SELECT type FROM statebus.stripe_events WHERE id = $1", event_id)
    assert stored == "customer.subscription.updated"
    assert lines[-1] == f"fake Stripe: customer.subscription.updated {event_id}: 200"


async def test_a_wrong_secret_is_named_and_the_event_given_up_in_the_end(
    server: RunningServer, fake: FakeStripe
) -> None:
    server.settings = replace(server.settings, stripe_webhook_secrets=("whsec_other",))
    server.restart()
    customer_with_subscription(fake)
    lines: list[str] = []
    sender = fake.send_webhooks(f"{server.http}/v1/stripe/webhook")
    sender.report = lines.append
    sender.retry_delays = (0.05, 0.05)

    fake.set_subscription(SUB, cancel_at_period_end=True)
    await wait_for(lambda: bool(sender.sent), what="the event given up")
    assert sender.sent == [("customer.subscription.updated", 400)]
    assert [a.status for a in sender.attempts] == [400, 400, 400]
    assert any("STRIPE_WEBHOOK_SECRET is not this fake's" in line for line in lines)
    assert "gave up on" in lines[-1] and "after 3 attempts" in lines[-1]
    assert "statebus reconcile" in lines[-1]


async def test_nothing_listening_is_said_plainly(fake: FakeStripe) -> None:
    customer_with_subscription(fake)
    lines: list[str] = []
    sender = fake.send_webhooks("http://127.0.0.1:9/v1/stripe/webhook")
    sender.report = lines.append
    sender.retry_delays = ()
    fake.set_subscription(SUB, cancel_at_period_end=True)
    await wait_for(lambda: bool(sender.sent), what="the event given up")
    assert sender.sent == [("customer.subscription.updated", 0)]
    assert any("nothing answers at http://127.0.0.1:9/v1/stripe/webhook" in x for x in lines)
