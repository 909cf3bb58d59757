"""The NOTIFY queue is watched and protected.

A drill as the read-only monitor role of sql/roles_example.sql: it LISTENs and stays
idle in a transaction while notifications flow, which pins PostgreSQL's NOTIFY queue
(when full, every tracked commit fails). The server's gauge rises, it warns once and
reports not ready; the documented query names the session; the role's
idle_in_transaction_session_timeout (set by the example file) ends it; the queue
drains, the server is ready again, and captured writes reach their socket.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from statebus import sessions, sqlfiles
from statebus.client import Session
from statebus.testing.server import RunningServer, settings_for_tests
from tests.helpers import add_user, seed_plans, wait_for

APP, MONITOR = "statebus_app", "statebus_monitor"
PAGE = 1 / 1048576  # one 8 KiB page of the 8 GiB queue, as pg_notification_queue_usage() counts
ALERT = 40 * PAGE  # the test's alert: far below the default (0.5), far above an idle queue
ROOT = Path(__file__).resolve().parents[2]
SHOW = "SHOW idle_in_transaction_session_timeout"


def as_role(dsn: str, role: str, password: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))


async def drop_roles(conn: asyncpg.Connection) -> None:
    for role in (APP, MONITOR):
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            await conn.execute(f"DROP OWNED BY {role}")
            await conn.execute(f"DROP ROLE {role}")


@pytest.fixture
async def role_dsns(dsn: str, conn: asyncpg.Connection) -> AsyncIterator[dict[str, str]]:
    await drop_roles(conn)
    await conn.execute(sqlfiles.read("roles_example.sql"))
    password = secrets.token_urlsafe(16)
    for role in (APP, MONITOR):
        await conn.execute(f"ALTER ROLE {role} PASSWORD '{password}'")
    try:
        yield {role: as_role(dsn, role, password) for role in (APP, MONITOR)}
    finally:
        await drop_roles(conn)


async def flood(conn: asyncpg.Connection, pages: int) -> None:
    """About one queue page per notification (distinct payloads: NOTIFY folds duplicates)."""
    await conn.execute(
        "SELECT pg_notify('flood', repeat('x', 7900) || g) FROM generate_series(1, $1) g", pages
    )


async def test_a_monitor_pinning_the_queue_is_measured_warned_and_ended(
    dsn: str,
    conn: asyncpg.Connection,
    role_dsns: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await seed_plans(conn)
    await add_user(conn, "alice")
    settings = replace(settings_for_tests(tmp_path), notify_queue_alert=ALERT)
    server = RunningServer(settings, dsn).start()
    caplog.set_level(logging.WARNING, logger="statebus.monitor")
    app = await asyncpg.connect(role_dsns[APP])
    monitor = await asyncpg.connect(role_dsns[MONITOR])
    try:
        async with (
            await Session.open(server.ws, server.token("alice")) as session,
            httpx.AsyncClient(base_url=server.http) as http,
        ):
            first = (await session.recv()).version

            async def usage() -> float:
                text = (await http.get("/metrics")).text
                match = re.search(r"^statebus_notify_queue_usage (\S+)$", text, re.MULTILINE)
                assert match is not None, "no statebus_notify_queue_usage in /metrics"
                return float(match[1])

            async def readyz() -> tuple[int, str]:
                response = await http.get("/readyz")
                return response.status_code, response.text

            assert (await readyz())[0] == 200
            assert await usage() < ALERT

            # The pin: LISTEN, then a transaction left open.
            await monitor.execute("LISTEN anything")
            await monitor.execute("BEGIN")
            await monitor.execute("SELECT 1")
            pinned_pid = monitor.get_server_pid()

            await flood(app, 15)
            await wait_for(lambda: _above(usage, 10 * PAGE), what="the gauge rising")
            before = await usage()
            assert before < ALERT and (await readyz())[0] == 200
            await flood(app, 60)
            await wait_for(lambda: _above(usage, before + 50 * PAGE), what="the gauge rising more")

            async def not_ready() -> bool:
                status, body = await readyz()
                return status == 503 and "NOTIFY queue" in body

            await wait_for(not_ready, what="/readyz 503 naming the NOTIFY queue")
            warnings = [r.getMessage() for r in caplog.records if r.name == "statebus.monitor"]
            assert len(warnings) == 1 and "idle in a transaction" in warnings[0], warnings

            # The documented query names the pinning session.
            pinners = await conn.fetch(sqlfiles.queries()["notify_queue_pinners"])
            assert [(r["pid"], r["usename"]) for r in pinners] == [(pinned_pid, MONITOR)]

            # The role's idle_in_transaction_session_timeout (roles_example.sql) ends it.
            async def ended() -> bool:
                return not await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pinned_pid
                )

            await wait_for(ended, timeout=20, what="the monitor's session ended by its timeout")
            # Terminated by the server: asyncpg reports it as whichever error its state
            # machine is in when the close arrives.
            ended_errors = (
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
                OSError,
            )
            with pytest.raises(ended_errors):
                await monitor.fetchval("SELECT 1")

            async def ready() -> bool:
                return (await readyz())[0] == 200

            await wait_for(ready, what="/readyz 200 once the queue drained")
            assert await usage() < ALERT
            assert any("back to" in r.getMessage() for r in caplog.records)

            # Captured writes commit and reach the socket.
            await app.execute("UPDATE user_subscriptions SET plan = 'free' WHERE user_id = 'alice'")
            assert (await session.recv()).version == first + 1
    finally:
        await app.close()
        monitor.terminate()
        server.stop()


async def _above(usage: object, level: float) -> bool:
    assert callable(usage)
    value: float = await usage()
    return value > level


async def test_roles_example_bounds_idle_transactions_of_both_roles(
    conn: asyncpg.Connection, role_dsns: dict[str, str]
) -> None:
    for role, expected in ((MONITOR, "5s"), (APP, "1min")):
        session = await asyncpg.connect(role_dsns[role])
        try:
            assert await session.fetchval(SHOW) == expected
        finally:
            await session.close()


async def test_statebus_own_sessions_carry_a_timeout(dsn: str) -> None:
    """The connections the server makes (statebus.sessions): dedicated ones (LISTEN,
    envelope readers) and the pool's, whose every release runs RESET ALL."""
    dedicated = await sessions.connect(dsn, name="statebus test")
    try:
        assert await dedicated.fetchval(SHOW) == "10s"
    finally:
        await dedicated.close()
    pool = await sessions.create_pool(dsn, min_size=1, max_size=1)
    try:
        for _ in range(2):  # the first acquire, then one after a release's reset
            async with pool.acquire() as pooled:
                assert await pooled.fetchval(SHOW) == "5min"
                await pooled.execute("SET idle_in_transaction_session_timeout = 0")
    finally:
        await pool.close()


def test_operations_docs_give_the_query_that_names_the_pinning_session() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text()
    query = sqlfiles.queries()["notify_queue_pinners"]
    body = "\n".join(line for line in query.splitlines() if not line.startswith("--"))
    assert body in docs
