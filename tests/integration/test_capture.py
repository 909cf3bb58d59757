"""The database half: every committed transaction gives each touched user one version."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from statebus import sqlfiles
from tests.helpers import (
    Notifications,
    add_user,
    commit_while_second_waits,
    state_of,
    version_of,
    wait_for,
)

pytestmark = pytest.mark.asyncio


async def test_user_starts_at_version_zero_with_null_state(seeded: asyncpg.Connection) -> None:
    row = await seeded.fetchrow(sqlfiles.queries()["envelopes"], ["user_nobody"])
    assert row is not None
    assert dict(row) == {
        "user_id": "user_nobody",
        "version": 0,
        "committed_at": None,
        "source": None,
        "state": None,
    }


async def test_one_transaction_over_two_tables_gives_one_version(
    seeded: asyncpg.Connection, notes: Notifications
) -> None:
    await add_user(seeded, "u1")
    assert await version_of(seeded, "u1") == 1
    async with seeded.transaction():
        await seeded.execute(
            "UPDATE user_subscriptions SET plan = 'viral_surge' WHERE user_id = 'u1'"
        )
        await seeded.execute(
            "INSERT INTO user_usage (user_id, metric, used) VALUES ('u1', 'posts', 5)"
        )
        await seeded.execute("UPDATE user_usage SET used = used + 1 WHERE user_id = 'u1'")
    await notes.sync(seeded)
    assert await version_of(seeded, "u1") == 2
    state = await state_of(seeded, "u1")
    assert state["plan"]["code"] == "viral_surge"
    assert state["usage"]["posts"]["used"] == 6  # the state as of commit, not mid-transaction
    assert [n.version for n in notes.for_user("u1")] == [1, 2]


async def test_document_shape_hides_stripe_ids(seeded: asyncpg.Connection) -> None:
    await add_user(seeded, "u1")
    await seeded.execute(
        "INSERT INTO user_billing (user_id, stripe_customer_id) VALUES ('u1', 'cus_secret')"
    )
    await seeded.execute("UPDATE user_subscriptions SET stripe_subscription_id = 'sub_secret'")
    await seeded.execute(
        "INSERT INTO user_system_data (user_id, onboarding_completed) VALUES ('u1', true)"
    )
    state = await state_of(seeded, "u1")
    assert set(state) == {"plan", "subscription", "billing", "usage", "system"}
    assert state["plan"] == {
        "code": "glow_up",
        "name": "Glow Up",
        "rank": 1,
        "limits": {"seats": 3},
    }
    assert state["subscription"]["status"] == "active"
    assert state["billing"] == {"has_stripe_customer": True}
    assert state["system"] == {"onboarding_completed": True}
    assert "cus_secret" not in json.dumps(state) and "sub_secret" not in json.dumps(state)


async def test_rollback_gives_nothing(seeded: asyncpg.Connection, notes: Notifications) -> None:
    await add_user(seeded, "u1")
    tx = seeded.transaction()
    await tx.start()
    await seeded.execute("UPDATE user_subscriptions SET plan = 'viral_surge'")
    await tx.rollback()
    await notes.sync(seeded)
    assert await version_of(seeded, "u1") == 1
    assert [n.version for n in notes.for_user("u1")] == [1]


async def test_rolled_back_savepoint_leaves_no_version(seeded: asyncpg.Connection) -> None:
    await add_user(seeded, "u1")
    async with seeded.transaction():
        await seeded.execute("INSERT INTO users (id, email) VALUES ('u2', 'u2@example.com')")
        try:
            async with seeded.transaction():  # a savepoint
                await seeded.execute("UPDATE user_subscriptions SET plan = 'viral_surge'")
                raise RuntimeError("abandon the savepoint")
        except RuntimeError:
            pass
    assert await version_of(seeded, "u1") == 1  # its only change was rolled back
    assert await version_of(seeded, "u2") == 1


async def test_write_that_changes_nothing_gives_no_version(
    seeded: asyncpg.Connection, notes: Notifications
) -> None:
    await add_user(seeded, "u1")
    await seeded.execute("UPDATE user_subscriptions SET plan = plan, status = 'active'")
    assert await version_of(seeded, "u1") == 1
    await seeded.execute(
        "UPDATE user_subscriptions SET current_period_end = '2030-01-01 00:00:00+00'"
    )
    # A session in another time zone writes the same instant: still no change.
    await seeded.execute("SET TimeZone = 'Asia/Tokyo'")
    await seeded.execute(
        "UPDATE user_subscriptions SET current_period_end = '2030-01-01 09:00:00+09'"
    )
    await notes.sync(seeded)
    assert await version_of(seeded, "u1") == 2
    assert [n.version for n in notes.for_user("u1")] == [1, 2]


async def test_timestamps_are_rendered_in_utc(seeded: asyncpg.Connection) -> None:
    await add_user(seeded, "u1")
    await seeded.execute("SET TimeZone = 'America/New_York'")
    await seeded.execute(
        "UPDATE user_subscriptions SET current_period_end = '2030-01-02 03:04:05+00'"
    )
    state = await state_of(seeded, "u1")
    assert state["subscription"]["current_period_end"] == "2030-01-02T03:04:05+00:00"


async def test_deleting_a_user_gives_a_final_null_version_and_numbers_continue(
    seeded: asyncpg.Connection,
) -> None:
    await add_user(seeded, "u1")
    await seeded.execute("INSERT INTO user_usage (user_id, metric, used) VALUES ('u1', 'posts', 1)")
    await seeded.execute("DELETE FROM users WHERE id = 'u1'")  # cascades to every table
    assert await version_of(seeded, "u1") == 3
    assert await state_of(seeded, "u1") is None
    await add_user(seeded, "u1")
    assert await version_of(seeded, "u1") == 4
    assert (await state_of(seeded, "u1"))["plan"]["code"] == "glow_up"


async def test_database_rejects_bad_values_clearly(seeded: asyncpg.Connection) -> None:
    await seeded.execute("INSERT INTO users (id, email) VALUES ('u1', 'a@b.c')")
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="plans"):
        await seeded.execute(
            "INSERT INTO user_subscriptions (user_id, plan, status) VALUES ('u1', 'gold', 'active')"
        )
    with pytest.raises(asyncpg.CheckViolationError, match="user_usage_used_not_negative"):
        await seeded.execute(
            "INSERT INTO user_usage (user_id, metric, used) VALUES ('u1', 'posts', -1)"
        )
    with pytest.raises(asyncpg.CheckViolationError, match="status"):
        await seeded.execute(
            "INSERT INTO user_subscriptions (user_id, plan, status) VALUES ('u1', 'free', 'bogus')"
        )
    assert await version_of(seeded, "u1") == 1


async def test_plan_change_reversions_its_users_only(seeded: asyncpg.Connection) -> None:
    await add_user(seeded, "u1", "glow_up")
    await add_user(seeded, "u2", "free")
    await seeded.execute("UPDATE plans SET limits = '{\"seats\": 5}' WHERE code = 'glow_up'")
    await seeded.execute("UPDATE plans SET name = name")  # no change at all
    assert await version_of(seeded, "u1") == 2
    assert (await state_of(seeded, "u1"))["plan"]["limits"] == {"seats": 5}
    assert await version_of(seeded, "u2") == 1


async def test_truncate_is_captured(seeded: asyncpg.Connection) -> None:
    await add_user(seeded, "u1")
    await seeded.execute("INSERT INTO user_usage (user_id, metric, used) VALUES ('u1', 'posts', 3)")
    await seeded.execute("TRUNCATE user_usage")
    assert await version_of(seeded, "u1") == 3
    assert (await state_of(seeded, "u1"))["usage"] == {}


async def test_source_names_the_writer(seeded: asyncpg.Connection, dsn: str) -> None:
    await add_user(seeded, "u1")
    async with seeded.transaction():
        await seeded.execute("SET LOCAL statebus.source = 'stripe_webhook'")
        await seeded.execute("UPDATE user_subscriptions SET status = 'past_due'")
    admin = await asyncpg.connect(dsn, server_settings={"application_name": "psql"})
    try:
        await admin.execute("UPDATE user_subscriptions SET status = 'active'")
    finally:
        await admin.close()
    rows = await seeded.fetch(
        "SELECT version, source, committed_at FROM statebus.history"
        " WHERE user_id = 'u1' ORDER BY version"
    )
    assert [r["source"] for r in rows[1:]] == ["stripe_webhook", "sql"]
    actors = await seeded.fetch(
        "SELECT actor FROM statebus.history WHERE user_id = 'u1' ORDER BY version"
    )
    # The role stays in the database for operators; clients only ever see "sql".
    assert actors[-1]["actor"] == f"{await seeded.fetchval('SELECT session_user')}/psql"
    assert rows[1]["committed_at"] <= rows[2]["committed_at"]


async def test_concurrent_writers_get_distinct_versions_in_commit_order(
    seeded: asyncpg.Connection, dsn: str
) -> None:
    await seeded.execute(
        "UPDATE statebus.settings SET value = 'on' WHERE name = 'history_documents'"
    )
    await add_user(seeded, "u1")
    # Different tables, so no row lock between them but the user's version row:
    # the second writer waits there for the first to commit.
    await commit_while_second_waits(
        dsn,
        seeded,
        "INSERT INTO user_usage (user_id, metric, used) VALUES ('u1', 'posts', 7)",
        "INSERT INTO user_system_data (user_id, onboarding_completed) VALUES ('u1', true)",
        what="the second writer waiting for the first",
    )
    rows = await seeded.fetch(
        "SELECT version, state FROM statebus.history WHERE user_id = 'u1' ORDER BY version"
    )
    assert [r["version"] for r in rows] == [1, 2, 3]
    second_state, third = json.loads(rows[1]["state"]), json.loads(rows[2]["state"])
    assert second_state["usage"]["posts"]["used"] == 7 and second_state["system"] is None
    # The later commit's snapshot includes the earlier commit's change: nothing lost.
    assert third["usage"]["posts"]["used"] == 7 and third["system"]["onboarding_completed"] is True
    assert await state_of(seeded, "u1") == third


async def test_many_concurrent_writers_end_consistent(seeded: asyncpg.Connection, dsn: str) -> None:
    await add_user(seeded, "u1")
    await seeded.execute(
        "INSERT INTO user_usage (user_id, metric, used) VALUES ('u1', 'a', 0), ('u1', 'b', 0)"
    )

    async def bump(metric: str, times: int) -> None:
        c = await asyncpg.connect(dsn)
        try:
            for _ in range(times):
                await c.execute(
                    "UPDATE user_usage SET used = used + 1 WHERE user_id = 'u1' AND metric = $1",
                    metric,
                )
        finally:
            await c.close()

    await asyncio.gather(bump("a", 40), bump("b", 40))
    state = await state_of(seeded, "u1")
    assert state["usage"]["a"]["used"] == 40 and state["usage"]["b"]["used"] == 40
    assert await version_of(seeded, "u1") == 2 + 80
    gaps = await seeded.fetchval(
        "SELECT count(*) FROM (SELECT version - lag(version) OVER (ORDER BY version) AS d "
        "FROM statebus.history WHERE user_id = 'u1') s WHERE d <> 1"
    )
    assert gaps == 0


async def test_prune_keeps_each_users_latest(seeded: asyncpg.Connection) -> None:
    await add_user(seeded, "u1")
    await seeded.execute("UPDATE user_subscriptions SET status = 'past_due'")
    await seeded.execute(
        "UPDATE statebus.settings SET value = '0 seconds' WHERE name = 'history_retention'"
    )
    assert await seeded.fetchval(sqlfiles.queries()["prune_history"]) == 1
    versions = await seeded.fetch("SELECT version FROM statebus.history WHERE user_id = 'u1'")
    assert [r["version"] for r in versions] == [2]


async def test_server_prunes_history_on_its_own(seeded: asyncpg.Connection, dsn: str) -> None:
    from statebus.maintenance import prune_forever

    await add_user(seeded, "u1")
    await seeded.execute("UPDATE user_subscriptions SET status = 'past_due'")
    await seeded.execute(
        "UPDATE statebus.settings SET value = '0 seconds' WHERE name = 'history_retention'"
    )
    async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
        pruning = asyncio.create_task(prune_forever(pool, interval=0.05))

        async def only_latest_left() -> bool:
            count = await seeded.fetchval("SELECT count(*) FROM statebus.history")
            return bool(count == 1)

        try:
            await wait_for(only_latest_left, what="history pruned to the latest version")
        finally:
            pruning.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pruning
    assert await version_of(seeded, "u1") == 2


async def test_a_writer_role_without_statebus_privileges_is_captured(
    seeded: asyncpg.Connection, dsn: str
) -> None:
    """The host app's own role needs rights on its tables only, not on schema statebus."""
    role = f"app_writer_{uuid.uuid4().hex[:8]}"
    await add_user(seeded, "u1")
    await seeded.execute(f"CREATE ROLE {role} LOGIN")
    try:
        await seeded.execute(f"GRANT SELECT, UPDATE ON user_subscriptions TO {role}")
        app = await asyncpg.connect(dsn, user=role)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await app.fetch("SELECT * FROM statebus.history")
            await app.execute("UPDATE user_subscriptions SET status = 'past_due'")
        finally:
            await app.close()
        row = await seeded.fetchrow(
            "SELECT h.version, h.source, h.actor FROM statebus.history h"
            " WHERE user_id = 'u1' ORDER BY version DESC LIMIT 1"
        )
        assert row is not None and (row["version"], row["source"], row["actor"]) == (
            2,
            "sql",
            role,
        )
    finally:
        await seeded.execute(f"DROP OWNED BY {role}")
        await seeded.execute(f"DROP ROLE {role}")


async def test_immediate_constraints_still_give_one_version_and_lose_none(
    seeded: asyncpg.Connection,
) -> None:
    await add_user(seeded, "u1")
    async with seeded.transaction():
        await seeded.execute("SET CONSTRAINTS ALL IMMEDIATE")
        await seeded.execute("UPDATE user_subscriptions SET status = 'past_due'")
        await seeded.execute("UPDATE user_subscriptions SET plan = 'viral_surge'")
    state = await state_of(seeded, "u1")
    assert state["plan"]["code"] == "viral_surge"  # the last statement is not lost
    assert state["subscription"]["status"] == "past_due"
    # Capture no longer waits for commit: still one version for the transaction.
    assert await version_of(seeded, "u1") == 2
