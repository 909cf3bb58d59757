"""Figures under write load: pgbench commits/s (1), commit-to-socket latency (2), and the
sustained rate before p99 passes 50 ms (6), with the latency-against-load curve.

One server per system: pgbench runs while it LISTENs with no sockets open (every commit
notifies; nobody watches), then one socket per user is opened for the latency runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import statistics
import sys
import time
from collections.abc import AsyncIterator

import asyncpg

from bench.context import Context, json_output, output_of
from bench.fleet import Fleet
from bench.results import percentile
from statebus.embedded import bin_dir

SET_HISTORY_ROWS = "UPDATE statebus.settings SET value = $1 WHERE name = 'history_rows'"
SPLIT_UPDATE = "UPDATE user_usage SET used = used + 1 WHERE user_id = $1 AND metric = 'posts'"
PGBENCH_SCRIPT = """\\set u random(1, {users})
UPDATE user_usage SET used = used + 1 WHERE user_id = 'u' || :u AND metric = 'posts';
"""


async def writes_session(ctx: Context, system: str) -> None:
    server = await ctx.server(system)
    try:
        if "pgbench" in ctx.selected:
            async with ctx.profiled(server, "pgbench"):
                for clients in ctx.sizes.pgbench_clients:
                    tps = await pgbench(ctx, ctx.dbs.dsn(system), clients)
                    ctx.results.add(system, f"pgbench_c{clients}", tps)
                    ctx.note(system=system, figure="pgbench", clients=clients, tps=tps)
                    if system == "statebus":
                        # The same load without the per-version history row, right
                        # after the default run (the price of that row, in this run).
                        async with history_rows_off(ctx.dbs.dsn(system)):
                            tps = await pgbench(ctx, ctx.dbs.dsn(system), clients)
                        ctx.results.add(system, f"pgbench_nohistory_c{clients}", tps)
                        ctx.note(
                            system=system, figure="pgbench_nohistory", clients=clients, tps=tps
                        )
            update_ms, commit_ms = await commit_split(ctx, system)
            ctx.results.add(system, "split_update_ms", update_ms)
            ctx.results.add(system, "split_commit_ms", commit_ms)
        if not ctx.selected & {"latency", "capacity"}:
            return
        fleet = await Fleet.start(ctx.procs, ctx.sizes.latency_workers)
        try:
            users = [f"u{i}" for i in range(1, ctx.sizes.latency_users + 1)]
            took = await fleet.connect(system, server.ws_url, users, ctx.secret, 300)
            ctx.note(system=system, figure="connect", sockets=len(users), seconds=took)
            if "latency" in ctx.selected:
                rate = ctx.sizes.latency_rate
                async with ctx.profiled(server, "latency"):
                    point = await offered_load(ctx, system, fleet, rate, ctx.sizes.latency_seconds)
                ctx.results.add(system, "latency_p50_ms", point["p50_ms"])
                ctx.results.add(system, "latency_p99_ms", point["p99_ms"])
            if "capacity" in ctx.selected:
                async with ctx.profiled(server, "capacity"):
                    await capacity(ctx, system, fleet)
        finally:
            await fleet.close()
    finally:
        await ctx.stop(server)


async def pgbench(ctx: Context, dsn: str, clients: int) -> float:
    script = ctx.run_dir / "pgbench-update.sql"
    script.write_text(PGBENCH_SCRIPT.format(users=ctx.sizes.users))
    seconds = ctx.sizes.pgbench_seconds
    argv = [str(bin_dir() / "pgbench"), "-n", "-f", str(script), "-c", str(clients)]
    argv += ["-j", str(min(clients, 2)), "-T", str(seconds), dsn]
    child = await ctx.procs.spawn(f"pgbench-c{clients}", argv, pipes=True)
    out = await output_of(child, seconds * 3 + 60)
    match = re.search(r"^tps = ([\d.]+)", out, re.MULTILINE)
    if not match:
        raise child.failure(f"printed no tps: {out[-500:]}")
    return float(match[1])


@contextlib.asynccontextmanager
async def history_rows_off(dsn: str) -> AsyncIterator[None]:
    conn = await asyncpg.connect(dsn, command_timeout=60)
    try:
        await conn.execute(SET_HISTORY_ROWS, "off")
        yield
    finally:
        await conn.execute(SET_HISTORY_ROWS, "on")
        await conn.close()


async def commit_split(ctx: Context, system: str) -> tuple[float, float]:
    """Where one single-row transaction's time goes: the median round trip of its UPDATE
    (row and statement triggers) and of its COMMIT (deferred triggers, NOTIFY), on one
    connection, to random users."""
    conn = await asyncpg.connect(ctx.dbs.dsn(system), command_timeout=60)
    rng = random.Random(7)
    update, commit = [], []
    try:
        for _ in range(ctx.sizes.split_transactions):
            user = f"u{rng.randrange(ctx.sizes.users) + 1}"
            await conn.execute("BEGIN")
            started = time.perf_counter()
            await conn.execute(SPLIT_UPDATE, user)
            updated = time.perf_counter()
            await conn.execute("COMMIT")
            commit.append(time.perf_counter() - updated)
            update.append(updated - started)
    finally:
        await conn.close()
    update_ms, commit_ms = statistics.median(update) * 1e3, statistics.median(commit) * 1e3
    ctx.note(system=system, figure="commit_split", update_ms=update_ms, commit_ms=commit_ms)
    return update_ms, commit_ms


async def offered_load(
    ctx: Context, system: str, fleet: Fleet, rate: float, seconds: float
) -> dict[str, float]:
    """Writes at `rate` commits/s over the latency users; commit-to-socket percentiles."""
    await fleet.arm(record=True)
    argv = [sys.executable, "-m", "bench.writer", ctx.dbs.dsn(system)]
    argv += ["--users", str(ctx.sizes.latency_users), "--rate", str(rate)]
    argv += ["--seconds", str(seconds), "--warmup", str(ctx.sizes.warmup)]
    argv += ["--connections", str(ctx.sizes.writer_connections)]
    writer = await ctx.procs.spawn("writer", argv, pipes=True)
    wrote = await json_output(writer, (seconds + ctx.sizes.warmup) * 3 + 60)
    await settle(fleet, expected=int(rate * (seconds + ctx.sizes.warmup)))
    record_from = int(wrote["record_from"])
    latencies = [
        (received - used) / 1e6 for used, received in await fleet.collect() if used >= record_from
    ]
    if not latencies:
        raise RuntimeError(f"{system}: no frame arrived at {rate:g} commits/s")
    point = {
        "offered": rate,
        "achieved": float(wrote["achieved"]),
        "sent": float(wrote["sent"]),
        "delivered": float(len(latencies)),
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies),
    }
    ctx.note(system=system, figure="load", **point)
    return point


async def settle(fleet: Fleet, expected: int, quiet: float = 1.0, timeout: float = 20.0) -> None:
    """Until the sockets have `expected` frames, or none arrived for `quiet` seconds
    (statebus may merge two quick versions of one user into the newest)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        frames = await fleet.frames()
        if frames >= expected:
            return
        if frames != last:
            last, since = frames, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        await asyncio.sleep(0.1)


async def capacity(ctx: Context, system: str, fleet: Fleet) -> None:
    """Steps the offered load up. A step holds when its p99 stays under the bound and the
    writer achieves the offered rate (within 5%); the sustained rate is the highest step
    that held. Stepping ends after two misses in a row (one noisy step does not end the
    curve), or at once when the writer reached under half the offered rate."""
    sustained, misses = 0.0, 0
    for rate in ctx.sizes.capacity_rates:
        point = await offered_load(ctx, system, fleet, rate, ctx.sizes.capacity_seconds)
        ctx.results.point(system, rate, point)
        if point["p99_ms"] <= ctx.sizes.capacity_p99_ms and point["achieved"] >= 0.95 * rate:
            sustained, misses = rate, 0
            continue
        misses += 1
        if misses == 2 or point["achieved"] < 0.5 * rate:
            break
    ctx.results.add(system, "sustained_commits_s", sustained)
