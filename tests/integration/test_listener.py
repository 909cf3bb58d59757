"""The listener stage on its own: notifications from a real PostgreSQL in, frames out to
a hub, with no sockets and no app around it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from statebus import metrics
from statebus.hub import Hub, Subscriber
from statebus.listener import CHANNEL, Listener
from tests.helpers import a_newer_release_migrated, wait_for


class Sink:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def __call__(self, text: str) -> None:
        self.frames.append(json.loads(text))

    def versions(self) -> list[int]:
        return [int(frame["version"]) for frame in self.frames]


def watch(hub: Hub, user_id: str) -> Sink:
    sink = Sink()
    sub = Subscriber(user_id, sink)
    sub.release()
    hub.add(sub)
    return sink


@contextlib.asynccontextmanager
async def listening(dsn: str, hub: Hub) -> AsyncIterator[Listener]:
    listener = Listener(dsn, hub, probe_interval=0.2, max_backoff=0.2)
    task = asyncio.create_task(listener.run())
    try:
        await wait_for(lambda: listener.live, what="the LISTEN connection")
        yield listener
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def add_user(conn: asyncpg.Connection, user_id: str) -> None:
    await conn.execute("INSERT INTO users (id, email) VALUES ($1, $1 || '@example.com')", user_id)


async def test_a_commit_becomes_one_frame_per_version_for_its_watcher(
    dsn: str, conn: asyncpg.Connection
) -> None:
    hub = Hub()
    async with listening(dsn, hub):
        alice = watch(hub, "alice")
        await add_user(conn, "alice")
        await add_user(conn, "bob")  # nobody watches bob here
        await wait_for(lambda: 1 in alice.versions(), what="alice's version 1")
        frame = alice.frames[-1]
        assert frame["user_id"] == "alice" and frame["state"] is not None
        assert {f["user_id"] for f in alice.frames} == {"alice"}
        assert hub.latest_version("bob") == -1  # bob's version was never fanned out
        async with conn.transaction():  # two statements, one commit: one version
            await conn.execute("UPDATE users SET email = 'a2@example.com' WHERE id = 'alice'")
            await conn.execute("UPDATE users SET email = 'a3@example.com' WHERE id = 'alice'")
        await wait_for(lambda: alice.versions()[-1:] == [2], what="alice's version 2")
        assert alice.versions() == sorted(set(alice.versions()))


async def test_a_newer_releases_notification_is_never_dropped_silently(
    dsn: str, conn: asyncpg.Connection
) -> None:
    hub = Hub()
    async with listening(dsn, hub) as listener:
        alice = watch(hub, "alice")  # after the connect's re-read: nothing read for her yet
        assert alice.frames == []
        await a_newer_release_migrated(conn)
        await conn.execute("SELECT pg_notify($1, 'not json')", CHANNEL)
        # Her current version (0: no rows yet) comes from the re-read the payload caused.
        await wait_for(lambda: alice.versions() == [0], what="the re-read after it")
        assert any("undecodable" in reason for reason in listener.health.reasons())


async def test_a_stray_payload_costs_neither_readiness_nor_a_re_read(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """Any role may NOTIFY on any channel: with no newer release in the database, what
    no release wrote is counted and ignored, so a role cannot hold a fleet unready."""
    hub = Hub()
    async with listening(dsn, hub) as listener:
        alice = watch(hub, "alice")
        for payload in ("not json", '{"format": 2, "changes": [["alice", 1]]}', "[1]"):
            await notify_and_count(conn, payload)
            await wait_for(
                lambda: listener._judging is None and listener._unjudged is None,
                what="judged",
            )
        assert listener._resync_timer is None  # no re-read queued
        assert listener.health.reasons() == []
        # Real notifications still arrive.
        await add_user(conn, "alice")
        await wait_for(lambda: alice.versions() == [1], what="alice's version 1")
        assert listener.health.reasons() == []


async def notify_and_count(conn: asyncpg.Connection, payload: str) -> None:
    before = undecodable_count()
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
    await wait_for(lambda: undecodable_count() > before, what=f"{payload!r} counted")


def undecodable_count() -> float:
    value = metrics.registry.get_sample_value("statebus_notifications_undecodable_total")
    return 0.0 if value is None else value


async def test_after_a_reconnect_every_watched_user_is_read_again(
    dsn: str, conn: asyncpg.Connection
) -> None:
    hub = Hub()
    async with listening(dsn, hub) as listener:
        alice = watch(hub, "alice")
        first = listener.backend_pid
        await conn.execute("SELECT pg_terminate_backend($1)", first)
        await wait_for(lambda: listener.live and listener.backend_pid != first, what="reconnect")
        await wait_for(lambda: alice.versions() == [0], what="the re-read after reconnecting")
        assert listener.health.reasons() == []
