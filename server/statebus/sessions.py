"""statebus's own database sessions never stay idle in a transaction.

A session idle in a transaction holds back what PostgreSQL may clean up and, if it
LISTENs, pins the NOTIFY queue: once the queue is full every tracked commit fails.
statebus's LISTEN connections and envelope readers never open a transaction, and its
pool's transactions are bounded by the Stripe calls some of them wait on; each session
still carries `idle_in_transaction_session_timeout`, so a bug cannot make one pin
anything for long. Set with `SET` after connecting (not as a startup parameter, which
PgBouncer refuses unless told to ignore it), and again after the pool's `RESET ALL`.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from statebus import sqlfiles


class PoolConnection(asyncpg.Connection):
    """A pool's connection: its reset (run on every release) sets the session's
    guards again in the same round trip, since the reset's `RESET ALL` undoes them."""

    session_guard = ""  # set per pool by create_pool

    def get_reset_query(self) -> str:
        default: str = super().get_reset_query()
        return default + "\n" + self.session_guard


async def connect(dsn: str, *, name: str, timeout: float = 5) -> asyncpg.Connection:
    """A dedicated connection (LISTEN, envelope reads): never in a transaction for long.
    `name` is its application_name, so pg_stat_activity says which statebus part it is."""
    conn = await asyncpg.connect(dsn, timeout=timeout, server_settings={"application_name": name})
    try:
        await conn.execute(sqlfiles.queries()["session_guard"], timeout=timeout)
    except BaseException:
        conn.terminate()
        raise
    return conn


async def create_pool(
    dsn: str, *, lock_timeout_ms: int | None = None, **options: Any
) -> asyncpg.Pool:
    """The app's pool, each session with its idle-in-transaction timeout and, when given,
    a lock_timeout: every lock a pooled session waits on is bounded (docs/security.md).
    Both are SET after connecting, not sent as startup parameters, which PgBouncer refuses."""
    guard = sqlfiles.queries()["pool_session_guard"]
    if lock_timeout_ms is not None:
        # An int, formatted into the text: a reset query takes no parameters.
        guard += f"\nSET lock_timeout = {int(lock_timeout_ms)};"
    connection_class = type("StatebusPoolConnection", (PoolConnection,), {"session_guard": guard})

    async def init(conn: asyncpg.Connection) -> None:
        await conn.execute(guard)

    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        connection_class=connection_class,
        init=init,
        server_settings={"application_name": "statebus pool"},
        **options,
    )
    return pool
