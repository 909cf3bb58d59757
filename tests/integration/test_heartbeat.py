"""The heartbeat: `{"type": "ping"}` after auth gets `{"type": "pong"}`, and the Python
client notices a network that goes silent without closing, then catches up with `since`."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest
import websockets

from statebus.client import PING_AFTER, PONG_WITHIN, HeartbeatLost, Session, follow
from statebus.core_messages import Envelope, Snapshot
from statebus.testing.server import RunningServer
from tests.helpers import add_user, version_of, wait_for
from tests.silent_proxy import SilentProxy

pytestmark = pytest.mark.asyncio

# One new version per execution.
USAGE = """INSERT INTO user_usage (user_id, metric, used) VALUES ('alice', 'posts', 1)
           ON CONFLICT (user_id, metric) DO UPDATE SET used = user_usage.used + 1"""


@pytest.fixture
async def alice(seeded: asyncpg.Connection) -> asyncpg.Connection:
    await add_user(seeded, "alice")
    return seeded


async def closed_code(ws: websockets.ClientConnection) -> int | None:
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    return info.value.rcvd.code if info.value.rcvd else None


async def test_ping_after_auth_gets_pong_and_the_socket_stays_live(
    server: RunningServer, alice: asyncpg.Connection
) -> None:
    async with websockets.connect(server.ws) as ws:
        await ws.send(json.dumps({"type": "auth", "token": server.token("alice")}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["version"] == 1
        for _ in range(3):
            await ws.send('{"type": "ping"}')
            assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
        await alice.execute(USAGE)
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert (frame["type"], frame["version"]) == ("snapshot", 2)
        # Still only pings: anything else after auth is refused as before.
        await ws.send(json.dumps({"type": "auth", "token": server.token("alice")}))
        assert await closed_code(ws) == 4400


@pytest.mark.parametrize(
    "frame", ['{"type": "ping"}', '{"type": "ping", "extra": 1}', '{"type": "pong"}']
)
async def test_a_ping_before_auth_is_malformed(
    server: RunningServer, alice: asyncpg.Connection, frame: str
) -> None:
    async with websockets.connect(server.ws) as ws:
        await ws.send(frame)
        assert await closed_code(ws) == 4400


class CountingSession(Session):
    pings = 0

    async def ping(self) -> None:
        self.pings += 1
        await super().ping()


async def test_session_listen_notices_a_silent_network(
    server: RunningServer, alice: asyncpg.Connection
) -> None:
    async with SilentProxy(server.port) as proxy:
        session = await CountingSession.open(proxy.ws, server.token("alice"))
        assert isinstance(await session.recv(), Snapshot)
        # A quiet but healthy socket: listen() pings, hears pongs, and keeps waiting.
        waiting = asyncio.ensure_future(session.listen(ping_after=0.1, pong_within=5))
        await wait_for(lambda: session.pings >= 3, what="three answered pings")
        assert not waiting.done()
        await alice.execute(USAGE)
        got = await asyncio.wait_for(waiting, 10)
        assert isinstance(got, Snapshot) and got.version == 2

        proxy.silence()
        started = time.monotonic()
        with pytest.raises(HeartbeatLost):
            await asyncio.wait_for(session.listen(), PING_AFTER + PONG_WITHIN + 5)
        took = time.monotonic() - started
        assert PING_AFTER + PONG_WITHIN - 0.5 < took < PING_AFTER + PONG_WITHIN + 3, took
        await asyncio.wait_for(session.close(), 3)  # the connection was dropped, not closed
        proxy.resume()


async def test_follow_catches_up_with_since_after_a_silent_spell(
    server: RunningServer, alice: asyncpg.Connection
) -> None:
    got: list[Envelope] = []

    async def consume() -> None:
        async for envelope in follow(
            proxy.ws, server.token("alice"), ping_after=0.5, pong_within=0.5
        ):
            got.append(envelope)

    async with SilentProxy(server.port) as proxy:
        task = asyncio.ensure_future(consume())
        try:
            await wait_for(lambda: bool(got) and got[-1].version == 1, what="first snapshot")
            proxy.silence()
            for _ in range(50):
                await alice.execute(USAGE)
            latest = await version_of(alice, "alice")
            assert latest == 51
            # The client gave the silent socket up and is trying a new one (held by the
            # proxy, as a SYN on a dead network would be).
            await wait_for(lambda: proxy.connections >= 2, timeout=10, what="a reconnect")
            assert got[-1].version == 1
            proxy.resume()
            resumed = time.monotonic()
            await wait_for(lambda: got[-1].version == latest, timeout=10, what="catch-up")
            caught_up = time.monotonic() - resumed
            assert caught_up < 5, caught_up
            # Resumed with `since`: the 50 versions in between were skipped, not replayed.
            assert [e.version for e in got] == [1, latest]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
