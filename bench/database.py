"""One embedded PostgreSQL with two databases holding the same tables and rows.

`bench_statebus` is migrated by `statebus migrate` (a subprocess, as a user would run
it) and seeded in one transaction. `bench_naive` is copied from it as a template, then
loses every statebus object (`DROP SCHEMA statebus CASCADE`: statebus keeps its own
objects in that schema, and its triggers die with their functions) and gains the naive
relay's row trigger. Both therefore start from identical tables, indexes and rows.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench import naive
from bench.procs import Processes
from statebus.embedded import EmbeddedPostgres

STATEBUS_DB, NAIVE_DB = "bench_statebus", "bench_naive"

SEED = """
INSERT INTO plans (code, name, rank, limits) VALUES
    ('bench_free', 'Free', 0, '{"posts_per_month": 10, "seats": 1}'),
    ('bench_pro', 'Pro', 1, '{"posts_per_month": 1000, "seats": 10}')
ON CONFLICT (code) DO NOTHING;
INSERT INTO users (id, email) SELECT 'u' || i, 'u' || i || '@bench.invalid' FROM generate_series(1, $1) i;
INSERT INTO user_subscriptions (user_id, plan, status) SELECT 'u' || i, 'bench_pro', 'active' FROM generate_series(1, $1) i;
INSERT INTO user_usage (user_id, metric, used) SELECT 'u' || i, 'posts', 0 FROM generate_series(1, $1) i;
INSERT INTO user_system_data (user_id, onboarding_completed) SELECT 'u' || i, false FROM generate_series(1, $1) i;
"""
USER_TABLES = ("users", "user_subscriptions", "user_billing", "user_usage", "user_system_data")


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@dataclass
class Databases:
    embedded: EmbeddedPostgres
    admin: str  # the server's `postgres` database
    statebus: str
    naive: str
    server_version: str

    def dsn(self, system: str) -> str:
        return self.statebus if system == "statebus" else self.naive


async def prepare(home: Path, users: int, procs: Processes, env: dict[str, str]) -> Databases:
    embedded = EmbeddedPostgres(home)
    admin = await asyncio.to_thread(embedded.start)
    try:
        return await _prepare(embedded, admin, users, procs, env)
    except BaseException:
        embedded.stop()
        raise


async def _prepare(
    embedded: EmbeddedPostgres, admin: str, users: int, procs: Processes, env: dict[str, str]
) -> Databases:
    dbs = Databases(
        embedded, admin, with_database(admin, STATEBUS_DB), with_database(admin, NAIVE_DB), ""
    )
    conn = await asyncpg.connect(admin)
    try:
        dbs.server_version = str(await conn.fetchval("SHOW server_version"))
        await conn.execute(f"CREATE DATABASE {STATEBUS_DB}")
    finally:
        await conn.close()

    began = time.monotonic()
    migrate = await procs.spawn(
        "statebus-migrate",
        [sys.executable, "-m", "statebus", "migrate"],
        env={**env, "STATEBUS_DATABASE_URL": dbs.statebus},
    )
    if await asyncio.wait_for(migrate.proc.wait(), 300) != 0:
        raise migrate.failure("failed")
    await procs.stop(migrate)
    print(f"  statebus migrate: {time.monotonic() - began:.1f}s", flush=True)
    began = time.monotonic()

    conn = await asyncpg.connect(dbs.statebus)
    try:
        async with conn.transaction():  # one transaction: one version per user
            for statement in SEED.strip().split(";\n"):
                await conn.execute(statement, *([users] if "$1" in statement else []))
    finally:
        await conn.close()

    print(f"  seed ({users:,} users, one transaction): {time.monotonic() - began:.1f}s", flush=True)
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"CREATE DATABASE {NAIVE_DB} TEMPLATE {STATEBUS_DB}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(dbs.naive)
    try:
        await conn.execute("DROP SCHEMA statebus CASCADE")
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal"
            " AND tgrelid = ANY ($1::regclass[])",
            list(USER_TABLES),
        )
        events = await conn.fetchval("SELECT count(*) FROM pg_event_trigger")
        if left or events:
            raise RuntimeError(f"{left} triggers and {events} event triggers survived the drop")
        await conn.execute(naive.SQL)
    finally:
        await conn.close()
    await tidy(dbs)
    return dbs


async def tidy(dbs: Databases) -> None:
    """VACUUM ANALYZE and CHECKPOINT: each system's session starts from settled tables."""
    for dsn in (dbs.statebus, dbs.naive):
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()
    conn = await asyncpg.connect(dbs.admin)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
