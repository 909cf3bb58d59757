"""The holder of the webhook secret, and any database role, against the webhook limits
(docs/security.md, "Webhook limits"): memory per signed event, deliveries at once, the
inbox's retention, and what other roles can hear or read of Stripe's data."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
import pytest

from statebus.testing.fake_stripe import make_event
from statebus.testing.server import RunningServer, settings_for_tests
from tests.helpers import wait_for
from tests.stripe_support import SECRET, deliver, settled

T = TypeVar("T")

pytestmark = pytest.mark.asyncio

MIB = 1024 * 1024


def webhook_server(dsn: str, home: Path, **changes: object) -> RunningServer:
    """Webhooks configured, no Stripe API key: the endpoint stores, no worker applies."""
    return RunningServer(
        settings_for_tests(home, stripe_webhook_secrets=(SECRET,), **changes), dsn
    ).start()


def big_event(n: int) -> bytes:
    """A signed-able event of just under 1 MiB in the shape that costs most as decoded
    Python objects: a long list of small numbers (each became a Decimal or a float)."""
    obj = {"id": f"in_{n}", "customer": "cus_x", "lines": [0.5] * 205_000}
    event = {"id": f"evt_big_{n}", "object": "event", "type": "invoice.created"}
    body = json.dumps({**event, "created": int(time.time()), "data": {"object": obj}})
    assert 0.9 * MIB < len(body) < MIB
    return body.encode()


async def traced_peak(work: Awaitable[T]) -> tuple[T, int]:
    """(what `work` returned, the most memory it held at once, in this process)."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        result = await work
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - before


async def test_a_signed_one_mib_event_costs_a_few_times_its_size(
    app: RunningServer, conn: asyncpg.Connection
) -> None:
    """Stored by the endpoint and applied by the inbox worker, one at a time."""
    async with httpx.AsyncClient(base_url=app.http, timeout=60) as client:
        for n in range(3):
            body = big_event(n)

            async def delivered_and_done(body: bytes, event_id: str) -> int:
                answer = await deliver(client, body)
                await settled(conn, event_id, "ignored")
                return answer.status_code

            status, peak = await traced_peak(delivered_and_done(body, f"evt_big_{n}"))
            assert status == 200
            # Decoded into objects, this body took 28 times its size; now a few copies.
            assert peak < 4 * len(body), f"{peak / MIB:.1f} MiB for one 1 MiB event"


async def test_fifty_signed_one_mib_events_at_once_are_bounded(
    app: RunningServer, conn: asyncpg.Connection
) -> None:
    bodies = [big_event(n) for n in range(50)]
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=app.http, timeout=60, limits=limits) as client:
        answers, peak = await traced_peak(
            asyncio.gather(*(deliver(client, body) for body in bodies))
        )
    codes = [answer.status_code for answer in answers]
    stored = codes.count(200)
    assert stored >= 8 and stored + codes.count(503) == 50, codes
    assert await conn.fetchval("SELECT count(*) FROM statebus.stripe_events") == stored
    # At most 8 deliveries at a time, each a few times its size.
    assert peak < 8 * 4 * MIB, f"{peak / MIB:.0f} MiB for 50 events at once"


async def test_deliveries_past_the_concurrency_cap_get_503_with_retry_after(
    dsn: str, tmp_path: Path, conn: asyncpg.Connection
) -> None:
    server = webhook_server(dsn, tmp_path, webhook_concurrency=2)
    holders: list[asyncio.StreamWriter] = []
    try:
        for _ in range(2):  # two deliveries whose bodies never finish: both slots held
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"POST /v1/stripe/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                b"Stripe-Signature: t=1,v1=00\r\n\r\n{"
            )
            holders.append(writer)
        await wait_for(
            lambda: (
                getattr(server.app.state, "stripe_webhook_slots", None) is not None
                and server.app.state.stripe_webhook_slots.free == 0
            ),
            what="both slots taken",
        )
        async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
            busy = await deliver(client, make_event("ping", {"id": "x"}, event_id="evt_busy"))
            assert busy.status_code == 503 and busy.headers["retry-after"] == "10"
            assert busy.json()["error"] == "busy"
            for writer in holders:
                writer.close()
            await wait_for(
                lambda: server.app.state.stripe_webhook_slots.free == 2, what="slots given back"
            )
            again = await deliver(client, make_event("ping", {"id": "x"}, event_id="evt_busy"))
            assert again.status_code == 200 and again.json() == {
                "received": True,
                "duplicate": False,
            }
    finally:
        for writer in holders:
            writer.close()
        server.stop()
    assert await conn.fetchval("SELECT count(*) FROM statebus.stripe_events") == 1
