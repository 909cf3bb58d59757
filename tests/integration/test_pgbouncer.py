"""statebus through Debian's PgBouncer: refused behind transaction mode, served through
session mode while the host application writes through transaction mode, and a pool
too small for it shows as not ready, not as silence."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import httpx
import pytest

from statebus.client import Session
from statebus.pooler import PoolerError, refuse_transaction_pooling
from statebus.testing.server import SECRET, free_port
from tests.helpers import add_user, seed_plans, version_of, wait_for
from tests.integration.pgbouncer import pgbouncer
from tests.integration.serve_process import serve_process


async def test_serve_refuses_a_transaction_mode_pooler_and_names_the_fix(dsn: str) -> None:
    async with pgbouncer(dsn) as bouncer:
        await refuse_transaction_pooling(dsn)  # PostgreSQL itself
        await refuse_transaction_pooling(bouncer.session)
        with pytest.raises(PoolerError, match="pool_mode = session"):
            await refuse_transaction_pooling(bouncer.transaction)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STATEBUS_", "STRIPE_"))}
        env |= {"STATEBUS_DATABASE_URL": bouncer.transaction, "STATEBUS_JWT_SECRET": SECRET}
        refused = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: subprocess.run(
                [sys.executable, "-m", "statebus.cli", "serve", "--port", str(free_port())],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            ),
        )
    assert refused.returncode == 2, refused.stderr
    assert "transaction-mode pooler" in refused.stderr
    assert "pool_mode = session" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_served_through_session_mode_while_the_app_writes_through_transaction_mode(
    dsn: str, conn: asyncpg.Connection
) -> None:
    await seed_plans(conn)
    await add_user(conn, "alice")
    await conn.execute("INSERT INTO user_usage (user_id, metric, used) VALUES ('alice', 'n', 0)")
    async with (
        pgbouncer(dsn) as bouncer,
        serve_process(bouncer.session) as serve,
        await Session.open(serve.ws, serve.token("alice")) as session,
    ):
        await session.recv()
        # The host application's writer, pooled per transaction (no prepared statements).
        writer = await asyncpg.connect(bouncer.transaction, statement_cache_size=0)
        try:
            for n in range(1, 6):
                async with writer.transaction():
                    await writer.execute("SET LOCAL statebus.source = 'app:pooled'")
                    await writer.execute(
                        f"UPDATE user_usage SET used = {n} WHERE user_id = 'alice'"
                    )
        finally:
            await writer.close()
        latest = await version_of(conn, "alice")
        while (message := await session.recv(timeout=15)).version < latest:
            pass
        assert message.version == latest
        assert message.state["usage"]["n"]["used"] == 5  # type: ignore[union-attr]
        assert message.source == "app:pooled"  # type: ignore[union-attr]
        async with httpx.AsyncClient() as http:
            assert (await serve.readyz(http))[0] == 200


async def test_a_starved_pool_reports_not_ready_then_delivers(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """The drill of a pooler with too few server connections: other clients take every
    one, statebus's envelope readers lose theirs and wait in PgBouncer's queue while
    notifications arrive. /readyz says so within the threshold (never 200 while the
    socket is stale); once connections free up, the socket gets the latest version and
    the process is ready again."""
    await seed_plans(conn)
    await add_user(conn, "alice")
    await conn.execute("INSERT INTO user_usage (user_id, metric, used) VALUES ('alice', 'n', 0)")
    blockers: list[asyncpg.Connection] = []
    queued: list[asyncio.Task[object]] = []
    async with (
        pgbouncer(dsn, pool_size=8) as bouncer,
        serve_process(bouncer.session, env={"STATEBUS_READY_THRESHOLD": "2"}) as serve,
        await Session.open(serve.ws, serve.token("alice")) as session,
        httpx.AsyncClient(timeout=10) as http,
    ):
        await session.recv()
        await conn.execute("UPDATE user_usage SET used = 1 WHERE user_id = 'alice'")
        await session.recv()  # the readers are connected and have read
        try:
            # Other clients take every free server connection, and two more wait in line.
            while len(queued) < 2:
                blocker = await asyncpg.connect(bouncer.session, timeout=10)
                blockers.append(blocker)
                task = asyncio.ensure_future(blocker.fetchval("SELECT 1"))
                done, _ = await asyncio.wait({task}, timeout=1.0)
                if not done:
                    queued.append(task)
            # The readers' server connections end; their replacements wait behind those two.
            ended = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'statebus envelope reader'"
            )
            assert ended == 2
            await wait_for(lambda: all(t.done() for t in queued), what="the queued clients served")
            for n in range(2, 5):
                await conn.execute(f"UPDATE user_usage SET used = {n} WHERE user_id = 'alice'")

            async def not_ready() -> bool:
                status, body = await serve.readyz(http)
                return status == 503 and "notifications waiting" in body

            # Within the threshold (2 s) of the first waiting notification, plus a poll.
            await wait_for(not_ready, timeout=5, what="/readyz 503: notifications waiting")
            with pytest.raises(TimeoutError):  # the socket is indeed stale meanwhile
                await session.recv(timeout=0.5)
        finally:
            for blocker in blockers:
                await blocker.close()
        latest = await version_of(conn, "alice")
        while (message := await session.recv(timeout=15)).version < latest:
            pass
        assert message.version == latest

        async def ready() -> bool:
            return (await serve.readyz(http))[0] == 200

        await wait_for(ready, timeout=10, what="/readyz 200 once delivered")
        assert len(serve.log_lines("not ready: ")) == 1, serve.log.read_text()
