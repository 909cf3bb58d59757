"""Figures with many sockets: RSS per idle socket (4), the all-users admin UPDATE (3),
and one version to thousands of sockets of one user (5). Each on a fresh server."""

from __future__ import annotations

import statistics
import time

import asyncpg

from bench.context import Context, settled_rss
from bench.fleet import Fleet

ADMIN_UPDATE = "UPDATE user_system_data SET onboarding_completed = NOT onboarding_completed"
ONE_USER_UPDATE = "UPDATE user_usage SET used = used + 1 WHERE user_id = 'u1' AND metric = 'posts'"


async def fanout_session(ctx: Context, system: str) -> None:
    sizes = ctx.sizes
    server = await ctx.server(system)
    fleet = await Fleet.start(ctx.procs, sizes.fanout_workers)
    try:
        # A few sockets opened and closed first, so the server's first-connection costs
        # (lazy imports, caches, pools) are in "before", not spread over the sockets.
        await fleet.connect(system, server.ws_url, ["u1", "u2", "u3", "u4"], ctx.secret, 60)
        await fleet.disconnect()
        before = await settled_rss(server.pid)
        users = [f"u{i}" for i in range(1, sizes.fanout_sockets + 1)]
        took = await fleet.connect(system, server.ws_url, users, ctx.secret, 600)
        after = await settled_rss(server.pid)
        per_socket = (after - before) / len(users) / 1024
        ctx.note(
            system=system,
            figure="rss",
            sockets=len(users),
            connect_s=took,
            rss_before_mib=before / 2**20,
            rss_after_mib=after / 2**20,
            kib_per_socket=per_socket,
        )
        if "rss" in ctx.selected:
            ctx.results.add(system, "rss_kib_per_socket", per_socket)
        if "admin" in ctx.selected:
            async with ctx.profiled(server, "admin"):
                commit_s, current_s = await admin_update(ctx, system, fleet)
            ctx.results.add(system, "admin_commit_s", commit_s)
            ctx.results.add(system, "admin_current_s", current_s)
    finally:
        await fleet.close()
        await ctx.stop(server)


async def admin_update(ctx: Context, system: str, fleet: Fleet) -> tuple[float, float]:
    """One UPDATE over every user; (commit seconds, seconds until every socket has a frame)."""
    conn = await asyncpg.connect(ctx.dbs.dsn(system), command_timeout=600)
    try:
        await fleet.arm()
        started = time.monotonic_ns()
        status = await conn.execute(ADMIN_UPDATE)
        committed = time.monotonic_ns()
    finally:
        await conn.close()
    if status != f"UPDATE {ctx.sizes.users}":
        raise RuntimeError(f"{system}: the admin UPDATE said {status!r}")
    current, total, last = await fleet.wait_current(ctx.sizes.current_timeout)
    if current != total:
        raise RuntimeError(
            f"{system}: {current} of {total} sockets current {ctx.sizes.current_timeout:.0f}s"
            " after the admin UPDATE"
        )
    commit_s, current_s = (committed - started) / 1e9, (last - started) / 1e9
    ctx.note(
        system=system,
        figure="admin",
        users=ctx.sizes.users,
        sockets=total,
        commit_s=commit_s,
        current_s=current_s,
    )
    return commit_s, current_s


async def broadcast_session(ctx: Context, system: str) -> None:
    """Versions of one user, each to every one of its sockets: frames/s from the commit's
    start until the last socket has it; the median over the versions."""
    sockets = ctx.sizes.broadcast_sockets
    server = await ctx.server(system, max_per_user=max(32, sockets))
    fleet = await Fleet.start(ctx.procs, ctx.sizes.broadcast_workers)
    conn = await asyncpg.connect(ctx.dbs.dsn(system))
    try:
        await fleet.connect(system, server.ws_url, ["u1"] * sockets, ctx.secret, 300)
        rates = []
        async with ctx.profiled(server, "broadcast"):
            for _ in range(ctx.sizes.broadcast_versions):
                await fleet.arm()
                started = time.monotonic_ns()
                await conn.execute(ONE_USER_UPDATE)
                current, total, last = await fleet.wait_current(ctx.sizes.current_timeout)
                if current != total:
                    raise RuntimeError(f"{system}: {current} of {total} sockets got the version")
                rates.append(total / ((last - started) / 1e9))
        frames_s = statistics.median(rates)
        ctx.results.add(system, "broadcast_frames_s", frames_s)
        ctx.note(
            system=system,
            figure="broadcast",
            sockets=sockets,
            frames_s=frames_s,
            runs=[round(r) for r in rates],
        )
    finally:
        await conn.close()
        await fleet.close()
        await ctx.stop(server)
