"""The capture's separate paths: one user or many, first write or not, keys that move.

The capture bumps existing version rows with a plain UPDATE and sends only the users it
could not bump that way (first writes, users the transaction already bumped) through
an upsert; it reads users off old and new rows differently depending on the table's
primary key. Each combination must still give exactly one version per user per
transaction.
"""

from __future__ import annotations

import asyncpg
import pytest

from tests.helpers import (
    Notifications,
    add_user,
    commit_while_second_waits,
    state_of,
    version_of,
)

pytestmark = pytest.mark.asyncio


async def versions(conn: asyncpg.Connection, users: list[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT user_id, version FROM statebus.versions WHERE user_id = ANY ($1)", users
    )
    return {r["user_id"]: r["version"] for r in rows}


async def history(conn: asyncpg.Connection, user_id: str) -> list[int]:
    rows = await conn.fetch(
        "SELECT version FROM statebus.history WHERE user_id = $1 ORDER BY version", user_id
    )
    return [r["version"] for r in rows]


async def test_one_statement_over_new_and_known_users_versions_each_once(
    seeded: asyncpg.Connection, notes: Notifications
) -> None:
    await add_user(seeded, "known")  # version 1
    # A tracked table without a foreign key to users: its rows can name users nothing
    # has versioned yet. One statement reaches a known user and two unseen ones.
    await seeded.execute("CREATE TABLE public.notes (id bigint PRIMARY KEY, owner text, body text)")
    await seeded.execute("SELECT statebus.track('public.notes', 'owner', 'notes')")
    await seeded.execute(
        "INSERT INTO public.notes (id, owner, body)"
        " SELECT i, u, 'hi' FROM unnest(ARRAY['known', 'fresh1', 'fresh2']) WITH ORDINALITY AS x (u, i)"
    )
    await notes.sync(seeded)
    assert await versions(seeded, ["known", "fresh1", "fresh2"]) == {
        "known": 2,
        "fresh1": 1,
        "fresh2": 1,
    }
    assert await history(seeded, "known") == [1, 2]
    assert [n.version for n in notes.for_user("fresh2")][-1] == 1
    assert [n.version for n in notes.for_user("known")] == [1, 2]


async def test_a_bulk_statement_after_a_single_one_counts_the_transaction_once(
    seeded: asyncpg.Connection, notes: Notifications
) -> None:
    for user in ("a", "b", "c"):
        await add_user(seeded, user)
    async with seeded.transaction():
        await seeded.execute(
            "UPDATE user_subscriptions SET status = 'past_due' WHERE user_id = 'a'"
        )
        await seeded.execute(
            "INSERT INTO user_system_data (user_id, onboarding_completed)"
            " SELECT u, true FROM unnest(ARRAY['a', 'b', 'c']) u"
        )
        await seeded.execute("UPDATE user_system_data SET onboarding_completed = false")
    await notes.sync(seeded)
    assert await versions(seeded, ["a", "b", "c"]) == {"a": 2, "b": 2, "c": 2}
    for user in ("a", "b", "c"):
        assert await history(seeded, user) == [1, 2]
        assert [n.version for n in notes.for_user(user)] == [1, 2]
    assert (await state_of(seeded, "a"))["subscription"]["status"] == "past_due"


async def test_a_row_moved_to_another_user_versions_both(
    seeded: asyncpg.Connection, notes: Notifications
) -> None:
    """user_usage's key holds the user (a move is a new key); user_system_data's key is
    the user alone; a tracked table keyed by its own id holds the user in a plain column."""
    for user in ("from", "to"):
        await add_user(seeded, user)
    await seeded.execute(
        "INSERT INTO user_usage (user_id, metric, used) VALUES ('from', 'posts', 3)"
    )
    await seeded.execute("UPDATE user_usage SET user_id = 'to' WHERE user_id = 'from'")
    assert await versions(seeded, ["from", "to"]) == {"from": 3, "to": 2}
    assert (await state_of(seeded, "to"))["usage"]["posts"]["used"] == 3
    assert (await state_of(seeded, "from"))["usage"] == {}

    await seeded.execute(
        "INSERT INTO user_system_data (user_id, onboarding_completed) VALUES ('from', true)"
    )
    await seeded.execute("UPDATE user_system_data SET user_id = 'to' WHERE user_id = 'from'")
    assert await versions(seeded, ["from", "to"]) == {"from": 5, "to": 3}

    await seeded.execute("CREATE TABLE public.notes (id bigint PRIMARY KEY, owner text, body text)")
    await seeded.execute("SELECT statebus.track('public.notes', 'owner', 'notes')")
    await seeded.execute("INSERT INTO public.notes VALUES (1, 'from', 'hello')")
    before = await versions(seeded, ["from", "to"])
    await seeded.execute("UPDATE public.notes SET owner = 'to' WHERE id = 1")
    after = await versions(seeded, ["from", "to"])
    assert after == {"from": before["from"] + 1, "to": before["to"] + 1}
    assert (await state_of(seeded, "to"))["notes"][0]["body"] == "hello"
    # Writing the same values again changes nothing, on every kind of key.
    await seeded.execute("UPDATE public.notes SET owner = owner")
    await seeded.execute("UPDATE user_usage SET used = used")
    await seeded.execute("UPDATE user_system_data SET onboarding_completed = onboarding_completed")
    await notes.sync(seeded)
    assert await versions(seeded, ["from", "to"]) == after


async def test_concurrent_first_writes_of_one_user_get_versions_one_and_two(
    seeded: asyncpg.Connection, dsn: str
) -> None:
    # Two tracked tables without foreign keys: both writers are the user's first.
    for table in ("notes", "pins"):
        await seeded.execute(f"CREATE TABLE public.{table} (id bigint PRIMARY KEY, owner text)")
        await seeded.execute(f"SELECT statebus.track('public.{table}', 'owner', '{table}')")
    await commit_while_second_waits(
        dsn,
        seeded,
        "INSERT INTO public.notes (id, owner) VALUES (1, 'racer')",
        "INSERT INTO public.pins (id, owner) VALUES (1, 'racer')",
        what="the second first-writer waiting on the first one's version row",
    )
    assert await version_of(seeded, "racer") == 2
    assert await history(seeded, "racer") == [1, 2]
