"""`statebus migrate`: numbered migrations, then the trigger files, under one advisory lock.

Each migration runs in its own transaction and is recorded with its checksum; an
applied migration whose file changed afterwards is refused, not silently skipped.
The files of sql/triggers/ are CREATE OR REPLACE scripts, re-applied (in one
transaction) whenever their combined checksum changes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import asyncpg

from statebus import sqlfiles


class MigrationError(Exception):
    pass


@dataclass
class MigrationReport:
    applied: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    routines_applied: bool = False
    demo_seeded: bool = False


async def _repair(conn: asyncpg.Connection, migration: sqlfiles.Migration, applied: str) -> None:
    """A migration file edited after a database applied it: known earlier edits have a
    repair (sql/repairs/) that makes the database what today's file makes; the rest are
    refused with what to do (docs/upgrading.md)."""
    name = f"{migration.version:04d}_{migration.name}"
    repair = sqlfiles.repair(migration, applied)
    if repair is None:
        raise MigrationError(
            f"migration {name} was changed after it was applied (this database recorded "
            f"checksum {applied[:8]}, this release has {migration.checksum[:8]}) and no "
            "repair is known for that version: upgrade through the release that created "
            "this database, or restore a backup; see docs/upgrading.md"
        )
    async with conn.transaction():
        await conn.execute(repair)
        await conn.execute(
            sqlfiles.queries()["repair_migration"], migration.version, migration.checksum
        )


async def migrate(conn: asyncpg.Connection, *, demo: bool = False) -> MigrationReport:
    """Brings the database to the latest schema; safe to run from several processes at once."""
    queries = sqlfiles.queries()
    report = MigrationReport()
    await conn.execute(queries["migration_lock"])
    try:
        await conn.execute(sqlfiles.read("bootstrap.sql"))
        applied = {
            row["version"]: row["checksum"]
            for row in await conn.fetch(queries["applied_migrations"])
        }
        for migration in sqlfiles.migrations():
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    await _repair(conn, migration, applied[migration.version])
                    report.repaired.append(f"{migration.version:04d}_{migration.name}")
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    queries["record_migration"],
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            report.applied.append(f"{migration.version:04d}_{migration.name}")

        routines = sqlfiles.routines()
        checksum = hashlib.sha256(
            "".join(name + sql for name, sql in routines).encode()
        ).hexdigest()
        if report.applied or await conn.fetchval(queries["routines_checksum"]) != checksum:
            async with conn.transaction():
                for _name, sql in routines:
                    await conn.execute(sql)
                await conn.execute(queries["record_routines"], checksum)
            report.routines_applied = True

        if demo:
            async with conn.transaction():
                await conn.execute(sqlfiles.read("demo.sql"))
            report.demo_seeded = True
    finally:
        await conn.execute(queries["migration_unlock"])
    return report
