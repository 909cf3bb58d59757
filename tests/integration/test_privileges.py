"""Least privilege in the database: the roles of sql/roles_example.sql, connected as themselves.

The example file is applied as written; each role then logs in with its own connection.
Roles are cluster-wide, so each test drops what it granted and the roles afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from statebus import sqlfiles
from tests.helpers import add_user, seed_plans, wait_for

pytestmark = pytest.mark.asyncio

APP, MONITOR = "statebus_app", "statebus_monitor"


def as_role(dsn: str, role: str, password: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))


@dataclass
class Roles:
    owner: asyncpg.Connection
    app: asyncpg.Connection
    monitor: asyncpg.Connection


async def drop_roles(conn: asyncpg.Connection) -> None:
    for role in (APP, MONITOR):
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
        if exists:
            await conn.execute(f"DROP OWNED BY {role}")
            await conn.execute(f"DROP ROLE {role}")


@pytest.fixture
async def roles(dsn: str, conn: asyncpg.Connection) -> AsyncIterator[Roles]:
    await drop_roles(conn)  # left over by an interrupted run
    await conn.execute(sqlfiles.read("roles_example.sql"))
    password = secrets.token_urlsafe(16)
    for role in (APP, MONITOR):
        # A password only for servers that ask for one; the embedded one trusts local users.
        await conn.execute(f"ALTER ROLE {role} PASSWORD '{password}'")
    app = await asyncpg.connect(as_role(dsn, APP, password))
    monitor = await asyncpg.connect(as_role(dsn, MONITOR, password))
    try:
        yield Roles(conn, app, monitor)
    finally:
        await app.close()
        await monitor.close()
        await drop_roles(conn)


async def security_definer_calls(conn: asyncpg.Connection) -> list[str]:
    """A call of every SECURITY DEFINER function in schema statebus, NULL for each argument."""
    rows = await conn.fetch(
        """
        SELECT format('SELECT %s(%s)', p.oid::regproc,
                      (SELECT string_agg('NULL::' || format_type(t, NULL), ', ' ORDER BY n)
                       FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a (t, n))) AS call
        FROM pg_proc p
        WHERE p.pronamespace = 'statebus'::regnamespace AND p.prosecdef
        ORDER BY 1
        """
    )
    return [row["call"] for row in rows]


async def executable_by(conn: asyncpg.Connection, role: str) -> list[str]:
    rows = await conn.fetch(
        """
        SELECT p.oid::regprocedure::text AS name FROM pg_proc p
        WHERE p.pronamespace = 'statebus'::regnamespace AND p.prosecdef
          AND has_function_privilege($1, p.oid, 'EXECUTE')
        ORDER BY 1
        """,
        role,
    )
    return [row["name"] for row in rows]


async def assert_no_security_definer_executable(roles: Roles) -> None:
    calls = await security_definer_calls(roles.owner)
    assert calls, "schema statebus has SECURITY DEFINER functions to check"
    assert await executable_by(roles.owner, MONITOR) == []
    assert await executable_by(roles.owner, APP) == []
    for call in calls:
        for conn in (roles.monitor, roles.app):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(call)


async def test_a_role_with_usage_on_statebus_cannot_execute_any_security_definer_function(
    roles: Roles,
) -> None:
    assert await roles.owner.fetchval(
        "SELECT has_schema_privilege($1, 'statebus', 'USAGE')", MONITOR
    )
    await assert_no_security_definer_executable(roles)


async def test_functions_made_by_track_are_not_executable_either(roles: Roles) -> None:
    await roles.owner.execute(
        "CREATE TABLE public.widgets (user_id text NOT NULL, name text NOT NULL,"
        " PRIMARY KEY (user_id, name))"
    )
    await roles.owner.execute("SELECT statebus.track('public.widgets')")
    await assert_no_security_definer_executable(roles)


async def test_the_app_writer_commits_are_captured(roles: Roles) -> None:
    await seed_plans(roles.owner)
    async with roles.app.transaction():
        await roles.app.execute("INSERT INTO users (id, email) VALUES ('u_app', 'a@example.com')")
        await roles.app.execute(
            "INSERT INTO user_subscriptions (user_id, plan, status) VALUES ('u_app', 'free', 'active')"
        )
    await roles.app.execute(
        "UPDATE user_subscriptions SET status = 'past_due' WHERE user_id = 'u_app'"
    )

    # Capture runs at commit, inside the writer's transaction: the versions are there now.
    rows = await roles.owner.fetch(
        "SELECT version FROM statebus.history WHERE user_id = 'u_app' ORDER BY version"
    )
    assert [row["version"] for row in rows] == [1, 2]
    # The app gets nothing in schema statebus, not even a look at the documents.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await roles.app.fetch("SELECT * FROM statebus.history")


async def test_the_monitor_reads_history_and_stripe_event_counts_and_can_do_nothing_else(
    roles: Roles,
) -> None:
    await seed_plans(roles.owner)
    await roles.owner.execute("INSERT INTO users (id, email) VALUES ('u_mon', 'm@example.com')")
    await roles.owner.execute(
        "INSERT INTO statebus.stripe_events (id, type, created, payload)"
        " VALUES ('evt_1', 'ping', now(), '{}')"
    )
    assert await roles.monitor.fetchval(
        "SELECT count(*) FROM statebus.history WHERE user_id = 'u_mon'"
    )
    # The inbox as counts only: stored events hold Stripe's data (docs/security.md).
    assert await roles.monitor.fetchval("SELECT status FROM statebus.stripe_event_counts") == (
        "pending"
    )

    refused = [
        "INSERT INTO statebus.history (user_id, version, committed_at, source)"
        " VALUES ('x', 99, now(), 'sql')",
        "UPDATE statebus.stripe_events SET status = 'applied'",
        "SELECT payload FROM statebus.stripe_events",
        "DELETE FROM statebus.history",
        "TRUNCATE statebus.history",
        "SELECT * FROM statebus.versions",
        "SELECT * FROM statebus.settings",
        "SELECT * FROM public.user_billing",
        "UPDATE public.users SET email = 'x@example.com'",
        "INSERT INTO public.plans (code, name) VALUES ('evil', 'Evil')",
        "SELECT statebus.track('public.users')",
        "CREATE TABLE statebus.mine (x int)",
    ]
    assert await roles.monitor.fetchval("SHOW default_transaction_read_only") == "on"
    # That setting is only a guard against mistakes (any role may switch it off for
    # itself): switch it off, and the grants alone must refuse every write.
    await roles.monitor.execute("SET default_transaction_read_only = off")
    for statement in refused:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await roles.monitor.execute(statement)
    assert await roles.owner.fetchval("SELECT count(*) FROM statebus.history") == 1


async def test_the_monitor_cannot_mark_a_view_of_its_own(roles: Roles) -> None:
    """Issue 10's escalation: a temporary view passed to a SECURITY DEFINER function."""
    await roles.monitor.execute("SET default_transaction_read_only = off")
    await roles.monitor.execute("CREATE TEMP VIEW mine AS SELECT 'x'::text AS user_id")
    # Refused for want of EXECUTE, or (after the capture rewrite) no such function at all.
    with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedFunctionError)):
        await roles.monitor.execute("SELECT statebus.mark_table('mine', 'user_id')")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await roles.monitor.fetch("SELECT * FROM statebus.versions")


# --- track() of statebus's own tables; documents in NOTIFY --------------------------------


async def test_track_refuses_statebus_own_tables(conn: asyncpg.Connection) -> None:
    for table, column in (
        ("statebus.versions", "user_id"),
        ("statebus.history", "user_id"),
        ("pg_catalog.pg_class", "relname"),
    ):
        # Inside a transaction that is rolled back: an accepted track() of
        # statebus.versions would capture its own version bumps.
        with pytest.raises(asyncpg.InvalidParameterValueError, match="system or statebus"):
            async with conn.transaction():
                await conn.execute("SELECT statebus.track($1::regclass, $2)", table, column)


async def test_a_listener_without_table_privileges_receives_no_documents(roles: Roles) -> None:
    payloads: list[str] = []

    def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        payloads.append(str(payload))

    # LISTEN has no privilege check: any role that can connect hears channel statebus.
    await roles.monitor.add_listener("statebus", on_notify)
    await seed_plans(roles.owner)
    await add_user(roles.owner, "u_listen")
    await wait_for(lambda: bool(payloads), what="a notification for u_listen")
    for payload in payloads:
        assert "glow_up" not in payload and '"state"' not in payload, payload


async def test_the_documented_follower_role_reads_envelopes(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """docs/operations.md's grants for a backend that follows notifications, as written."""
    doc = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    block = doc.split("CREATE ROLE statebus_follower LOGIN;", 1)[1].split("```", 1)[0]
    follower = "statebus_follower"
    await seed_plans(conn)
    await add_user(conn, "u_follow")
    if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", follower):
        await conn.execute(f"DROP OWNED BY {follower}")
        await conn.execute(f"DROP ROLE {follower}")
    password = secrets.token_urlsafe(16)
    await conn.execute(f"CREATE ROLE {follower} LOGIN PASSWORD '{password}';" + block)
    try:
        reader = await asyncpg.connect(as_role(dsn, follower, password))
        try:
            row = await reader.fetchrow(sqlfiles.queries()["envelopes"], ["u_follow"])
        finally:
            await reader.close()
        assert row is not None and row["version"] == 1
        assert '"plan"' in row["state"]
    finally:
        await conn.execute(f"DROP OWNED BY {follower}")
        await conn.execute(f"DROP ROLE {follower}")
