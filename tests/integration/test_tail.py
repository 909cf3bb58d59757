"""`statebus tail`: one short line per version naming the changed keys; `--json` prints
each whole envelope. Run as a user would, against a real server and database."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import asyncpg
import pytest

from statebus.testing.server import SECRET, RunningServer
from tests.integration.test_cli import USER, statebus

pytestmark = pytest.mark.asyncio

# user, version, date and time to the millisecond, writer, what changed
LINE = re.compile(rf"^{USER} v(\d+) · \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{{3}}Z · ([^·]+) · (.+)$")


@pytest.fixture
def env(dsn: str, tmp_path: Path) -> dict[str, str]:
    return {
        "STATEBUS_DATABASE_URL": dsn,
        "STATEBUS_HOME": str(tmp_path),
        "STATEBUS_JWT_SECRET": SECRET,
    }


async def tail_lines(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "statebus",
        "tail",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def next_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().rstrip("\n")


async def test_one_short_line_per_version_with_the_changed_keys(
    env: dict[str, str], server: RunningServer, conn: asyncpg.Connection
) -> None:
    await statebus("migrate", "--demo", env=env)
    proc = await tail_lines(env, "--user", USER, "--url", server.ws)
    try:
        first = LINE.match(await next_line(proc))
        assert first is not None
        assert first.groups() == ("1", "demo seed", "plan glow_up (first version seen)")
        async with conn.transaction():
            await conn.execute("UPDATE user_subscriptions SET plan = 'viral_surge'")
            await conn.execute(
                "INSERT INTO user_usage (user_id, metric, used) VALUES ($1, 'posts', 3)"
                " ON CONFLICT (user_id, metric) DO UPDATE SET used = 3",
                USER,
            )
        text = await next_line(proc)
        second = LINE.match(text)
        assert second is not None, text
        assert second.groups() == ("2", "SQL", "changed: plan, usage")
        assert len(text) < 120, text  # no document at the end of the line any more
    finally:
        proc.terminate()
        await proc.wait()


async def test_json_prints_each_whole_envelope(
    env: dict[str, str], server: RunningServer, conn: asyncpg.Connection
) -> None:
    await statebus("migrate", "--demo", env=env)
    proc = await tail_lines(env, "--user", USER, "--url", server.ws, "--json")
    try:
        first = json.loads(await next_line(proc))
        assert (first["user_id"], first["version"], first["source"]) == (USER, 1, "demo")
        assert first["state"]["plan"]["code"] == "glow_up"
        await conn.execute("UPDATE user_subscriptions SET plan = 'viral_surge'")
        second = json.loads(await next_line(proc))
        assert set(second) == {"user_id", "version", "committed_at", "source", "state"}
        assert (second["version"], second["source"]) == (2, "sql")
        assert second["state"]["plan"]["code"] == "viral_surge"
        assert second["committed_at"].endswith("Z")
    finally:
        proc.terminate()
        await proc.wait()


async def test_json_without_user_reads_from_the_database(
    env: dict[str, str], conn: asyncpg.Connection
) -> None:
    await statebus("migrate", "--demo", env=env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "statebus",
        "tail",
        "--json",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        ready = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert b"listening on channel statebus" in ready
        await conn.execute("UPDATE user_subscriptions SET status = 'past_due'")
        envelope = json.loads(await next_line(proc))
        assert (envelope["user_id"], envelope["version"]) == (USER, 2)
        assert envelope["state"]["subscription"]["status"] == "past_due"
    finally:
        proc.terminate()
        await proc.wait()
