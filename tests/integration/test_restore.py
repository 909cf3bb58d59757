"""A restored database is detected: the drill restores a dump taken before later commits.

A client that saw those later commits resumes with its `since`; the restored database
has reused that version number for other content. statebus notices the restore at
start (another database, another cluster or a new timeline than it recorded), moves
every version past anything served before, and the client gets a snapshot with the
restored content, never `current`.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path

import asyncpg
import httpx
import pytest

from statebus.client import Session
from statebus.embedded import bin_dir
from statebus.messages import Snapshot
from statebus.testing.server import RunningServer, settings_for_tests
from tests.helpers import add_user, seed_plans, version_of
from tests.pg import PgServer


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=120)


async def tools(conn: asyncpg.Connection) -> Path:
    """pg_dump and pg_restore of the server's major version where installed (Debian's 15
    in CI), else the embedded wheel's (18)."""
    major = int(await conn.fetchval("SHOW server_version_num")) // 10000
    debian = Path(f"/usr/lib/postgresql/{major}/bin")
    return debian if (debian / "pg_restore").exists() else bin_dir()


async def test_a_restored_dump_never_answers_current_for_a_reused_version(
    dsn: str,
    conn: asyncpg.Connection,
    pg_server: PgServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="statebus.restore")
    await seed_plans(conn)
    await add_user(conn, "alice")
    await conn.execute("INSERT INTO user_usage (user_id, metric, used) VALUES ('alice', 'n', 0)")
    loop = asyncio.get_running_loop()
    bin_path = await tools(conn)
    original = RunningServer(settings_for_tests(tmp_path / "a"), dsn).start()
    try:
        async with await Session.open(original.ws, original.token("alice")) as session:
            await session.recv()
            dump = tmp_path / "backup.dump"
            await loop.run_in_executor(
                None, run, str(bin_path / "pg_dump"), "-Fc", "-f", str(dump), dsn
            )
            for n in (1, 2):  # committed after the backup, and seen by the client
                await conn.execute("UPDATE user_usage SET used = $1 WHERE user_id = 'alice'", n)
            held = await version_of(conn, "alice")
            while (await session.recv()).version < held:
                pass
    finally:
        original.stop()

    restored = await pg_server.create_database(migrated=False)
    try:
        await loop.run_in_executor(
            None, run, str(bin_path / "pg_restore"), "--no-owner", "-d", restored, str(dump)
        )
        writer = await asyncpg.connect(restored)
        try:
            # After the restore, new commits reach the number the client holds, with
            # other content.
            while await version_of(writer, "alice") < held:
                await writer.execute(
                    "UPDATE user_usage SET used = used + 10 WHERE user_id = 'alice'"
                )
            assert await version_of(writer, "alice") == held
            server = RunningServer(settings_for_tests(tmp_path / "b"), restored).start()
            try:
                moved = await version_of(writer, "alice")
                assert moved > held + 1_000_000
                async with await Session.open(
                    server.ws, server.token("alice"), since=held
                ) as resumed:
                    first = await resumed.recv()
                    assert isinstance(first, Snapshot), first
                    assert first.version == moved
                    assert first.state["usage"]["n"]["used"] == 20
                    # Later commits keep counting from there, and reach the socket.
                    await writer.execute("UPDATE user_usage SET used = 21 WHERE user_id = 'alice'")
                    assert (await resumed.recv()).version == moved + 1
                async with httpx.AsyncClient(base_url=server.http) as http:
                    assert (await http.get("/readyz")).status_code == 200
                server.restart()  # the same database again: nothing moves twice
                assert await version_of(writer, "alice") == moved + 1
            finally:
                server.stop()
        finally:
            await writer.close()
    finally:
        await pg_server.drop_database(restored)
    warnings = [r.getMessage() for r in caplog.records if r.name == "statebus.restore"]
    assert len(warnings) == 1, warnings
    assert "restore detected" in warnings[0] and "new database" in warnings[0]
