"""`statebus migrate` on a real server: concurrent, idempotent, and the schema the code expects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from statebus import sqlfiles
from statebus.migrations import MigrationError, migrate
from tests.pg import PgServer

pytestmark = pytest.mark.asyncio

# The contract's tables (section 3) with the columns other programs rely on.
EXPECTED_COLUMNS = {
    "plans": {"code", "name", "stripe_price_id", "rank", "limits", "limit_labels"},
    "users": {"id", "email"},
    "user_subscriptions": {
        "user_id",
        "plan",
        "status",
        "stripe_subscription_id",
        "current_period_end",
        "cancel_at_period_end",
    },
    "user_billing": {"user_id", "stripe_customer_id"},
    "user_usage": {"user_id", "metric", "used", "period_start"},
    "user_system_data": {"user_id", "onboarding_completed"},
}
EXPECTED_KEYS = {
    "plans": ["code"],
    "users": ["id"],
    "user_subscriptions": ["user_id"],
    "user_billing": ["user_id"],
    "user_usage": ["user_id", "metric"],
    "user_system_data": ["user_id"],
}


@pytest.fixture
async def empty_db(pg_server: PgServer) -> AsyncIterator[str]:
    dsn = await pg_server.create_database(migrated=False)
    yield dsn
    await pg_server.drop_database(dsn)


async def test_concurrent_migrations_apply_each_file_once(empty_db: str) -> None:
    conns = [await asyncpg.connect(empty_db) for _ in range(3)]
    try:
        reports = await asyncio.gather(*(migrate(c) for c in conns))
        applied = [name for report in reports for name in report.applied]
        assert applied == [f"{m.version:04d}_{m.name}" for m in sqlfiles.migrations()]
        again = await migrate(conns[0])
        assert again.applied == [] and not again.routines_applied
    finally:
        for c in conns:
            await c.close()


async def test_schema_is_what_the_code_expects(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public'"
    )
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(row["table_name"], set()).add(row["column_name"])
    for table, columns in EXPECTED_COLUMNS.items():
        assert columns <= found[table], table
    keys = await conn.fetch(
        "SELECT c.relname, array_agg(a.attname ORDER BY k.ord) AS cols"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
        " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord)"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum"
        " WHERE i.indisprimary AND c.relnamespace = 'public'::regnamespace GROUP BY c.relname"
    )
    assert {r["relname"]: list(r["cols"]) for r in keys} == EXPECTED_KEYS
    for function in (
        "track(regclass,name,text,name)",
        "untrack(regclass)",
        "bump(text[])",
        "envelopes(text[])",
    ):
        assert await conn.fetchval("SELECT to_regprocedure($1)", f"statebus.{function}")
    triggers = await conn.fetchval(
        "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'statebus_capture%' AND NOT tgisinternal"
    )
    assert triggers == 5 * 4 + 1  # four events on five user tables, and plans


async def test_changed_migration_is_refused(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "UPDATE statebus.schema_migrations SET checksum = 'edited' WHERE version = 1"
    )
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(conn)


async def test_demo_seed_is_idempotent(conn: asyncpg.Connection) -> None:
    await migrate(conn, demo=True)
    await migrate(conn, demo=True)
    row = await conn.fetchrow(
        "SELECT version, state->'plan'->>'code' AS plan"
        " FROM statebus.envelopes(ARRAY['user_2zRnraoVNDAegfHnci1xUMWybwz'])"
    )
    assert row is not None and (row["version"], row["plan"]) == (1, "glow_up")


async def test_an_older_release_leaves_a_newer_releases_functions_in_place(
    conn: asyncpg.Connection,
) -> None:
    """A database a newer release migrated (a migration unknown here, its own trigger
    files): migrating with this release changes nothing, so an old process restarting
    during a rolling deploy cannot put its versions of the functions back."""
    await conn.execute(
        "INSERT INTO statebus.schema_migrations (version, name, checksum)"
        " VALUES (9999, 'from_the_future', 'x')"
    )
    await conn.execute("UPDATE statebus.schema_routines SET checksum = 'a newer release'")
    await conn.execute(
        "CREATE OR REPLACE FUNCTION statebus.history_switches()"
        " RETURNS TABLE (rows_on boolean, documents_on boolean)"
        " LANGUAGE sql STABLE AS $$ SELECT true, true $$"
    )
    report = await migrate(conn)
    assert report.newer == ["9999_from_the_future"]
    assert (report.applied, report.routines_applied) == ([], False)
    assert await conn.fetchval("SELECT checksum FROM statebus.schema_routines") == (
        "a newer release"
    )
    assert await conn.fetchval("SELECT documents_on FROM statebus.history_switches()")
