"""Small helpers shared by the tests: notification capture and waiting with a deadline."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from statebus.core_messages import notification_decoder

USER = "user_2zRnraoVNDAegfHnci1xUMWybwz"


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0, what: str = ""
) -> None:
    """Polls until condition() holds; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.01)


async def commit_while_second_waits(
    dsn: str, observer: asyncpg.Connection, first: str, second: str, *, what: str
) -> None:
    """Two writers in their own transactions. Capture takes a user's version row only at
    commit, so `first` is made to take it at once (SET CONSTRAINTS ALL IMMEDIATE runs the
    commit step after each statement) and holds it; `second` runs without waiting, and its
    COMMIT blocks on that row (seen in pg_stat_activity through `observer`) until `first`
    commits; then `second` commits after it."""
    a = await asyncpg.connect(dsn)
    b = await asyncpg.connect(dsn)
    try:
        ta, tb = a.transaction(), b.transaction()
        await ta.start()
        await tb.start()
        await a.execute("SET CONSTRAINTS ALL IMMEDIATE")
        await a.execute(first)
        await b.execute(second)
        waiting = asyncio.create_task(tb.commit())
        b_pid = b.get_server_pid()
        await wait_for(
            lambda: observer.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", b_pid
            ),
            what=what,
        )
        await ta.commit()
        await waiting
    finally:
        await a.close()
        await b.close()


@dataclass(frozen=True)
class Pair:
    """One (user_id, version) named by a notification."""

    user_id: str
    version: int


class Notifications:
    """Collects every NOTIFY on channel statebus through its own connection."""

    def __init__(self) -> None:
        self.received: list[Pair] = []
        self.raw: list[str] = []
        self._conn: asyncpg.Connection | None = None

    async def start(self, dsn: str) -> Notifications:
        self._conn = await asyncpg.connect(dsn)
        await self._conn.add_listener("statebus", self._on_notify)
        return self

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        assert isinstance(payload, str)
        self.raw.append(payload)
        self.received.extend(Pair(u, v) for u, v in notification_decoder.decode(payload))

    async def sync(self, conn: asyncpg.Connection) -> None:
        """Waits until every notification committed before now has arrived (a marker NOTIFY)."""
        assert self._conn is not None
        marker = f"marker-{time.monotonic_ns()}"
        seen: list[str] = []

        def on_marker(_conn: Any, _pid: int, _channel: str, payload: object) -> None:
            seen.append(str(payload))

        await self._conn.add_listener("statebus_test_marker", on_marker)
        try:
            await conn.execute("SELECT pg_notify('statebus_test_marker', $1)", marker)
            await wait_for(lambda: marker in seen, what="marker notification")
        finally:
            await self._conn.remove_listener("statebus_test_marker", on_marker)

    def for_user(self, user_id: str) -> list[Pair]:
        return [n for n in self.received if n.user_id == user_id]

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


async def version_of(conn: asyncpg.Connection, user_id: str) -> int:
    value = await conn.fetchval("SELECT version FROM statebus.versions WHERE user_id = $1", user_id)
    return int(value or 0)


async def state_of(conn: asyncpg.Connection, user_id: str) -> Any:
    """The user's current document, read the way every reader does (statebus.envelopes)."""
    raw = await conn.fetchval("SELECT state FROM statebus.envelopes(ARRAY[$1])", user_id)
    return None if raw is None else json.loads(raw)


async def seed_plans(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        INSERT INTO plans (code, name, stripe_price_id, rank, limits) VALUES
          ('free', 'Free', NULL, 0, '{"seats": 1}'),
          ('glow_up', 'Glow Up', 'price_glow_up', 1, '{"seats": 3}'),
          ('viral_surge', 'Viral Surge', 'price_viral_surge', 2, '{"seats": 10}')
        """
    )


async def add_user(conn: asyncpg.Connection, user_id: str, plan: str = "glow_up") -> None:
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO users (id, email) VALUES ($1, $1 || '@example.com')", user_id
        )
        await conn.execute(
            "INSERT INTO user_subscriptions (user_id, plan, status) VALUES ($1, $2, 'active')",
            user_id,
            plan,
        )


async def a_newer_release_migrated(conn: asyncpg.Connection) -> None:
    """Records a migration this release does not know, as a newer release's migrate would:
    from then on, payloads this release cannot read are judged that release's, not stray."""
    await conn.execute(
        "INSERT INTO statebus.schema_migrations (version, name, checksum)"
        " VALUES (9999, 'a_newer_release', 'x')"
    )
