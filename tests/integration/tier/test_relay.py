"""The leading relay dies (kill -9) while users write: a standby takes over, nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import asyncpg

from tests.helpers import a_newer_release_migrated, add_user, seed_plans, wait_for
from tests.integration.tier.conftest import Tier
from tests.integration.tier.tier import (
    Follower,
    Relay,
    assert_all_current,
    leader,
    write,
)

# Ids no subject could hold as they are: NATS carries them in payloads only.
USERS = ["u.1", "u*2", "u>3", "u 4", "ü5", "用户6", "u.>.*7", "plain8"]


async def setup_users(conn: asyncpg.Connection) -> None:
    await seed_plans(conn)
    for user in USERS:
        await add_user(conn, user)
        await write(conn, user)


async def writes(conn: asyncpg.Connection, stop: asyncio.Event) -> int:
    count = 0
    while not stop.is_set():
        await write(conn, random.choice(USERS))
        count += 1
        await asyncio.sleep(0.01)
    return count


async def wait_leader(conn: asyncpg.Connection, *among: Relay, timeout: float = 15) -> Relay:
    names = {relay.name: relay for relay in among}

    async def led() -> bool:
        return await leader(conn) in names

    await wait_for(led, timeout=timeout, what="a relay leading")
    name = await leader(conn)
    assert name is not None
    return names[name]


async def test_leader_killed_during_writes_loses_nothing(
    tier: Tier, conn: asyncpg.Connection
) -> None:
    await setup_users(conn)
    relays = [tier.relay("r1"), tier.relay("r2")]
    first = await wait_leader(conn, *relays)
    standby = next(relay for relay in relays if relay is not first)
    assert await first.metric("statebus_relay_leader") == 1
    assert await standby.metric("statebus_relay_leader") == 0
    edge = await tier.edge("e1")
    followers = [Follower(user, [edge.ws]).start() for user in USERS]
    try:
        await assert_all_current(conn, followers)
        stop = asyncio.Event()
        writer_conn = await asyncpg.connect(tier.dsn)
        writer = asyncio.create_task(writes(writer_conn, stop))
        await asyncio.sleep(0.5)

        first.kill9()
        # A write committed right after the leader died reaches its socket within 2 s.
        killed = time.monotonic()
        probe_user = USERS[0]
        version = await write(conn, probe_user)
        probe = next(f for f in followers if f.user_id == probe_user)
        await wait_for(lambda: probe.version >= version, timeout=2.0, what="write after kill")
        delivered = time.monotonic() - killed
        second = await wait_leader(conn, *[r for r in relays if r is not first])
        assert second is not first
        # While it stood by, it said who held the lease.
        assert f"standing by; the lease is held by {first.name}" in second.output()

        await asyncio.sleep(0.5)
        stop.set()
        assert await writer > 0
        await writer_conn.close()
        await assert_all_current(conn, followers)
        assert delivered < 2.0
        assert await second.metric("statebus_relay_leader") == 1
        assert await second.metric("statebus_relay_acknowledged_total") >= 1
        assert await second.metric("statebus_relay_catch_up_pairs_total") >= 1
        assert 0 <= await second.metric("statebus_relay_oldest_unpublished_seconds") < 2
    finally:
        for follower in followers:
            await follower.stop()


async def test_both_relays_in_turn_and_a_cut_session(tier: Tier, conn: asyncpg.Connection) -> None:
    await setup_users(conn)
    r1, r2 = tier.relay("r1"), tier.relay("r2")
    first = await wait_leader(conn, r1, r2)
    edge = await tier.edge("e1")
    followers = [Follower(user, [edge.ws]).start() for user in USERS]
    await assert_all_current(conn, followers)
    stop = asyncio.Event()
    writer_conn = await asyncpg.connect(tier.dsn)
    writer = asyncio.create_task(writes(writer_conn, stop))
    try:
        # The leader dies; the other leads; the dead one comes back and stands by.
        first.kill9()
        second = await wait_leader(conn, r1, r2)
        assert second is not first
        first.start()
        await wait_for(lambda: "standing by" in first.output().split("started")[-1], timeout=15)
        await asyncio.sleep(0.3)
        # Now the second dies: the first, restarted, leads again.
        second.kill9()
        again = await wait_leader(conn, r1, r2)
        assert again is first
        second.start()
        # Its Postgres session is cut (pg_terminate_backend): it stops publishing, and
        # one of the two leads again under a new fencing token.
        row = await conn.fetchrow("SELECT token, holder_pid FROM statebus.relay_lease")
        assert row is not None
        token, pid = row["token"], row["holder_pid"]
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        await wait_for(
            lambda: conn.fetchval(
                "SELECT token > $1 AND expires_at > now() FROM statebus.relay_lease", token
            ),
            timeout=3,
            what="a new leader within 2 s of the cut",
        )
        await asyncio.sleep(0.5)
        stop.set()
        assert await writer > 0
        await assert_all_current(conn, followers)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await writer
        await writer_conn.close()
        for follower in followers:
            await follower.stop()


async def test_a_newer_notification_format_makes_the_leader_step_down_losing_nothing(
    tier: Tier, conn: asyncpg.Connection
) -> None:
    """A commit of a newer release (its bump, and a notification in a format this relay
    cannot read): the relay counts it, says why once, steps down without moving its
    watermark, and on leading again publishes the version the payload named."""
    await setup_users(conn)
    relay = tier.relay("r1")
    await wait_leader(conn, relay)
    edge = await tier.edge("e1")
    followers = [Follower(user, [edge.ws]).start() for user in USERS[:2]]
    try:
        await assert_all_current(conn, followers)
        # A stray payload (any role may NOTIFY) is counted and ignored: the relay leads on.
        await conn.execute("SELECT pg_notify('statebus', $1)", '{"format": 2}')
        await wait_for(
            lambda: "ignored a payload on channel statebus" in relay.output(), what="stray said"
        )
        assert await relay.metric("statebus_notifications_undecodable_total") == 1
        assert "stepping down" not in relay.output()
        await a_newer_release_migrated(conn)
        async with conn.transaction():
            await conn.execute(
                "UPDATE statebus.versions SET version = version + 1,"
                " txid = pg_current_xact_id(), committed_at = clock_timestamp()"
                " WHERE user_id = $1",
                USERS[0],
            )
            await conn.execute(
                "SELECT pg_notify('statebus', $1)", '{"format": 2, "changes": "unknown here"}'
            )
        await assert_all_current(conn, followers)
        assert await relay.metric("statebus_notifications_undecodable_total") == 2
        why = "notification format 2 is newer than this release understands (1)"
        assert f"stepping down after {why}" in relay.output()
        assert relay.output().count("undecodable notification on channel statebus") == 1
        await wait_leader(conn, relay)  # and it leads again
    finally:
        for follower in followers:
            await follower.stop()
