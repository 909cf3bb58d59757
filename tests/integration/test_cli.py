"""The command line, run as a user would: a subprocess against a real database."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import jwt
import pytest

from statebus.testing.server import SECRET, RunningServer

pytestmark = pytest.mark.asyncio
USER = "user_2zRnraoVNDAegfHnci1xUMWybwz"


async def statebus(*args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "statebus.cli",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def env(dsn: str, tmp_path: Path) -> dict[str, str]:
    return {
        "STATEBUS_DATABASE_URL": dsn,
        "STATEBUS_HOME": str(tmp_path),
        "STATEBUS_JWT_SECRET": SECRET,
    }


async def test_migrate_demo_then_psql_update_makes_one_version(
    env: dict[str, str], conn: asyncpg.Connection
) -> None:
    code, out, _ = await statebus("migrate", "--demo", env=env)
    assert code == 0 and "demo data seeded" in out
    code, out, err = await statebus(
        "psql",
        "-c",
        f"UPDATE user_subscriptions SET plan = 'viral_surge' WHERE user_id = '{USER}'",
        env=env,
    )
    assert code == 0, err
    assert "UPDATE 1" in out
    row = await conn.fetchrow(
        "SELECT e.version, e.state->'plan'->>'code' AS plan, e.source, h.actor"
        " FROM statebus.envelopes(ARRAY[$1]) e"
        " JOIN statebus.history h ON h.user_id = e.user_id AND h.version = e.version",
        USER,
    )
    assert row is not None
    assert (row["version"], row["plan"], row["source"]) == (2, "viral_surge", "sql")
    assert row["actor"].endswith("/psql")  # operators see an admin's edit as such


async def test_token_prints_a_verifiable_jwt(env: dict[str, str]) -> None:
    code, out, _ = await statebus("token", USER, "--ttl", "120", "--admin", env=env)
    assert code == 0
    claims = jwt.decode(out.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == USER and claims["role"] == "admin"
    assert 100 < claims["exp"] - claims["iat"] <= 120
    code, _, err = await statebus("token", USER, "--ttl", "0", env=env)
    assert code == 2 and "--ttl" in err


async def test_production_requires_a_secret(env: dict[str, str]) -> None:
    env = {**env, "STATEBUS_ENV": "production", "STATEBUS_JWT_SECRET": ""}
    code, _, err = await statebus("token", USER, env=env)
    assert code == 2 and "STATEBUS_JWT_SECRET" in err


async def test_tail_prints_one_line_per_version(
    env: dict[str, str], server: RunningServer, conn: asyncpg.Connection
) -> None:
    await statebus("migrate", "--demo", env=env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "statebus.cli",
        "tail",
        "--user",
        USER,
        "--url",
        server.ws,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert first.startswith(f"{USER} v1 · 20") and " · demo seed · plan glow_up " in first
        await conn.execute("UPDATE user_subscriptions SET plan = 'viral_surge'")
        second = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert second.startswith(f"{USER} v2 · ") and second.endswith(" · SQL · changed: plan\n")
    finally:
        proc.terminate()
        await proc.wait()


async def test_tail_of_every_user_reads_each_notified_envelope(
    env: dict[str, str], conn: asyncpg.Connection
) -> None:
    await statebus("migrate", "--demo", env=env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "statebus",
        "tail",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        ready = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert b"listening on channel statebus" in ready
        await conn.execute("SET statebus.source = 'app:signup'")
        await conn.execute("UPDATE user_subscriptions SET status = 'past_due'")
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith(f"{USER} v2 · ") and " · app (signup) · plan glow_up " in line
    finally:
        await conn.execute("RESET statebus.source")
        proc.terminate()
        await proc.wait()


async def test_tail_says_so_when_no_server_answers(env: dict[str, str]) -> None:
    code, _, err = await statebus(
        "tail", "--user", USER, "--url", "ws://127.0.0.1:9/v1/ws", env=env
    )
    assert code == 1
    assert "no statebus server answers at ws://127.0.0.1:9/v1/ws" in err
