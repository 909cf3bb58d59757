"""The holder of the webhook secret, and any database role, against the webhook limits
(docs/security.md, "Webhook limits"): memory per signed event, deliveries at once, the
inbox's retention, and what other roles can hear or read of Stripe's data."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
import pytest

from statebus import sqlfiles
from statebus.testing.fake_stripe import FakeStripe, make_event
from statebus.testing.server import RunningServer, settings_for_tests
from tests.helpers import wait_for
from tests.integration.test_privileges import APP, MONITOR, as_role, drop_roles
from tests.stripe_support import SECRET, deliver, seed_subscriber, settled, subscription_event

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


# --- F8: the inbox is pruned --------------------------------------------------------------


async def age(conn: asyncpg.Connection, days: int, ids: list[str]) -> None:
    """Moves events `days` into the past, as if received and processed then."""
    await conn.execute(
        "UPDATE statebus.stripe_events SET received_at = received_at - make_interval(days => $1),"
        " applied_at = applied_at - make_interval(days => $1) WHERE id = ANY($2::text[])",
        days,
        ids,
    )


async def inbox(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT id, status FROM statebus.stripe_events")
    return {row["id"]: row["status"] for row in rows}


async def test_processed_events_are_pruned_after_the_retention_and_no_others(
    app: RunningServer, conn: asyncpg.Connection
) -> None:
    """Signed events with unique ids, as many as a secret holder likes: once processed and
    older than `stripe_events_retention` (30 days), a server deletes them, at start and
    hourly. Events still waiting, and failed ones, stay whatever their age."""
    async with httpx.AsyncClient(base_url=app.http, timeout=30) as client:
        for n in range(6):  # processed: "ping" is stored and ignored
            answer = await deliver(client, make_event("ping", {"id": "x"}, event_id=f"evt_{n}"))
            assert answer.status_code == 200
    for n in range(6):
        await settled(conn, f"evt_{n}", "ignored")
    await conn.execute(
        "INSERT INTO statebus.stripe_events (id, type, created, payload, status, attempts,"
        " next_attempt_at) SELECT s || '_old', 'ping', now(), '{}', s, 12, 'infinity'"
        " FROM unnest(ARRAY['failed', 'retrying', 'unmatched', 'pending']) AS s"
    )
    waiting = ["failed_old", "retrying_old", "unmatched_old", "pending_old"]
    await age(conn, 31, ["evt_0", "evt_1", "evt_2", "evt_3", *waiting])
    await age(conn, 29, ["evt_4"])  # processed, but within the 30 days

    app.restart()  # every server prunes at start (and every hour)

    async def pruned() -> bool:
        return set(await inbox(conn)) == {"evt_4", "evt_5", *waiting}

    await wait_for(pruned, what="evt_0..3 pruned")
    # A shorter retention applies at the next round; waiting and failed still stay.
    await conn.execute(
        "UPDATE statebus.settings SET value = '1 day' WHERE name = 'stripe_events_retention'"
    )
    pool = await asyncpg.create_pool(app.dsn, min_size=1, max_size=1)
    try:
        from statebus.maintenance import prune_stripe_events

        assert await prune_stripe_events(pool, batch=1) == 1  # evt_4, in batches of one
    finally:
        await pool.close()
    assert set(await inbox(conn)) == {"evt_5", *waiting}


async def test_the_retention_setting_is_checked(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError, match="stripe_events_retention"):
        await conn.execute(
            "UPDATE statebus.settings SET value = 'soon' WHERE name = 'stripe_events_retention'"
        )
    with pytest.raises(asyncpg.InvalidParameterValueError, match="cannot be deleted"):
        await conn.execute("DELETE FROM statebus.settings WHERE name = 'stripe_events_retention'")


# --- F9: nothing Stripe-shaped reaches other roles ----------------------------------------


@dataclass
class Roles:
    app: asyncpg.Connection
    monitor: asyncpg.Connection


@pytest.fixture
async def roles(dsn: str, conn: asyncpg.Connection) -> AsyncIterator[Roles]:
    """The roles of sql/roles_example.sql, as written, each on its own connection."""
    await drop_roles(conn)
    await conn.execute(sqlfiles.read("roles_example.sql"))
    password = secrets.token_urlsafe(16)
    for role in (APP, MONITOR):
        await conn.execute(f"ALTER ROLE {role} PASSWORD '{password}'")
    app_conn = await asyncpg.connect(as_role(dsn, APP, password))
    monitor = await asyncpg.connect(as_role(dsn, MONITOR, password))
    try:
        yield Roles(app_conn, monitor)
    finally:
        await app_conn.close()
        await monitor.close()
        await drop_roles(conn)


STRIPE_SHAPED = re.compile(r"(evt|cus|sub|si|in|cs)_[A-Za-z0-9]")


async def test_a_listening_role_hears_no_stripe_ids(
    app: RunningServer, conn: asyncpg.Connection, fake: FakeStripe, roles: Roles
) -> None:
    heard: list[tuple[str, str]] = []

    def on_notify(_conn: object, _pid: int, channel: str, payload: object) -> None:
        heard.append((channel, str(payload)))

    # LISTEN needs no privilege: every role may listen on every channel.
    for channel in ("statebus_stripe_inbox", "statebus"):
        await roles.monitor.add_listener(channel, on_notify)
    await seed_subscriber(conn, fake, "u_f9")
    fake.set_subscription("sub_demo", cancel_at_period_end=True)
    body = subscription_event(fake, "customer.subscription.updated", "sub_demo", event_id="evt_f9")
    async with httpx.AsyncClient(base_url=app.http, timeout=30) as client:
        assert (await deliver(client, body)).status_code == 200
    await settled(conn, "evt_f9", "applied")
    await wait_for(
        lambda: {"statebus_stripe_inbox", "statebus"} <= {c for c, _ in heard},
        what="the inbox wake-up and the user's version",
    )
    assert all(payload == "" for c, payload in heard if c == "statebus_stripe_inbox")
    assert not [p for _, p in heard if STRIPE_SHAPED.search(p)], heard


async def test_stored_stripe_payloads_are_the_owners_only_and_the_monitor_reads_counts(
    app: RunningServer, conn: asyncpg.Connection, roles: Roles
) -> None:
    session = {"id": "cs_1", "mode": "payment", "customer": "cus_f9"}
    session["customer_email"] = "victim@example.com"
    async with httpx.AsyncClient(base_url=app.http, timeout=30) as client:
        body = make_event("checkout.session.completed", session, event_id="evt_mail")
        assert (await deliver(client, body)).status_code == 200
    await settled(conn, "evt_mail", "ignored")

    for role in (roles.monitor, roles.app):
        for query in (
            "SELECT payload FROM statebus.stripe_events",
            "SELECT customer_id FROM statebus.stripe_events",
            "SELECT id FROM statebus.stripe_events",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await role.fetch(query)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await roles.app.fetch("SELECT * FROM statebus.stripe_event_counts")
    rows = await roles.monitor.fetch("SELECT * FROM statebus.stripe_event_counts")
    assert [(row["status"], row["events"]) for row in rows] == [("ignored", 1)]
    assert "victim" not in str(rows) and not STRIPE_SHAPED.search(str([dict(r) for r in rows]))


async def test_an_earlier_grant_of_the_inbox_is_taken_back_by_the_migration(
    conn: asyncpg.Connection, roles: Roles
) -> None:
    """sql/roles_example.sql once granted the monitor SELECT on statebus.stripe_events."""
    await conn.execute("GRANT SELECT ON statebus.stripe_events TO statebus_monitor")
    await conn.execute("GRANT SELECT (payload) ON statebus.stripe_events TO statebus_app")
    assert await roles.monitor.fetch("SELECT payload FROM statebus.stripe_events") == []
    migration = next(m for m in sqlfiles.migrations() if m.version == 7)
    await conn.execute(migration.sql)  # re-runnable as a whole
    for role in (roles.monitor, roles.app):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await role.fetch("SELECT payload FROM statebus.stripe_events")
