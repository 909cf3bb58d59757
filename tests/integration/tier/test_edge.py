"""Edges through NATS trouble: a node killed -9, an edge killed -9, NATS down for 5 s,
and no relay at all for a while. Every test ends with every socket at its user's latest
version, versions strictly increasing, and no socket sent another user's snapshot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg
import nats

from statebus import natsbus
from tests.helpers import a_newer_release_migrated, wait_for
from tests.integration.tier.conftest import Tier
from tests.integration.tier.test_relay import USERS, setup_users, wait_leader, writes
from tests.integration.tier.tier import Follower, assert_all_current, metric_of, write


async def writing(dsn: str) -> tuple[asyncio.Event, asyncio.Task[int], asyncpg.Connection]:
    stop = asyncio.Event()
    writer_conn = await asyncpg.connect(dsn)
    return stop, asyncio.create_task(writes(writer_conn, stop)), writer_conn


async def stop_writing(
    stop: asyncio.Event, writer: asyncio.Task[int], writer_conn: asyncpg.Connection
) -> int:
    stop.set()
    try:
        return await writer
    finally:
        await writer_conn.close()


async def test_nats_node_killed_and_edge_killed(tier: Tier, conn: asyncpg.Connection) -> None:
    await setup_users(conn)
    relay = tier.relay("r1")
    await wait_leader(conn, relay)
    e1, e2 = await tier.edge("e1"), await tier.edge("e2")
    # Half the sockets start on each edge; each moves to the other when its edge dies.
    followers = [
        Follower(user, [e1.ws, e2.ws] if n % 2 else [e2.ws, e1.ws]).start()
        for n, user in enumerate(USERS)
    ]
    await assert_all_current(conn, followers)
    stop, writer, writer_conn = await writing(tier.dsn)
    try:
        await asyncio.sleep(0.3)
        tier.nats.kill(tier.nats.nodes[0])
        await asyncio.sleep(1.0)
        e1.kill9()
        await asyncio.sleep(1.0)
        tier.nats.start_node(tier.nats.nodes[0])
        await asyncio.sleep(0.3)
    finally:
        assert await stop_writing(stop, writer, writer_conn) > 0
    try:
        await assert_all_current(conn, followers, timeout=20)
        moved = [f for f in followers if f.urls[0] == e1.ws]
        assert moved and all(f.reconnects >= 1 for f in moved)
    finally:
        for follower in followers:
            await follower.stop()


async def test_nats_down_for_five_seconds(tier: Tier, conn: asyncpg.Connection) -> None:
    await setup_users(conn)
    relay = tier.relay("r1")
    await wait_leader(conn, relay)
    edge = await tier.edge("e1")
    followers = [Follower(user, [edge.ws]).start() for user in USERS]
    await assert_all_current(conn, followers)
    stop, writer, writer_conn = await writing(tier.dsn)
    try:
        tier.nats.kill_all()

        async def not_ready() -> bool:
            status, body = await edge.readyz()
            return status == 503 and "NATS" in body

        await wait_for(not_ready, timeout=10, what="/readyz saying NATS is down")
        await asyncio.sleep(5)
        tier.nats.start()
        await edge.wait_ready(timeout=20)
    finally:
        assert await stop_writing(stop, writer, writer_conn) > 0
    try:
        await assert_all_current(conn, followers, timeout=30)
    finally:
        for follower in followers:
            await follower.stop()


async def test_no_relay_for_a_while(tier: Tier, conn: asyncpg.Connection) -> None:
    """An edge never LISTENs itself: with no relay nothing reaches its sockets, and what
    was committed meanwhile arrives once a relay leads again."""
    await setup_users(conn)
    relay = tier.relay("r1")
    await wait_leader(conn, relay)
    edge = await tier.edge("e1")
    followers = [Follower(user, [edge.ws]).start() for user in USERS]
    try:
        await assert_all_current(conn, followers)
        relay.kill9()
        before = {f.user_id: f.version for f in followers}
        for user in USERS:
            await write(conn, user)

        async def says_no_relay() -> bool:
            status, body = await edge.readyz()
            return status == 503 and "no relay heard from" in body

        # A leader sends something every second; past natsbus.RELAY_SILENCE without one
        # the edge knows no commit can reach its sockets, and says so.
        await wait_for(says_no_relay, timeout=natsbus.RELAY_SILENCE + 10, what="not ready")
        assert {f.user_id: f.version for f in followers} == before
        relay.start()
        await edge.wait_ready(timeout=20)
        await assert_all_current(conn, followers, timeout=10)
        # The relay itself published them, from the watermark its last run recorded.
        last_start = relay.output().rsplit("leading (token", 1)[-1]
        published = int(last_start.split("; ", 1)[1].split(" ", 1)[0])
        assert published >= len(USERS)
        page = f"{edge.http}/metrics"
        assert await metric_of(page, "statebus_edge_nats_subscriptions") == 1
        catch_ups = 'statebus_edge_catch_ups_total{reason="connected"}'
        assert await metric_of(page, catch_ups) == 1
    finally:
        for follower in followers:
            await follower.stop()
        with contextlib.suppress(Exception):
            relay.stop()


async def test_a_missed_message_shows_in_the_next_seq_and_is_re_read(
    tier: Tier, conn: asyncpg.Connection
) -> None:
    """The leader numbers its messages: an edge that never got one (a node died with it
    on the way) re-reads every watched user when the next arrives, an empty keep-alive
    included, so the commit it named reaches its sockets without another commit."""
    await setup_users(conn)
    relay = tier.relay("r1")
    await wait_leader(conn, relay)
    edge = await tier.edge("e1")
    followers = [Follower(user, [edge.ws]).start() for user in USERS[:2]]
    nc = await nats.connect(servers=tier.nats.url.split(","), connect_timeout=2)
    try:
        await assert_all_current(conn, followers)
        page = f"{edge.http}/metrics"
        gap = 'statebus_edge_catch_ups_total{reason="sequence gap"}'
        new_leader = 'statebus_edge_catch_ups_total{reason="new relay leader"}'

        def leaders_heard(count: int) -> Callable[[], Awaitable[bool]]:
            async def heard() -> bool:
                return await metric_of(page, new_leader) == count

            return heard

        await wait_for(leaders_heard(1), what="the edge hearing the relay")
        relay.kill9()  # from here the test speaks as the leader, with a newer token
        token = 1_000_000

        async def publish(seq: int, pairs: list[tuple[str, int]]) -> None:
            batch = natsbus.Batch(token, seq, pairs)
            await nc.publish(natsbus.SUBJECT, natsbus.batch_encoder.encode(batch))
            await nc.flush()

        await publish(1, [])
        await wait_for(leaders_heard(2), what="the edge hearing the new leader")
        version = await write(conn, USERS[0])  # its message, seq 2, never reaches the edge
        await publish(3, [])  # the next keep-alive
        await wait_for(lambda: followers[0].version >= version, what="the missed version")
        assert await metric_of(page, gap) == 1
        await publish(4, [])  # no jump, no re-read
        await assert_all_current(conn, followers)
        assert await metric_of(page, gap) == 1
    finally:
        await nc.close()
        for follower in followers:
            await follower.stop()


async def test_an_undecodable_relay_message_is_counted_not_ready_and_re_read(
    tier: Tier, conn: asyncpg.Connection
) -> None:
    """A message on the relay's subject an edge cannot read (a newer relay's batch?):
    never dropped silently. Counted, /readyz says why, and every watched user is re-read,
    so a version no message of the relay named still reaches its socket."""
    await setup_users(conn)
    await wait_leader(conn, tier.relay("r1"))
    edge = await tier.edge("e1")
    followers = [Follower(user, [edge.ws]).start() for user in USERS[:2]]
    try:
        await assert_all_current(conn, followers)
        await a_newer_release_migrated(conn)  # else a stray message is only counted
        await conn.execute(
            "UPDATE statebus.versions SET version = version + 1 WHERE user_id = $1", USERS[0]
        )
        nc = await nats.connect(servers=tier.nats.url.split(","), connect_timeout=2)
        try:
            await nc.publish(natsbus.SUBJECT, b'{"format": 2}')
            await nc.flush()
        finally:
            await nc.close()
        await assert_all_current(conn, followers)
        status, body = await edge.readyz()
        assert status == 503, body
        assert f"1 undecodable notifications on NATS subject {natsbus.SUBJECT}" in body
        url = f"{edge.http}/metrics"
        assert await metric_of(url, "statebus_notifications_undecodable_total") == 1
    finally:
        for follower in followers:
            await follower.stop()
