"""Readiness means delivery: drills of a starved, a frozen and a draining process.

Each drill ends with every socket at its user's latest version, and checks that
/readyz told the truth throughout: never 200 while notifications waited, with the
reason in its body, and one log line per change.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
import pytest

from statebus.client import Session, SessionClosed
from statebus.testing.server import RunningServer, settings_for_tests
from tests.helpers import a_newer_release_migrated, add_user, seed_plans, version_of, wait_for
from tests.integration.serve_process import serve_process

pytestmark = pytest.mark.asyncio

USERS = ("alice", "bob", "carol")


async def seed(conn: asyncpg.Connection) -> None:
    await seed_plans(conn)
    for user in USERS:
        await add_user(conn, user)
        await conn.execute(
            "INSERT INTO user_usage (user_id, metric, used) VALUES ($1, 'n', 0)", user
        )


async def bump_all(conn: asyncpg.Connection) -> None:
    for user in USERS:
        await conn.execute("UPDATE user_usage SET used = used + 1 WHERE user_id = $1", user)


async def at_latest(conn: asyncpg.Connection, sessions: dict[str, Session]) -> None:
    """Every session receives its user's latest version (the test fails past 15 s)."""
    for user, session in sessions.items():
        latest = await version_of(conn, user)
        while True:
            message = await session.recv(timeout=15)
            if message.version == latest:
                break
            assert message.version < latest


async def test_readers_waiting_for_the_database_make_it_not_ready_until_delivered(
    dsn: str, conn: asyncpg.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Starved: the envelope readers wait (here on a lock every read needs, as behind a
    pooler with no free server connection). /readyz says so within the threshold, with
    the reason, and is ready again once the waiting notifications became frames."""
    await seed(conn)
    # 2 s: well above what a busy shared test machine stalls for, well below the default.
    settings = replace(settings_for_tests(tmp_path), ready_threshold=2.0)
    server = RunningServer(settings, dsn).start()
    caplog.set_level(logging.WARNING, logger="statebus.ready")
    blocker = await asyncpg.connect(dsn)
    try:
        sessions = {u: await Session.open(server.ws, server.token(u)) for u in USERS}
        for session in sessions.values():
            await session.recv()
        async with httpx.AsyncClient(base_url=server.http) as http:
            assert (await http.get("/readyz")).status_code == 200
            blocker_tx = blocker.transaction()
            await blocker_tx.start()
            await blocker.execute("LOCK TABLE plans IN ACCESS EXCLUSIVE MODE")
            await bump_all(conn)

            async def not_ready() -> bool:
                response = await http.get("/readyz")
                return response.status_code == 503 and "waiting" in response.text

            await wait_for(not_ready, timeout=8, what="/readyz 503 while reads wait")
            body = (await http.get("/readyz")).json()
            assert body["error"] == "not_ready"
            assert "notifications waiting" in body["message"]
            metrics = (await http.get("/metrics")).text
            assert "statebus_ready 0.0" in metrics
            await blocker_tx.rollback()
            await at_latest(conn, sessions)

            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await wait_for(ready, timeout=8, what="/readyz 200 once delivered")
        lines = [r.getMessage() for r in caplog.records if r.name == "statebus.ready"]
        assert len([m for m in lines if m.startswith("not ready")]) == 1, lines
        assert len([m for m in lines if m.startswith("ready again")]) == 1, lines
        for session in sessions.values():
            await session.close()
    finally:
        await blocker.close()
        server.stop()


async def undecodable_total(http: httpx.AsyncClient) -> float:
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith("statebus_notifications_undecodable_total "):
            return float(line.split()[1])
    return 0.0


async def test_an_undecodable_notification_is_counted_logged_and_not_ready(
    dsn: str, conn: asyncpg.Connection, server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    await seed(conn)
    await a_newer_release_migrated(conn)  # stray payloads would be ignored (test_listener.py)
    caplog.set_level(logging.ERROR, logger="statebus.listener")
    async with (
        await Session.open(server.ws, server.token("alice")) as session,
        httpx.AsyncClient(base_url=server.http) as http,
    ):
        first = (await session.recv()).version
        assert (await http.get("/readyz")).status_code == 200
        before = await undecodable_total(http)  # one registry per process: other tests count
        for _ in range(3):
            await conn.execute("""SELECT pg_notify('statebus', '{"v": 2, "pairs": []}')""")

        async def counted() -> bool:
            return await undecodable_total(http) == before + 3

        await wait_for(counted, what="three undecodable notifications counted")

        async def not_ready() -> bool:  # once the release check has judged them
            return (await http.get("/readyz")).status_code == 503

        await wait_for(not_ready, what="not ready")
        response = await http.get("/readyz")
        assert "3 undecodable notifications" in response.json()["message"]
        # Never dropped: what an undecodable notification may have named is re-read. A
        # version made without a notification of ours reaches the socket through it.
        await conn.execute(
            "UPDATE statebus.versions SET version = version + 1 WHERE user_id = 'alice'"
        )
        await conn.execute("SELECT pg_notify('statebus', 'a format of a newer release')")
        assert (await session.recv()).version == first + 1
        # And delivery goes on as usual.
        await conn.execute("UPDATE user_subscriptions SET plan = 'free' WHERE user_id = 'alice'")
        assert (await session.recv()).version == first + 2
    logged = [r for r in caplog.records if "undecodable notification" in r.getMessage()]
    assert len(logged) == 1  # four undecodable notifications, one line


async def test_frozen_process_is_not_ready_then_catches_up(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """SIGSTOP for over twice the threshold, writes meanwhile, SIGCONT: the /readyz asked during
    the freeze is not answered 200; afterwards the process says it stalled, re-reads its
    users, every socket reaches its latest version, and it is ready again: one log line
    each way."""
    await seed(conn)
    async with serve_process(dsn, env={"STATEBUS_READY_THRESHOLD": "2"}) as serve:
        sessions = {u: await Session.open(serve.ws, serve.token(u)) for u in USERS}
        for session in sessions.values():
            await session.recv()
        async with httpx.AsyncClient(timeout=30) as http:
            serve.proc.send_signal(signal.SIGSTOP)
            try:
                await bump_all(conn)
                during = asyncio.create_task(serve.readyz(http))
                await asyncio.sleep(5.0)  # the drill: the process stays frozen this long
                assert not during.done()
            finally:
                serve.proc.send_signal(signal.SIGCONT)
            status, body = await during
            assert status == 503 and "event loop stalled" in body, body
            await at_latest(conn, sessions)

            async def ready() -> bool:
                return (await serve.readyz(http))[0] == 200

            await wait_for(ready, timeout=10, what="/readyz 200 after catching up")
            assert await serve.metric(http, "statebus_event_loop_stalls_total") >= 1
        assert len(serve.log_lines("not ready: event loop stalled")) == 1, serve.log.read_text()
        assert len(serve.log_lines("ready again after")) == 1, serve.log.read_text()
        for session in sessions.values():
            await session.close()


async def test_readyz_answers_503_shutting_down_for_the_whole_drain(
    dsn: str, conn: asyncpg.Connection
) -> None:
    await seed(conn)
    async with serve_process(dsn, env={"STATEBUS_DRAIN_SECONDS": "1.5"}) as serve:
        session = await Session.open(serve.ws, serve.token("alice"))
        await session.recv()
        answers: list[tuple[int, str]] = []
        async with httpx.AsyncClient(timeout=5) as http:
            serve.proc.send_signal(signal.SIGTERM)
            with pytest.raises(SessionClosed) as closed:
                await session.recv()
            assert closed.value.code == 1012
            while True:
                try:
                    answers.append(await serve.readyz(http))
                except httpx.TransportError:
                    break  # the port closed: the drain is over
                await asyncio.sleep(0.05)
        assert len(answers) >= 3, answers  # about 1.5 s of answers, on a busy machine
        for status, body in answers:
            assert status == 503 and "shutting down" in body, (status, body)
        assert await asyncio.get_running_loop().run_in_executor(None, serve.proc.wait) == 0
