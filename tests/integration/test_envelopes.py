"""The readers' stage on its own (envelopes.py): envelopes read from a real PostgreSQL
with statebus.envelopes(), and the one frame each becomes for every socket."""

from __future__ import annotations

import json

import asyncpg
import msgspec

from statebus.envelopes import frame_of, read_envelopes, read_state


async def test_a_user_without_rows_is_version_zero_with_no_state(
    conn: asyncpg.Connection,
) -> None:
    env = await read_state(conn, "nobody")
    assert (env.user_id, env.version, env.state) == ("nobody", 0, None)


async def test_each_envelope_is_its_users_current_version_and_document(
    conn: asyncpg.Connection,
) -> None:
    for user_id in ("alice", "bob"):
        await conn.execute(
            "INSERT INTO users (id, email) VALUES ($1, $1 || '@example.com')", user_id
        )
    await conn.execute(
        "INSERT INTO user_usage (user_id, metric, used) VALUES ('alice', 'posts', 7)"
    )
    found = {env.user_id: env for env in await read_envelopes(conn, ["alice", "bob", "carol"])}
    assert set(found) == {"alice", "bob", "carol"}
    rows = await conn.fetch("SELECT user_id, version FROM statebus.versions")
    versions: dict[str, int] = {row["user_id"]: row["version"] for row in rows}
    assert found["alice"].version == versions["alice"] == 2
    assert found["bob"].version == versions["bob"] == 1
    assert found["carol"].version == 0 and found["carol"].state is None
    state = found["alice"].state
    assert isinstance(state, msgspec.Raw)  # the jsonb text, embedded as it came
    assert json.loads(bytes(state))["usage"]["posts"]["used"] == 7


async def test_a_pool_reads_as_a_connection_does(dsn: str, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO users (id, email) VALUES ('alice', 'a@example.com')")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        assert await read_state(pool, "alice") == await read_state(conn, "alice")
    finally:
        await pool.close()


async def test_the_frame_is_the_snapshot_message_encoded_once(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO users (id, email) VALUES ('alice', 'a@example.com')")
    env = await read_state(conn, "alice")
    frame = frame_of(env)
    assert (frame.user_id, frame.version) == ("alice", env.version)
    message = json.loads(frame.text)
    assert message["type"] == "snapshot" and message["version"] == env.version
    assert message["state"] == json.loads(bytes(env.state or b"null"))
