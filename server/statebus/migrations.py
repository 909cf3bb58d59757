"""`statebus migrate`: numbered migrations, then the trigger files, under one table lock.

Everything runs in one transaction holding a lock on statebus.schema_migrations; each
migration is recorded with its checksum, and an applied migration whose file changed
afterwards is refused, not silently skipped. The files of sql/triggers/ are CREATE OR
REPLACE scripts, re-applied whenever their combined checksum changes, except by a release
older than the database: one that finds migrations it does not know leaves the newer
release's functions in place (an old process restarting during a rolling deploy must not
put its own versions back; docs/upgrading.md). The lock is a table's, not an advisory
lock, so no other database role can take it (docs/security.md).
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
    # Migrations applied by a newer release, unknown to this one ("0012_name").
    newer: list[str] = field(default_factory=list)
    demo_seeded: bool = False


# How long `statebus migrate` waits for a lock (another migrate, or a session holding one
# of the tables a migration alters) before failing with the holders named.
LOCK_TIMEOUT_SECONDS = 60.0
BOOTSTRAP_ATTEMPTS = 5


async def migrate(
    conn: asyncpg.Connection, *, demo: bool = False, lock_timeout: float = LOCK_TIMEOUT_SECONDS
) -> MigrationReport:
    """Brings the database to the latest schema; safe to run from several processes at once.

    Runs in one transaction holding a lock on statebus.schema_migrations (made by
    bootstrap.sql, which any migrate runs first), so a failing migration leaves nothing
    half-applied and a second migrate waits for the first. Every lock wait is bounded by
    `lock_timeout`; past it, MigrationError names the sessions holding the tables."""
    queries = sqlfiles.queries()
    timeout_ms = max(1, round(lock_timeout * 1000))
    await _bootstrap(conn, timeout_ms)
    try:
        async with conn.transaction():
            await conn.execute(queries["set_lock_timeout"], timeout_ms)
            await conn.execute(queries["migration_lock"])
            return await _apply(conn, demo)
    except asyncpg.LockNotAvailableError:
        holders = await conn.fetch(queries["lock_holders"])
        raise MigrationError(_held_by(lock_timeout, holders)) from None


async def _bootstrap(conn: asyncpg.Connection, timeout_ms: int) -> None:
    """Schema statebus and its bookkeeping tables (IF NOT EXISTS). Two first migrates
    racing may both try to create them: the loser sees the winner's and runs again."""
    for attempt in range(BOOTSTRAP_ATTEMPTS):
        try:
            async with conn.transaction():
                await conn.execute(sqlfiles.queries()["set_lock_timeout"], timeout_ms)
                await conn.execute(sqlfiles.read("bootstrap.sql"))
            return
        except (asyncpg.UniqueViolationError, asyncpg.DuplicateObjectError):
            if attempt == BOOTSTRAP_ATTEMPTS - 1:
                raise


def _held_by(lock_timeout: float, holders: list[asyncpg.Record]) -> str:
    sessions = "; ".join(
        f"pid {row['pid']} (role {row['role']}, application {row['application_name'] or '-'},"
        f" {row['state']}, transaction since {row['xact_start']}) holds {row['locks']}"
        for row in holders
    )
    return (
        f"a lock migrate needs stayed held for {lock_timeout:g} s"
        f"{': ' + sessions if sessions else ''}; end that session"
        " (SELECT pg_terminate_backend(pid)) or wait, then run statebus migrate again"
    )


async def _repair(conn: asyncpg.Connection, migration: sqlfiles.Migration, applied: str) -> None:
    """A migration file edited after a database applied it: known earlier edits have a
    repair (sql/repairs/) that makes the database what today's file makes; the rest are
    refused with what to do (docs/upgrading.md). Runs inside migrate's transaction."""
    name = f"{migration.version:04d}_{migration.name}"
    repair = sqlfiles.repair(migration, applied)
    if repair is None:
        raise MigrationError(
            f"migration {name} was changed after it was applied (this database recorded "
            f"checksum {applied[:8]}, this release has {migration.checksum[:8]}) and no "
            "repair is known for that version: upgrade through the release that created "
            "this database, or restore a backup; see docs/upgrading.md"
        )
    await conn.execute(repair)
    await conn.execute(
        sqlfiles.queries()["repair_migration"], migration.version, migration.checksum
    )


async def newer_release_migrated(conn: asyncpg.Connection) -> bool:
    """Whether a release newer than this one has migrated the database (it applied a
    migration this release does not know). A new notification format ships with a
    migration (docs/upgrading.md), so a payload this release cannot read comes from a
    newer release only when this is true; otherwise some role sent it with NOTIFY."""
    known = {migration.version for migration in sqlfiles.migrations()}
    rows = await conn.fetch(sqlfiles.queries()["applied_migrations"], timeout=5)
    return any(row["version"] not in known for row in rows)


async def _apply(conn: asyncpg.Connection, demo: bool) -> MigrationReport:
    queries = sqlfiles.queries()
    report = MigrationReport()
    rows = await conn.fetch(queries["applied_migrations"])
    applied = {row["version"]: row["checksum"] for row in rows}
    known = {migration.version for migration in sqlfiles.migrations()}
    report.newer = [f"{r['version']:04d}_{r['name']}" for r in rows if r["version"] not in known]
    for migration in sqlfiles.migrations():
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                await _repair(conn, migration, applied[migration.version])
                report.repaired.append(f"{migration.version:04d}_{migration.name}")
            continue
        await conn.execute(migration.sql)
        await conn.execute(
            queries["record_migration"], migration.version, migration.name, migration.checksum
        )
        report.applied.append(f"{migration.version:04d}_{migration.name}")

    routines = sqlfiles.routines()
    checksum = hashlib.sha256("".join(name + sql for name, sql in routines).encode()).hexdigest()
    if report.newer:
        pass  # the newer release's functions serve this one too (expand, then contract)
    elif report.applied or await conn.fetchval(queries["routines_checksum"]) != checksum:
        for _name, sql in routines:
            await conn.execute(sql)
        await conn.execute(queries["record_routines"], checksum)
        report.routines_applied = True

    if demo:
        await conn.execute(sqlfiles.read("demo.sql"))
        report.demo_seeded = True
    return report
