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
import sys
import tempfile
import threading
import time
from pathlib import Path

import asyncpg
import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.auth import issue_token  # noqa: E402
from server.client import Session  # noqa: E402
from server.config import Settings  # noqa: E402
from server.embedded import EmbeddedPostgres  # noqa: E402
from server.migrations import migrate  # noqa: E402
from server.serve import DEMO_USER, uvicorn_config  # noqa: E402
from tests.fakes.stripe_api import TEST_API_KEY, FakeStripe  # noqa: E402
from tests.fakes.stripe_signing import make_event, sign_payload  # noqa: E402

JWT_SECRET = "bench-secret-" + "z" * 40
WHSEC = "whsec_bench"
PORT = 8792


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def rounds(dsn: str, fake: FakeStripe, events: int) -> tuple[list[float], list[float]]:
    writer = await asyncpg.connect(dsn)
    token = issue_token(JWT_SECRET, DEMO_USER)
    webhook, sql = [], []
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}") as http,
        await Session.open(f"ws://127.0.0.1:{PORT}/v1/ws", token) as session,
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

            sub = fake.set_subscription("sub_demo_glow_up", cancel_at_period_end=not flag)
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
    home = Path(tempfile.mkdtemp(prefix="sbw", dir="/tmp"))
    embedded = EmbeddedPostgres(home)
    dsn = embedded.start()
    with FakeStripe() as fake:
        fake.add_price("price_glow_up")
        fake.add_price("price_viral_surge")
        fake.add_subscription(customer="cus_demo", price="price_glow_up", sub_id="sub_demo_glow_up")
        try:
            conn = await asyncpg.connect(dsn)
            await migrate(conn, demo=True)
            await conn.close()
            settings = Settings(
                None,
                home,
                False,
                JWT_SECRET,
                None,
                None,
                None,
                (),
                TEST_API_KEY,
                (WHSEC,),
                fake.url,
            )
            config = uvicorn_config(settings, dsn, "127.0.0.1", PORT)
            config.log_level = "warning"
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            while not server.started:
                await asyncio.sleep(0.05)
            webhook, sql = await rounds(dsn, fake, events)
            server.should_exit = True
            thread.join(10)
        finally:
            embedded.stop()
    w50, s50 = statistics.median(webhook), statistics.median(sql)
    print(f"rounds: {events}")
    print(f"SQL commit-to-socket:   p50 {s50 * 1e3:.2f} ms  p99 {pct(sql, 0.99) * 1e3:.2f} ms")
    print(f"webhook-to-socket:      p50 {w50 * 1e3:.2f} ms  p99 {pct(webhook, 0.99) * 1e3:.2f} ms")
    print(f"ratio (median): {w50 / s50:.1f}x the SQL path")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100)
    asyncio.run(main(parser.parse_args().events))
