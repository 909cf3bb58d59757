"""Reading envelopes from Postgres (statebus.envelopes) and encoding them once for sockets."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from statebus import sqlfiles
from statebus.core_messages import Envelope, Snapshot, encoder
from statebus.hub import Frame
from statebus.sessions import Conn


def envelope_from_row(row: asyncpg.Record) -> Envelope:
    state = row["state"]  # jsonb arrives as text and stays text: msgspec.Raw embeds it
    return Envelope(
        row["user_id"],
        row["version"],
        row["committed_at"],
        row["source"],
        None if state is None else msgspec.Raw(state.encode()),
    )


def frame_of(env: Envelope) -> Frame:
    """The socket frame of an envelope, encoded once however many sockets show it."""
    text = encoder.encode(
        Snapshot(env.user_id, env.version, env.committed_at, env.source, env.state)
    ).decode()
    return Frame(env.user_id, env.version, text)


async def read_envelopes(
    db: asyncpg.Pool | Conn, user_ids: Sequence[str], *, timeout: float = 30.0
) -> list[Envelope]:
    """Current envelopes of `user_ids` (distinct), each version and document from one snapshot."""
    rows = await db.fetch(sqlfiles.queries()["envelopes"], list(user_ids), timeout=timeout)
    return [envelope_from_row(row) for row in rows]


async def read_state(db: asyncpg.Pool | Conn, user_id: str) -> Envelope:
    """The latest envelope of one user: version 0 and state null before any row exists."""
    (env,) = await read_envelopes(db, [user_id])
    return env
