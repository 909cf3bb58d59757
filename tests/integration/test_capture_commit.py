"""Capture holds a user only while committing.

Two transactions that write different rows of the same users, which PostgreSQL runs side
by side, must still run side by side with statebus installed: no new waits, no new
deadlocks, and each user's versions still follow commit order.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.helpers import Notifications, add_user, version_of, wait_for

pytestmark = pytest.mark.asyncio

USAGE = "UPDATE user_usage SET used = used + 1 WHERE user_id = $1 AND metric = 'posts'"
SYSTEM = (
    "UPDATE user_system_data SET onboarding_completed = NOT onboarding_completed WHERE user_id = $1"
)
IS_WAITING = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1"


async def add_users(conn: asyncpg.Connection, *users: str) -> None:
    for user in users:
        await add_user(conn, user)
        await conn.execute(
            "INSERT INTO user_usage (user_id, metric, used) VALUES ($1, 'posts', 0)", user
        )
        await conn.execute("INSERT INTO user_system_data (user_id) VALUES ($1)", user)


async def holds_version_row(observer: asyncpg.Connection, writer: asyncpg.Connection) -> bool:
    """Whether `writer`'s open transaction has written or locked any version row (its
    transaction id in a row's xmax): before commit, capture must hold none."""
    xid = await writer.fetchval("SELECT pg_current_xact_id()::text::xid")
    return bool(
        await observer.fetchval(
            "SELECT EXISTS (SELECT 1 FROM statebus.versions WHERE xmax = $1)", xid
        )
    )


async def test_four_statement_interleaving_commits_both(
    seeded: asyncpg.Connection, dsn: str, notes: Notifications
) -> None:
    await add_users(seeded, "u1", "u2")
    a, b = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        ta, tb = a.transaction(), b.transaction()
        await ta.start()
        await tb.start()
        await a.execute(USAGE, "u1")
        await b.execute(SYSTEM, "u2")
        # With a version row locked per statement, each of these two waited for the other.
        await asyncio.wait_for(a.execute(USAGE, "u2"), 10)
        await asyncio.wait_for(b.execute(SYSTEM, "u1"), 10)
        await ta.commit()
        await tb.commit()
    finally:
        await a.close()
        await b.close()
    await notes.sync(seeded)
    # Each user: add_users gave versions 1..3, then A's commit 4 and B's commit 5.
    for user in ("u1", "u2"):
        assert await version_of(seeded, user) == 5
        assert [n.version for n in notes.for_user(user)][-2:] == [4, 5]
    sources = await seeded.fetch(
        "SELECT user_id, version FROM statebus.history WHERE version > 3 ORDER BY user_id, version"
    )
    assert [(r["user_id"], r["version"]) for r in sources] == [
        ("u1", 4),
        ("u1", 5),
        ("u2", 4),
        ("u2", 5),
    ]


async def test_other_rows_of_a_user_wait_only_for_the_others_commit(
    seeded: asyncpg.Connection, dsn: str
) -> None:
    """A long transaction over many users holds none of their version rows until it
    commits: the app's single-row writes of those users never wait. Only while it
    commits (here: its commit step run early with SET CONSTRAINTS ALL IMMEDIATE) does a
    commit of one of its users queue behind it, and goes on as soon as it commits."""
    users = [f"u{i}" for i in range(1, 21)]
    await add_users(seeded, *users)
    admin, app = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        long_one = admin.transaction()
        await long_one.start()
        await admin.execute(
            "UPDATE user_subscriptions SET cancel_at_period_end = true WHERE user_id = ANY ($1)",
            users,
        )
        assert not await holds_version_row(seeded, admin)
        for user in users:
            # Autocommit: the UPDATE and its commit step, while the admin stays open.
            await asyncio.wait_for(app.execute(USAGE, user), 10)
        assert not await holds_version_row(seeded, admin)

        second = app.transaction()
        await second.start()
        await app.execute(USAGE, "u1")
        await admin.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the admin's commit step
        assert await holds_version_row(seeded, admin)
        committing = asyncio.create_task(second.commit())
        app_pid = app.get_server_pid()
        await wait_for(lambda: seeded.fetchval(IS_WAITING, app_pid), what="the app's commit queued")
        # It waits for the admin's transaction, and for nothing else.
        blocker = await seeded.fetchval("SELECT pg_blocking_pids($1)", app_pid)
        assert blocker == [admin.get_server_pid()]
        await long_one.commit()
        await asyncio.wait_for(committing, 10)
    finally:
        await admin.close()
        await app.close()
    for user in users:
        expected = 3 + 1 + 1 + (1 if user == "u1" else 0)  # seed 3, app, admin, app again
        assert await version_of(seeded, user) == expected
    order = await seeded.fetch(
        "SELECT version, committed_at FROM statebus.history WHERE user_id = 'u1' ORDER BY version"
    )
    assert [r["committed_at"] for r in order] == sorted(r["committed_at"] for r in order)


async def test_set_constraints_immediate_still_gives_one_version(
    seeded: asyncpg.Connection, notes: Notifications
) -> None:
    await add_users(seeded, "u1", "u2")
    async with seeded.transaction():
        await seeded.execute("SET CONSTRAINTS ALL IMMEDIATE")
        await seeded.execute(USAGE, "u1")
        await seeded.execute(SYSTEM, "u1")
        await seeded.execute(USAGE, "u2")
        await seeded.execute("SET CONSTRAINTS ALL DEFERRED")
        await seeded.execute(SYSTEM, "u2")
    await notes.sync(seeded)
    assert await version_of(seeded, "u1") == 4
    assert await version_of(seeded, "u2") == 4
    assert [n.version for n in notes.for_user("u2")][-1:] == [4]


async def test_savepoint_rollback_drops_its_users_and_keeps_the_others(
    seeded: asyncpg.Connection,
) -> None:
    await add_users(seeded, "u1", "u2", "u3", "u4")
    # The transaction's first captured statement inside a rolled-back savepoint: the
    # commit step it queued goes with it, and the next statement queues another.
    async with seeded.transaction():
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with seeded.transaction():
                await seeded.execute(USAGE, "u1")
                await seeded.execute("SELECT 1/0")
        await seeded.execute(SYSTEM, "u2")
    # Users collected before the savepoint stay; those collected inside it go.
    async with seeded.transaction():
        await seeded.execute(USAGE, "u3")
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with seeded.transaction():
                await seeded.execute(USAGE, "u4")
                await seeded.execute("SELECT 1/0")
    # A whole rollback gives nothing.
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with seeded.transaction():
            await seeded.execute(USAGE, "u4")
            await seeded.execute("SELECT 1/0")
    versions = {u: await version_of(seeded, u) for u in ("u1", "u2", "u3", "u4")}
    assert versions == {"u1": 3, "u2": 4, "u3": 4, "u4": 3}
    assert await seeded.fetchval("SELECT count(*) FROM statebus.commit_hook") == 0
