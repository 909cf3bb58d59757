"""Refuse to start behind a transaction-mode pooler, rather than fail in its hands.

statebus's connections are sessions: LISTEN must stay on one server connection, asyncpg
prepares statements once per connection, and migrations take a session advisory lock.
A pooler in transaction (or statement) mode hands each transaction to whichever server
connection is free, so notifications go astray and statements vanish ("prepared
statement ... does not exist"). Its mark: two client connections open at the same time
share one backend, or one client connection's backend changes between statements.
"""

from __future__ import annotations

import asyncpg

from statebus import sqlfiles

FIX = (
    "point STATEBUS_DATABASE_URL at PostgreSQL directly or at a session-mode pool "
    "(PgBouncer: pool_mode = session); the host application's writers may keep using "
    "transaction mode (docs/operations.md, PgBouncer and other poolers)"
)


class PoolerError(Exception):
    """STATEBUS_DATABASE_URL leads to a transaction-mode pooler; the message says what to do."""


async def refuse_transaction_pooling(dsn: str, *, timeout: float = 10) -> None:
    """Raises PoolerError when `dsn` does not give one backend per session."""
    pid = sqlfiles.queries()["backend_pid"]
    # No statement cache: a transaction-mode pooler would fail a cached statement before
    # this check could say why.
    first = await asyncpg.connect(dsn, timeout=timeout, statement_cache_size=0)
    try:
        second = await asyncpg.connect(dsn, timeout=timeout, statement_cache_size=0)
        try:
            a1: int = await first.fetchval(pid, timeout=timeout)
            b: int = await second.fetchval(pid, timeout=timeout)
            a2: int = await first.fetchval(pid, timeout=timeout)
        except asyncpg.PostgresError as exc:
            raise PoolerError(
                f"the database connection lost session state between statements ({exc}); "
                f"a transaction-mode pooler? {FIX}"
            ) from None
        finally:
            await second.close()
    finally:
        await first.close()
    if a1 == b or a1 != a2:
        raise PoolerError(
            "STATEBUS_DATABASE_URL leads to a transaction-mode pooler (two sessions shared "
            f"a server connection, or one session's changed): statebus needs session "
            f"connections for LISTEN, prepared statements and its migration lock; {FIX}"
        )
