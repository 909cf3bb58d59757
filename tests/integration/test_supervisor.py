"""The supervisor stage on its own: one LISTEN connection, kept alive against a real
PostgreSQL, without the listener, the hub or sockets above it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from statebus.supervisor import ListenSupervisor
from tests.helpers import wait_for

CHANNEL = "stage_test"


@contextlib.asynccontextmanager
async def running(supervisor: ListenSupervisor) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(supervisor.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_payloads_reach_the_handler_and_the_probe_keeps_it_live(
    dsn: str, conn: asyncpg.Connection
) -> None:
    got: list[str] = []
    supervisor = ListenSupervisor(
        dsn, {CHANNEL: got.append}, name="stage", probe_interval=0.05, probe_timeout=2.0
    )
    async with running(supervisor) as task:
        await wait_for(lambda: supervisor.live, what="the first connection")
        await conn.execute("SELECT pg_notify($1, 'one'), pg_notify($1, 'two')", CHANNEL)
        await wait_for(lambda: got == ["one", "two"], what="both payloads")
        await asyncio.sleep(0.3)  # several probe rounds: a live connection stays up
        assert supervisor.live and not task.done()
    assert got == ["one", "two"]


async def test_on_connect_runs_after_listen_so_a_commit_in_the_gap_is_notified(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """on_connect commits a notification itself: it can only arrive if LISTEN came first."""
    got: list[str] = []
    connects: list[int] = []

    async def on_connect(listening: asyncpg.Connection) -> None:
        connects.append(listening.get_server_pid())
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"gap {len(connects)}")

    supervisor = ListenSupervisor(dsn, {CHANNEL: got.append}, on_connect=on_connect, name="stage")
    async with running(supervisor):
        await wait_for(lambda: got == ["gap 1"], what="the notification sent from on_connect")
        assert supervisor.backend_pid == connects[0]


@pytest.mark.parametrize("how", ["terminated", "asked"])
async def test_a_lost_connection_is_replaced_and_resynced(
    dsn: str, conn: asyncpg.Connection, how: str
) -> None:
    got: list[str] = []
    connects: list[int] = []

    async def on_connect(listening: asyncpg.Connection) -> None:
        connects.append(listening.get_server_pid())

    supervisor = ListenSupervisor(
        dsn, {CHANNEL: got.append}, on_connect=on_connect, name="stage", max_backoff=0.2
    )
    async with running(supervisor):
        await wait_for(lambda: supervisor.live and len(connects) == 1, what="connected")
        first = connects[0]
        if how == "terminated":
            await conn.execute("SELECT pg_terminate_backend($1)", first)
        else:
            supervisor.lost()  # e.g. after a failed read
        await wait_for(lambda: len(connects) == 2 and supervisor.live, what="reconnected")
        assert connects[1] != first and supervisor.backend_pid == connects[1]
        await conn.execute("SELECT pg_notify($1, 'after')", CHANNEL)
        await wait_for(lambda: got == ["after"], what="a payload on the new connection")
