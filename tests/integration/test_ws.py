"""The socket protocol end to end: real uvicorn, real Postgres, real writes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import httpx
import jwt
import pytest

from statebus.client import Session, SessionClosed
from statebus.core_messages import Current, Snapshot
from statebus.testing.server import RunningServer, settings_for_tests
from tests.helpers import add_user, seed_plans, wait_for

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def seeded(conn: asyncpg.Connection) -> asyncpg.Connection:
    await seed_plans(conn)
    await add_user(conn, "alice")
    await add_user(conn, "bob")
    return conn


async def snapshot(session: Session) -> Snapshot:
    message = await session.recv()
    assert isinstance(message, Snapshot), message
    return message


async def closed_with(session: Session) -> int | None:
    with pytest.raises(SessionClosed) as info:
        while True:
            await session.recv()
    return info.value.code


async def test_sql_update_reaches_both_sockets_of_the_user_only(
    server: RunningServer, seeded: asyncpg.Connection
) -> None:
    a1 = await Session.open(server.ws, server.token("alice"))
    a2 = await Session.open(server.ws, server.token("alice"))
    b = await Session.open(server.ws, server.token("bob"))
    try:
        for session in (a1, a2, b):
            assert (await snapshot(session)).version == 1
        await seeded.execute(
            "UPDATE user_subscriptions SET plan = 'viral_surge' WHERE user_id = 'alice'"
        )
        for session in (a1, a2):
            got = await snapshot(session)
            assert (got.user_id, got.version, got.state["plan"]["code"]) == (
                "alice",
                2,
                "viral_surge",
            )
        # Bob's socket hears nothing of alice: a write of bob's committed after alice's
        # (a marker) must be the next thing it receives; anything wrongly fanned out
        # to it from alice's commit would have been queued first.
        await seeded.execute(
            "UPDATE user_subscriptions SET status = 'past_due' WHERE user_id = 'bob'"
        )
        marker = await snapshot(b)
        assert (marker.user_id, marker.version) == ("bob", 2)
        assert marker.state["subscription"]["status"] == "past_due"
    finally:
        for session in (a1, a2, b):
            await session.close()


async def test_resume_with_since_and_current(
    server: RunningServer, seeded: asyncpg.Connection
) -> None:
    for status in ("past_due", "active", "past_due"):
        await seeded.execute(
            "UPDATE user_subscriptions SET status = $1 WHERE user_id = 'alice'", status
        )
    async with await Session.open(server.ws, server.token("alice"), since=1) as behind:
        got = await snapshot(behind)
        assert got.version == 4 and got.state["subscription"]["status"] == "past_due"
    async with await Session.open(server.ws, server.token("alice"), since=4) as current:
        message = await current.recv()
        assert message == Current(version=4)
        await seeded.execute(
            "UPDATE user_subscriptions SET status = 'active' WHERE user_id = 'alice'"
        )
        assert (await snapshot(current)).version == 5


async def test_user_without_rows_gets_version_zero_then_one(
    server: RunningServer, seeded: asyncpg.Connection
) -> None:
    async with await Session.open(server.ws, server.token("carol")) as session:
        first = await snapshot(session)
        assert (first.version, first.state) == (0, None)
        await add_user(seeded, "carol")
        second = await snapshot(session)
        assert second.version == 1 and second.state["plan"]["code"] == "glow_up"


async def test_admin_may_follow_any_user_and_users_may_not(
    server: RunningServer, seeded: asyncpg.Connection
) -> None:
    async with await Session.open(server.ws, server.token("root", admin=True), user_id="bob") as s:
        assert (await snapshot(s)).user_id == "bob"
    async with await Session.open(server.ws, server.token("alice"), user_id="bob") as s:
        assert await closed_with(s) == 4403


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", 4400),
        ('{"type": "hello"}', 4400),
        ('{"type": "auth"}', 4400),
        ('{"type": "auth", "token": "x", "extra": 1}', 4400),
        ('{"type": "auth", "token": "' + "a" * 21_000 + '"}', 4400),
        ('{"type": "auth", "token": "not-a-jwt"}', 4401),
    ],
)
async def test_bad_first_messages_get_their_close_code(
    server: RunningServer, seeded: asyncpg.Connection, frame: str, code: int
) -> None:
    import websockets

    async with websockets.connect(server.ws) as ws:
        await ws.send(frame)
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == code
    async with httpx.AsyncClient() as http:
        assert (await http.get(server.http + "/healthz")).status_code == 200


async def test_bad_tokens_get_4401(server: RunningServer, seeded: asyncpg.Connection) -> None:
    forged = jwt.encode({"sub": "alice", "exp": 9999999999}, "wrong-secret-" + "y" * 40, "HS256")
    assert server.settings.jwt_secret is not None
    expired = jwt.encode({"sub": "alice", "exp": 1000}, server.settings.jwt_secret, "HS256")
    none_alg = jwt.encode({"sub": "alice", "exp": 9999999999}, None, "none")  # type: ignore[arg-type]
    for token in (forged, expired, none_alg):
        async with await Session.open(server.ws, token) as s:
            assert await closed_with(s) == 4401


async def test_wrong_origin_gets_4403(server: RunningServer, seeded: asyncpg.Connection) -> None:
    token = server.token("alice")
    async with await Session.open(server.ws, token, origin="https://evil.example") as s:
        assert await closed_with(s) == 4403
    async with await Session.open(server.ws, token, origin=server.http) as s:
        assert (await snapshot(s)).version == 1


async def test_no_auth_in_time_gets_4408(server: RunningServer, seeded: asyncpg.Connection) -> None:
    import websockets

    import statebus.ws as ws_module

    ws_module.AUTH_TIMEOUT, saved = 0.5, ws_module.AUTH_TIMEOUT
    try:
        async with websockets.connect(server.ws) as ws:
            with pytest.raises(websockets.ConnectionClosed) as info:
                while True:
                    await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 4408
    finally:
        ws_module.AUTH_TIMEOUT = saved


async def test_token_expiry_closes_a_live_socket(
    server: RunningServer, seeded: asyncpg.Connection
) -> None:
    async with await Session.open(server.ws, server.token("alice", ttl=2)) as s:
        assert (await snapshot(s)).version == 1
        assert await closed_with(s) == 4401


async def test_too_many_sockets_for_one_user(
    server: RunningServer, seeded: asyncpg.Connection
) -> None:
    limit = server.settings.max_sockets_per_user
    sessions = [await Session.open(server.ws, server.token("alice")) for _ in range(limit)]
    try:
        for s in sessions:
            await snapshot(s)
        async with await Session.open(server.ws, server.token("alice")) as extra:
            assert await closed_with(extra) == 4429
    finally:
        for s in sessions:
            await s.close()


async def test_a_full_server_answers_1013(
    dsn: str, tmp_path: Path, seeded: asyncpg.Connection
) -> None:
    full = RunningServer(settings_for_tests(tmp_path, max_sockets=2), dsn).start()
    try:
        async with (
            await Session.open(full.ws, full.token("alice")) as first,
            await Session.open(full.ws, full.token("bob")) as second,
        ):
            await snapshot(first)
            await snapshot(second)
            async with await Session.open(full.ws, full.token("bob")) as third:
                assert await closed_with(third) == 1013
    finally:
        full.stop()


async def test_state_endpoint_etag_and_errors(
    server: RunningServer, seeded: asyncpg.Connection
) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        auth = {"Authorization": "Bearer " + server.token("alice")}
        ok = await http.get("/v1/state", headers=auth)
        assert ok.status_code == 200 and ok.headers["etag"] == '"1"'
        assert ok.json()["user_id"] == "alice" and ok.json()["version"] == 1
        same = await http.get("/v1/state", headers={**auth, "If-None-Match": '"1"'})
        assert same.status_code == 304
        missing = await http.get("/v1/state")
        assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
        other = await http.get("/v1/state?user_id=bob", headers=auth)
        assert other.status_code == 403 and other.json()["error"] == "forbidden"
        admin = {"Authorization": "Bearer " + server.token("root", admin=True)}
        bob = await http.get("/v1/state?user_id=bob", headers=admin)
        assert bob.json()["user_id"] == "bob"
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        metrics = await http.get("/metrics")
        assert "statebus_notifications" in metrics.text


async def test_listener_killed_during_writes_loses_nothing(
    server: RunningServer, seeded: asyncpg.Connection, dsn: str
) -> None:
    sessions = [await Session.open(server.ws, server.token("alice")) for _ in range(3)]
    latest = [0, 0, 0]

    async def drain(i: int) -> None:
        while True:
            message = await sessions[i].recv(timeout=None)
            assert message.version > latest[i], "versions must strictly increase"
            latest[i] = message.version

    readers = [asyncio.create_task(drain(i)) for i in range(3)]
    admin = await asyncpg.connect(dsn)
    try:
        await wait_for(lambda: all(v == 1 for v in latest), what="first snapshots")

        async def writer() -> None:
            for i in range(200):
                await seeded.execute(
                    "UPDATE user_usage SET used = $1 WHERE user_id = 'alice'", i
                ) if i else await seeded.execute(
                    "INSERT INTO user_usage (user_id, metric, used) VALUES ('alice', 'posts', 0)"
                )

        async def killer() -> None:
            for _ in range(3):
                old = server_listener_pid(server)
                await admin.execute("SELECT pg_terminate_backend($1)", old)

                def replaced(old: int | None = old) -> bool:
                    return server_listener_pid(server) not in (None, old)

                await wait_for(replaced, timeout=15, what="a new LISTEN connection")

        await asyncio.gather(writer(), killer())
        final = await seeded.fetchval(
            "SELECT version FROM statebus.versions WHERE user_id = 'alice'"
        )
        assert final == 201
        await wait_for(lambda: all(v == final for v in latest), timeout=15, what="final version")
    finally:
        for task in readers:
            task.cancel()
        for s in sessions:
            await s.close()
        await admin.close()


def server_listener_pid(server: RunningServer) -> int | None:
    app = server.app
    listener = app.state.runtime.listener
    return listener.backend_pid if listener.live else None


async def test_slow_reader_gets_latest_and_does_not_delay_fast(
    server: RunningServer, seeded: asyncpg.Connection
) -> None:
    slow = await Session.open(server.ws, server.token("alice"))
    fast = await Session.open(server.ws, server.token("alice"))
    try:
        await snapshot(slow)
        await snapshot(fast)
        for i in range(100):
            await seeded.execute(
                "UPDATE user_subscriptions SET status = $1 WHERE user_id = 'alice'",
                "past_due" if i % 2 == 0 else "active",
            )
            got = await snapshot(fast)  # the fast reader sees every version at once
            assert got.version == i + 2
        # The slow one never read; it still ends at the newest version, having skipped some.
        seen: list[int] = []
        while not seen or seen[-1] < 101:
            seen.append((await snapshot(slow)).version)
        assert seen[-1] == 101 and seen == sorted(set(seen))
        hub = server.app.state.runtime.hub
        assert hub.subscriber_count("alice") == 2
    finally:
        await slow.close()
        await fast.close()


async def test_json_state_roundtrip(server: RunningServer, seeded: asyncpg.Connection) -> None:
    async with await Session.open(server.ws, server.token("alice")) as s:
        got = await snapshot(s)
    stored = await seeded.fetchval("SELECT state FROM statebus.envelopes(ARRAY['alice'])")
    assert got.state == json.loads(stored)
