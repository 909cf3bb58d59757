"""No lost update through a server restart and a PostgreSQL restart."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from statebus.client import Session, SessionClosed, follow
from statebus.core_messages import Envelope
from statebus.testing.server import RunningServer
from tests.helpers import add_user, seed_plans, wait_for
from tests.pg import PgServer

pytestmark = pytest.mark.asyncio


async def test_graceful_shutdown_closes_sockets_with_1012_and_resume_catches_up(
    server: RunningServer, conn: asyncpg.Connection
) -> None:
    await seed_plans(conn)
    await add_user(conn, "alice")
    session = await Session.open(server.ws, server.token("alice"))
    assert (await session.recv()).version == 1
    stopping = asyncio.get_running_loop().run_in_executor(None, server.stop)
    with pytest.raises(SessionClosed) as closed:
        await session.recv()
    assert closed.value.code == 1012
    await stopping
    await session.close()
    # Writes while the server is down are not lost: resuming with since catches up.
    await conn.execute("UPDATE user_subscriptions SET plan = 'viral_surge' WHERE user_id = 'alice'")
    await asyncio.get_running_loop().run_in_executor(None, server.start)
    async with await Session.open(server.ws, server.token("alice"), since=1) as resumed:
        message = await resumed.recv()
        assert message.version == 2


@pytest.mark.restarts_postgres
async def test_postgres_restart_during_writes_ends_at_final_version(
    server: RunningServer, conn: asyncpg.Connection, dsn: str, pg_server: PgServer
) -> None:
    if pg_server.embedded is None:
        pytest.skip("restarting PostgreSQL needs the embedded server (not an external DSN)")
    await seed_plans(conn)
    await add_user(conn, "alice")
    await conn.execute("INSERT INTO user_usage (user_id, metric, used) VALUES ('alice', 'n', 0)")
    await conn.close()
    latest: list[Envelope] = []

    async def watch() -> None:
        async for env in follow(server.ws, server.token("alice")):
            latest.append(env)

    watcher = asyncio.create_task(watch())
    try:
        await wait_for(lambda: bool(latest) and latest[-1].version == 2, what="first snapshot")

        async def write(n: int) -> None:
            writer = await asyncpg.connect(dsn)
            try:
                await writer.execute("UPDATE user_usage SET used = $1 WHERE user_id = 'alice'", n)
            finally:
                await writer.close()

        await write(1)
        loop = asyncio.get_running_loop()
        embedded = pg_server.embedded
        await loop.run_in_executor(None, embedded.kill)
        async with httpx.AsyncClient(base_url=server.http) as http:

            async def ready_is(status: int) -> bool:
                return (await http.get("/readyz")).status_code == status

            await wait_for(lambda: ready_is(503), what="/readyz 503 while PostgreSQL is down")
            await loop.run_in_executor(None, embedded.restart)
            await wait_for(lambda: ready_is(200), timeout=30, what="/readyz 200 again")
        for n in range(2, 12):
            await write(n)
        await wait_for(
            lambda: latest[-1].state["usage"]["n"]["used"] == 11,
            timeout=30,
            what="the final write after the restart",
        )
        versions = [env.version for env in latest]
        assert versions == sorted(versions) and latest[-1].version == 13
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
