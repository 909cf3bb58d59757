"""Databases of earlier releases whose migration files were edited later upgrade through
a repair (sql/repairs/) instead of being refused; unknown edits are refused with what
to do.

Each drill builds a database as an earlier release left it: that release's schema for
the edited migration, recorded under that release's checksum (the sha256 of the file as
it shipped, e.g. `git show 0a63e0a:sql/migrations/0001_tables.sql | sha256sum`). Then
today's `migrate` runs, and the schema must be exactly a fresh database's.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import asyncpg
import pytest

from statebus import sqlfiles
from statebus.migrations import MigrationError, migrate
from tests.pg import PgServer

# 0001_tables as the first release shipped it: without statebus.dirty and commit_hook.
FIRST_0001 = "5f84acf0fdc41bd82b2f297f7f77d39443c4993de34a56a8e32273cb56fd17db"
# 0001_tables before its first comment line was reworded: the same tables as today.
SECOND_0001 = "8eac681e51f1971181c2762130b4fc68c00103817fe37d11169c8487027d86aa"
# 0003_lean_capture before the BRIN index on history.committed_at was added to it.
FIRST_0003 = "172a93b91451517f693d618c8b7862b2df36972dcb411df429c7b9a871ccd522"

SCHEMA = """
SELECT 'column' AS kind, table_schema || '.' || table_name || '.' || column_name
       || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '') AS what
FROM information_schema.columns WHERE table_schema IN ('public', 'statebus')
UNION ALL
SELECT 'index', schemaname || ' ' || indexdef FROM pg_indexes
WHERE schemaname IN ('public', 'statebus')
UNION ALL
SELECT 'constraint', conrelid::regclass || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
WHERE connamespace IN ('public'::regnamespace, 'statebus'::regnamespace)
ORDER BY 1, 2
"""


def migration(version: int) -> sqlfiles.Migration:
    (found,) = [m for m in sqlfiles.migrations() if m.version == version]
    return found


def without(sql: str, pattern: str) -> str:
    cut, count = re.subn(pattern, "", sql, flags=re.DOTALL)
    assert count, f"today's file no longer has {pattern!r}"
    return cut


@pytest.fixture
async def empty(pg_server: PgServer) -> AsyncIterator[asyncpg.Connection]:
    dsn = await pg_server.create_database(migrated=False)
    conn = await asyncpg.connect(dsn)
    await conn.execute(sqlfiles.read("bootstrap.sql"))
    yield conn
    await conn.close()
    await pg_server.drop_database(dsn)


async def as_released(conn: asyncpg.Connection, version: int, sql: str, checksum: str) -> None:
    m = migration(version)
    async with conn.transaction():
        await conn.execute(sql)
        await conn.execute(
            "INSERT INTO statebus.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            version,
            m.name,
            checksum,
        )


async def schema(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    return [(r["kind"], r["what"]) for r in await conn.fetch(SCHEMA)]


async def test_a_first_release_database_is_repaired_and_migrated(
    empty: asyncpg.Connection, conn: asyncpg.Connection
) -> None:
    first = without(migration(1).sql, r"-- Users touched by transactions.*?-- One row.*?\);\n")
    await as_released(empty, 1, first, FIRST_0001)
    report = await migrate(empty)
    assert report.repaired == ["0001_tables"]
    assert report.applied == [f"{m.version:04d}_{m.name}" for m in sqlfiles.migrations()[1:]]
    assert await schema(empty) == await schema(conn)
    assert (await migrate(empty)).repaired == []  # recorded: nothing to repair again


async def test_a_database_of_the_lean_capture_release_is_repaired(
    empty: asyncpg.Connection, conn: asyncpg.Connection
) -> None:
    await as_released(empty, 1, migration(1).sql, SECOND_0001)
    await as_released(empty, 2, migration(2).sql, migration(2).checksum)
    old_0003 = without(
        migration(3).sql, r"-- Every captured commit inserts here;.*?brin \(committed_at\);\n"
    )
    await as_released(empty, 3, old_0003, FIRST_0003)
    report = await migrate(empty)
    assert report.repaired == ["0001_tables", "0003_lean_capture"]
    assert await schema(empty) == await schema(conn)


async def test_an_unknown_edit_is_refused_with_what_to_do(empty: asyncpg.Connection) -> None:
    await as_released(empty, 1, migration(1).sql, "0" * 64)
    with pytest.raises(MigrationError) as refused:
        await migrate(empty)
    message = str(refused.value)
    assert "0001_tables was changed after it was applied" in message
    assert "docs/upgrading.md" in message and "00000000" in message
