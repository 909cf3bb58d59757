"""Webhook-to-socket latency, against SQL commit-to-socket in the same run.

    python bench/webhook_latency.py [--events 100]

Embedded PostgreSQL, a real statebus server (uvicorn, in a thread) whose Stripe is the
test suite's fake API on loopback, and one socket for the demo user. Each round flips
`cancel_at_period_end` in the fake Stripe, POSTs a signed
`customer.subscription.updated`, and times until the socket delivers the new version
(verify + store + NOTIFY to the worker + re-fetch from Stripe + write + trigger + push).
The baseline rounds change the same user with an SQL UPDATE.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import asyncpg
import httpx
from harness import demo_database, ms

from statebus.client import Session
from statebus.serve import DEMO_USER
from statebus.testing.fake_stripe import FakeStripe, make_event, sign_payload
from statebus.testing.server import RunningServer
from tests.stripe_support import stripe_settings

WHSEC = "whsec_bench"
SUBSCRIPTION = "sub_demo_glow_up"  # the demo seed's


async def rounds(
    server: RunningServer, dsn: str, fake: FakeStripe, events: int
) -> tuple[list[float], list[float]]:
    writer = await asyncpg.connect(dsn)
    webhook, sql = [], []
    async with (
        httpx.AsyncClient(base_url=server.http) as http,
        await Session.open(server.ws, server.token(DEMO_USER)) as session,
    ):
        version = (await session.recv()).version
        for i in range(events):
            flag = i % 2 == 0
            start = time.perf_counter()
            await writer.execute(
                "UPDATE user_usage SET used = used + 1 WHERE user_id = $1", DEMO_USER
            )
            version = (await session.recv()).version
            sql.append(time.perf_counter() - start)

            sub = fake.set_subscription(SUBSCRIPTION, cancel_at_period_end=not flag)
            body = make_event("customer.subscription.updated", sub)
            start = time.perf_counter()
            answer = await http.post(
                "/v1/stripe/webhook",
                content=body,
                headers={"Stripe-Signature": sign_payload(body, WHSEC)},
            )
            assert answer.status_code == 200, answer.text
            message = await session.recv()
            webhook.append(time.perf_counter() - start)
            assert message.version == version + 1
            version = message.version
    await writer.close()
    return webhook, sql


async def main(events: int) -> None:
    with FakeStripe() as fake:
        fake.add_price("price_glow_up")
        fake.add_price("price_viral_surge")
        fake.add_subscription(customer="cus_demo", price="price_glow_up", sub_id=SUBSCRIPTION)
        async with demo_database() as (home, dsn):
            settings = stripe_settings(home, fake, stripe_webhook_secrets=(WHSEC,))
            server = RunningServer(settings, dsn).start()
            try:
                webhook, sql = await rounds(server, dsn, fake, events)
            finally:
                server.stop()
    print(f"rounds: {events}")
    print(f"SQL commit-to-socket:   {ms(sql)}")
    print(f"webhook-to-socket:      {ms(webhook)}")
    print(
        f"ratio (median): {statistics.median(webhook) / statistics.median(sql):.1f}x the SQL path"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100)
    asyncio.run(main(parser.parse_args().events))
