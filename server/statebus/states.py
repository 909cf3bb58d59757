"""Reading envelopes back from statebus.versions / statebus.history."""

from __future__ import annotations

import asyncpg
import msgspec

from statebus import sqlfiles
from statebus.messages import Envelope


def envelope_from_row(row: asyncpg.Record) -> Envelope:
    state = row["state"]  # jsonb arrives as text
    return Envelope(
        row["user_id"], row["version"], None if state is None else msgspec.json.decode(state)
    )


async def read_state(db: asyncpg.Pool | asyncpg.Connection, user_id: str) -> Envelope:
    """The latest envelope of one user: version 0 and state null before any row exists."""
    row = await db.fetchrow(sqlfiles.queries()["state_of"], user_id)
    assert row is not None  # the query always yields one row
    return envelope_from_row(row)
