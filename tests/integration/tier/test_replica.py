"""Replica reads (STATEBUS_READ_DATABASE_URL) against a real streaming replica: a replica
that lags is never served stale; a caught-up replica serves the notified reads."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from statebus.embedded import EmbeddedPostgres
from statebus.migrations import migrate
from statebus.testing.replica import Replica
from statebus.testing.server import RunningServer, settings_for_tests
from tests.helpers import add_user, seed_plans, wait_for
from tests.integration.tier.tier import Follower, assert_all_current, metric_of, write

USERS = ["r.1", "r*2", "r 3"]


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[str, str]]:
    """A dedicated embedded primary (the shared test server may be another PostgreSQL)
    and a streaming replica of it."""
    root = Path(tempfile.mkdtemp(prefix="sbrep", dir="/tmp"))
    primary = EmbeddedPostgres(root / "p")
    dsn = primary.start()
    replica = Replica(dsn, root / "r")
    try:
        replica.start()
        yield dsn, replica.dsn
    finally:
        replica.stop()
        primary.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def migrated(primary_and_replica: tuple[str, str]) -> AsyncIterator[tuple[str, str]]:
    dsn, replica_dsn = primary_and_replica
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await seed_plans(conn)
        for user in USERS:
            await add_user(conn, user)
    finally:
        await conn.close()
    yield dsn, replica_dsn


async def test_a_lagging_replica_is_never_served_stale(
    migrated: tuple[str, str], tmp_path: Path
) -> None:
    dsn, replica_dsn = migrated
    conn = await asyncpg.connect(dsn)
    replica = await asyncpg.connect(replica_dsn)
    server = RunningServer(settings_for_tests(tmp_path, read_database_url=replica_dsn), dsn)
    server.start()
    followers = [Follower(user, [server.ws]).start() for user in USERS]
    try:
        assert await replica.fetchval("SELECT pg_is_in_recovery()")
        await assert_all_current(conn, followers)
        page = f"{server.http}/metrics"

        # Caught up: notified reads come from the replica. A replay that falls behind for
        # a moment (a loaded machine) sends a read to the primary instead, so the writes
        # go on until the replica has served as many reads as there are users.
        async def served_by_the_replica() -> bool:
            for user in USERS:
                await write(conn, user)
            await assert_all_current(conn, followers)
            reads = await metric_of(page, "statebus_replica_envelope_reads_total")
            return reads >= len(USERS)

        await wait_for(served_by_the_replica, timeout=30, what="reads served by the replica")

        # The replica stops replaying: what is committed now is not there, and the
        # sockets still get it, from the primary after a short wait.
        await replica.execute("SELECT pg_wal_replay_pause()")
        fallbacks = await metric_of(page, "statebus_replica_fallbacks_total")
        for user in USERS:
            await write(conn, user)
        await assert_all_current(conn, followers, timeout=5)
        lagging = await replica.fetch(
            "SELECT user_id, version FROM statebus.versions WHERE user_id = ANY($1)", USERS
        )
        latest = {f.user_id: f.version for f in followers}
        assert all(row["version"] < latest[row["user_id"]] for row in lagging)
        assert await metric_of(page, "statebus_replica_fallbacks_total") >= fallbacks + len(USERS)

        await replica.execute("SELECT pg_wal_replay_resume()")
        await wait_for(
            lambda: replica.fetchval(
                "SELECT min(version) = $1 FROM statebus.versions WHERE user_id = ANY($2)",
                min(latest.values()),
                USERS,
            ),
            timeout=10,
            what="the replica caught up",
        )
        for user in USERS:
            await write(conn, user)
        await assert_all_current(conn, followers)
        for follower in followers:
            versions = [version for _, version in follower.seen]
            assert versions == sorted(set(versions))
    finally:
        for follower in followers:
            await follower.stop()
        server.stop()
        await replica.close()
        await conn.close()
        await asyncio.sleep(0)
