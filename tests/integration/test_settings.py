"""statebus.settings: history_rows turns the per-version history row off and on, and
every setting refuses a value it cannot use, when it is written."""

from __future__ import annotations

import asyncpg
import pytest

from tests.helpers import Notifications, add_user, version_of

pytestmark = pytest.mark.asyncio


async def history(conn: asyncpg.Connection, user_id: str) -> list[int]:
    rows = await conn.fetch(
        "SELECT version FROM statebus.history WHERE user_id = $1 ORDER BY version", user_id
    )
    return [r["version"] for r in rows]


async def set_setting(conn: asyncpg.Connection, name: str, value: str) -> None:
    await conn.execute("UPDATE statebus.settings SET value = $2 WHERE name = $1", name, value)


async def test_defaults_keep_a_history_row_without_documents(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch("SELECT name, value FROM statebus.settings ORDER BY name")
    assert {r["name"]: r["value"] for r in rows} == {
        "history_documents": "off",
        "history_retention": "30 days",
        "history_rows": "on",
        "stripe_events_retention": "30 days",
    }


async def test_history_rows_off_still_versions_and_notifies_every_commit(
    seeded: asyncpg.Connection, notes: Notifications
) -> None:
    await add_user(seeded, "a")  # version 1, with its history row
    await set_setting(seeded, "history_rows", "off")
    # Every path of the capture: one known user, a first write, and a bulk statement.
    await seeded.execute("UPDATE user_subscriptions SET status = 'past_due' WHERE user_id = 'a'")
    await add_user(seeded, "b")
    await seeded.execute(
        "INSERT INTO user_usage (user_id, metric, used)"
        " SELECT u, 'posts', 1 FROM unnest(ARRAY['a', 'b']) u"
    )
    await notes.sync(seeded)
    assert [await version_of(seeded, u) for u in ("a", "b")] == [3, 2]
    assert [n.version for n in notes.for_user("a")] == [1, 2, 3]
    assert [n.version for n in notes.for_user("b")] == [1, 2]
    assert await history(seeded, "a") == [1]
    assert await history(seeded, "b") == []

    await set_setting(seeded, "history_rows", "on")
    await seeded.execute("UPDATE user_usage SET used = 2 WHERE user_id = 'b'")
    assert await history(seeded, "b") == [3]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("history_rows", "yes", "history_rows must be on or off"),
        ("history_documents", "ON", "history_documents must be on or off"),
        ("history_retention", "forever", "history_retention must be an interval"),
        ("history_retention", "-1 day", "history_retention must be an interval"),
        ("history_retention", "", "history_retention must be an interval"),
    ],
)
async def test_a_bad_value_is_refused_with_what_is_allowed(
    conn: asyncpg.Connection, name: str, value: str, message: str
) -> None:
    before = await conn.fetchval("SELECT value FROM statebus.settings WHERE name = $1", name)
    with pytest.raises(asyncpg.InvalidParameterValueError, match=message):
        await set_setting(conn, name, value)
    assert (
        await conn.fetchval("SELECT value FROM statebus.settings WHERE name = $1", name) == before
    )


async def test_documents_need_history_rows(conn: asyncpg.Connection) -> None:
    await set_setting(conn, "history_documents", "on")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="needs history_rows = on"):
        await set_setting(conn, "history_rows", "off")
    await set_setting(conn, "history_documents", "off")
    await set_setting(conn, "history_rows", "off")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="needs history_rows = on"):
        await set_setting(conn, "history_documents", "on")


async def test_unknown_names_and_deletes_are_refused(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError, match="unknown statebus setting"):
        await conn.execute(
            "INSERT INTO statebus.settings (name, value) VALUES ('history_row', 'off')"
        )
    with pytest.raises(asyncpg.InvalidParameterValueError, match="cannot be deleted"):
        await conn.execute("DELETE FROM statebus.settings WHERE name = 'history_retention'")
    assert await conn.fetchval("SELECT count(*) FROM statebus.settings") == 4
