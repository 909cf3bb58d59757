"""Figures of transactions that meet: two-user two-table transactions (7), and the app's
single-row writes during a long admin transaction over the same users (8).

What capture must not change in the host application: transactions that write different
rows of the same users run side by side without triggers, so with capture too, and
never deadlock. Both figures run while the system's server is up and LISTENing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import AsyncIterator

import asyncpg

from bench.context import Context, output_of
from statebus.embedded import bin_dir

# One user_usage row of one user, then one user_system_data row of another (b != a).
TWO_USERS_SCRIPT = """\\set a random(1, {users})
\\set b 1 + (:a + random(0, {users} - 2)) % {users}
BEGIN;
UPDATE user_usage SET used = used + 1 WHERE user_id = 'u' || :a AND metric = 'posts';
UPDATE user_system_data SET onboarding_completed = NOT onboarding_completed WHERE user_id = 'u' || :b;
END;
"""
TABLES = ("user_usage", "user_system_data")
ADMIN_UPDATE = (
    "UPDATE user_subscriptions SET cancel_at_period_end = NOT cancel_at_period_end"
    " WHERE user_id = ANY ($1)"
)
APP_UPDATE = "UPDATE user_usage SET used = used + 1 WHERE user_id = $1 AND metric = 'posts'"


async def contention_session(ctx: Context, system: str) -> None:
    server = await ctx.server(system)
    try:
        if "contention" in ctx.selected:
            dsn = ctx.dbs.dsn(system)
            # The same transactions with every trigger of both tables off: what the
            # host application sees without statebus or the relay (in each system's
            # database, so the two figures of this row also show the run's noise).
            async with triggers_off(dsn):
                bare_tps, _, _ = await two_user_transactions(ctx, dsn)
            ctx.results.add(system, "contention_bare_tx_s", bare_tps)
            tps, done, deadlocks = await two_user_transactions(ctx, dsn)
            ctx.results.add(system, "contention_tx_s", tps)
            ctx.results.add(system, "contention_deadlocks", deadlocks)
            ctx.note(
                system=system,
                figure="contention",
                tps=tps,
                transactions=done,
                deadlocks=deadlocks,
                bare_tps=bare_tps,
            )
        if "hold" in ctx.selected:
            app_max_ms, commit_ms = await long_admin_transaction(ctx, system)
            ctx.results.add(system, "hold_app_max_ms", app_max_ms)
            ctx.results.add(system, "hold_admin_commit_ms", commit_ms)
    finally:
        await ctx.stop(server)


@contextlib.asynccontextmanager
async def triggers_off(dsn: str) -> AsyncIterator[None]:
    conn = await asyncpg.connect(dsn, command_timeout=60)
    try:
        for table in TABLES:
            await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        yield
    finally:
        for table in TABLES:
            await conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        await conn.close()


async def two_user_transactions(ctx: Context, dsn: str) -> tuple[float, int, int]:
    """pgbench over the two-user script: (transactions/s, transactions, deadlocks).
    A deadlock is counted by pgbench as a failed transaction, not retried."""
    s = ctx.sizes
    script = ctx.run_dir / "pgbench-two-users.sql"
    script.write_text(TWO_USERS_SCRIPT.format(users=s.contention_users))
    argv = [str(bin_dir() / "pgbench"), "-n", "-f", str(script), "--failures-detailed"]
    argv += ["-c", str(s.contention_clients), "-j", str(min(s.contention_clients, 2))]
    argv += ["-T", str(s.contention_seconds), dsn]
    child = await ctx.procs.spawn("pgbench-two-users", argv, pipes=True)
    out = await output_of(child, s.contention_seconds * 3 + 60)
    tps = re.search(r"^tps = ([\d.]+)", out, re.MULTILINE)
    done = re.search(r"actually processed: (\d+)", out)
    deadlocks = re.search(r"number of deadlock failures: (\d+)", out)
    if not (tps and done and deadlocks):
        raise child.failure(f"printed no tps or failures: {out[-500:]}")
    return float(tps[1]), int(done[1]), int(deadlocks[1])


async def long_admin_transaction(ctx: Context, system: str) -> tuple[float, float]:
    """An admin updates the subscriptions of many users in one transaction and keeps it
    open; meanwhile the app writes single-row usage updates of those users. Returns the
    app's longest write (ms), from the admin's UPDATE until after its COMMIT, and the
    admin's COMMIT round trip (ms)."""
    s = ctx.sizes
    dsn = ctx.dbs.dsn(system)
    users = [f"u{i}" for i in range(1, s.hold_users + 1)]
    admin = await asyncpg.connect(dsn, command_timeout=120)
    apps = [await asyncpg.connect(dsn, command_timeout=120) for _ in range(s.hold_app_connections)]
    waits: list[float] = []
    stop = asyncio.Event()

    async def app(conn: asyncpg.Connection, seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            started = time.perf_counter()
            await conn.execute(APP_UPDATE, rng.choice(users))
            waits.append(time.perf_counter() - started)

    try:
        await admin.execute("BEGIN")
        await admin.execute(ADMIN_UPDATE, users)
        writers = [asyncio.create_task(app(c, i)) for i, c in enumerate(apps)]
        try:
            await asyncio.sleep(s.hold_seconds)  # the admin's transaction goes on
            started = time.perf_counter()
            await admin.execute("COMMIT")
            commit_ms = (time.perf_counter() - started) * 1e3
            await asyncio.sleep(0.2)  # app writes that queued behind the commit finish
        finally:
            stop.set()
            await asyncio.gather(*writers)
    finally:
        await asyncio.gather(admin.close(), *(c.close() for c in apps))
    app_max_ms = max(waits) * 1e3
    ctx.note(
        system=system,
        figure="hold",
        users=len(users),
        app_writes=len(waits),
        app_max_ms=app_max_ms,
        admin_commit_ms=commit_ms,
    )
    return app_max_ms, commit_ms
