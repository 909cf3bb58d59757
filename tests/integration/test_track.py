"""Notifications name (user_id, version) pairs; any table joins the state with track()."""

from __future__ import annotations

import json

import asyncpg
import pytest

from statebus import sqlfiles
from tests.helpers import Notifications, add_user, state_of, version_of

pytestmark = pytest.mark.asyncio


async def test_notifications_name_versions_never_documents(
    seeded: asyncpg.Connection, notes: Notifications
) -> None:
    await add_user(seeded, "u1")
    await seeded.execute("CREATE TABLE notes (user_id text PRIMARY KEY, body text)")
    await seeded.execute("SELECT statebus.track('notes', user_column => 'user_id', key => 'notes')")
    await seeded.execute("INSERT INTO notes VALUES ('u1', repeat('x', 20000))")
    await notes.sync(seeded)
    assert notes.raw[-1] == '[["u1", 2]]'  # (user_id, version) pairs; any document size
    assert all("xxxx" not in raw for raw in notes.raw)
    row = await seeded.fetchrow(sqlfiles.queries()["envelopes"], ["u1"])
    assert row is not None and row["version"] == 2
    assert len(json.loads(row["state"])["notes"]["body"]) == 20000


async def test_a_bulk_write_is_notified_in_chunks_under_the_payload_limit(
    seeded: asyncpg.Connection, notes: Notifications
) -> None:
    users = [f"user_{n:05d}_{'x' * 40}" for n in range(2000)]
    await seeded.execute(
        "INSERT INTO users (id, email) SELECT u, 'a@b.c' FROM unnest($1::text[]) u", users
    )
    await notes.sync(seeded)
    assert sorted(p.user_id for p in notes.received) == sorted(users)
    assert {p.version for p in notes.received} == {1}
    assert len(notes.raw) > 1 and all(len(raw.encode()) < 8000 for raw in notes.raw)


async def test_track_joins_a_table_and_untrack_removes_it(seeded: asyncpg.Connection) -> None:
    await add_user(seeded, "u1")
    await add_user(seeded, "u2")
    await seeded.execute(
        "CREATE TABLE projects (id serial PRIMARY KEY, owner text NOT NULL, title text)"
    )
    await seeded.execute("INSERT INTO projects (owner, title) VALUES ('u1', 'b'), ('u1', 'a')")
    await seeded.execute(
        "SELECT statebus.track('projects', user_column => 'owner', key => 'projects')"
    )
    # Users with rows get a version carrying the new key at once; others are unchanged.
    assert await version_of(seeded, "u1") == 2
    assert await version_of(seeded, "u2") == 1
    projects = (await state_of(seeded, "u1"))["projects"]
    assert [p["title"] for p in projects] == ["b", "a"]  # primary key order
    assert "owner" not in projects[0]
    await seeded.execute("INSERT INTO projects (owner, title) VALUES ('u2', 'c')")
    assert (await state_of(seeded, "u2"))["projects"][0]["title"] == "c"
    await seeded.execute("SELECT statebus.untrack('projects')")
    assert "projects" not in await state_of(seeded, "u1")
    assert await version_of(seeded, "u1") == 3
    await seeded.execute("INSERT INTO projects (owner, title) VALUES ('u1', 'd')")
    assert await version_of(seeded, "u1") == 3


async def test_track_with_row_key_makes_an_object(seeded: asyncpg.Connection) -> None:
    await add_user(seeded, "u1")
    await seeded.execute(
        "CREATE TABLE flags (user_id text, name text, enabled bool, PRIMARY KEY (user_id, name))"
    )
    await seeded.execute("SELECT statebus.track('flags', key => 'flags', row_key => 'name')")
    await seeded.execute("INSERT INTO flags VALUES ('u1', 'beta', true), ('u1', 'dark', false)")
    assert (await state_of(seeded, "u1"))["flags"] == {
        "beta": {"enabled": True},
        "dark": {"enabled": False},
    }


async def test_track_rejects_bad_arguments(seeded: asyncpg.Connection) -> None:
    await seeded.execute("CREATE TABLE t1 (user_id text)")
    with pytest.raises(asyncpg.UndefinedColumnError, match="no column owner"):
        await seeded.execute("SELECT statebus.track('t1', user_column => 'owner')")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="core state"):
        await seeded.execute("SELECT statebus.track('t1', key => 'plan')")
    with pytest.raises(asyncpg.UndefinedTableError):
        await seeded.execute("SELECT statebus.track('missing_table')")
    await seeded.execute("SELECT statebus.track('t1', key => 'k')")
    await seeded.execute("CREATE TABLE t2 (user_id text)")
    with pytest.raises(asyncpg.UniqueViolationError, match="taken"):
        await seeded.execute("SELECT statebus.track('t2', key => 'k')")
    with pytest.raises(asyncpg.UndefinedObjectError, match="not tracked"):
        await seeded.execute("SELECT statebus.untrack('t2')")
