"""The 100,000-user admin UPDATE: one version per user, from one set-based bump."""

from __future__ import annotations

import time

import asyncpg
import pytest

from tests.helpers import seed_plans

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

USERS = 100_000


async def test_bulk_update_gives_each_user_exactly_one_version(conn: asyncpg.Connection) -> None:
    await seed_plans(conn)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO users (id, email) SELECT 'bulk_' || i, 'b' || i || '@example.com'"
            " FROM generate_series(1, $1) i",
            USERS,
        )
        await conn.execute(
            "INSERT INTO user_subscriptions (user_id, plan, status)"
            " SELECT id, 'glow_up', 'active' FROM users"
        )
    assert await conn.fetchval("SELECT count(*) FROM statebus.versions WHERE version = 1") == USERS

    started = time.monotonic()
    updated = await conn.execute(
        "UPDATE user_subscriptions SET plan = 'viral_surge' WHERE plan = 'glow_up'"
    )
    elapsed = time.monotonic() - started
    print(f"\n100,000-user UPDATE with capture: {elapsed:.2f}s")
    assert updated == f"UPDATE {USERS}"
    row = await conn.fetchrow(
        "SELECT count(*) AS n, min(version) AS lo, max(version) AS hi,"
        " count(*) FILTER (WHERE state->'plan'->>'code' = 'viral_surge') AS surged"
        " FROM statebus.envelopes(ARRAY(SELECT user_id FROM statebus.versions))"
    )
    assert row is not None
    assert (row["n"], row["lo"], row["hi"], row["surged"]) == (USERS, 2, 2, USERS)
    assert await conn.fetchval("SELECT count(*) FROM statebus.history WHERE version = 2") == USERS
