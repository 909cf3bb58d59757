"""Envelope reads from a streaming replica (STATEBUS_READ_DATABASE_URL), never stale.

A notification names the version it announces; the listener asks for at least that
version. The replica is read first. A user whose envelope there is older (the replica
has not replayed that commit yet) is read again after a few milliseconds, then from the
primary: a socket is never sent a version older than the one notified, and a replica
that falls behind only moves the reads back to the primary. Re-reads after a gap, where
the missed version is unknown, always go to the primary, as do first reads and HTTP.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from statebus import tiermetrics
from statebus.core_messages import Envelope
from statebus.envelopes import read_envelopes

log = logging.getLogger("statebus.replicas")

RESYNC = -1  # the version wanted is unknown: read the primary
# Replay on a healthy streaming replica trails the primary by milliseconds.
WAITS = (0.005, 0.02, 0.05)


class ReplicaReader:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._idle: list[asyncpg.Connection] = []  # one per concurrent reader at most

    async def read(self, primary: asyncpg.Connection, wanted: dict[str, int]) -> list[Envelope]:
        """Envelopes of `wanted`'s users, each at least the version it maps to."""
        direct = [user_id for user_id, version in wanted.items() if version == RESYNC]
        found = [] if not direct else await read_envelopes(primary, direct)
        pending = [user_id for user_id, version in wanted.items() if version != RESYNC]
        for wait in (0.0, *WAITS):
            if not pending:
                break
            if wait:
                await asyncio.sleep(wait)
            envelopes = await self._from_replica(pending)
            fresh = [env for env in envelopes if env.version >= wanted[env.user_id]]
            tiermetrics.replica_reads.inc(len(fresh))
            found += fresh
            done = {env.user_id for env in fresh}
            pending = [user_id for user_id in pending if user_id not in done]
        if pending:
            tiermetrics.replica_fallbacks.inc(len(pending))
            found += await read_envelopes(primary, pending)
        return found

    async def _from_replica(self, user_ids: list[str]) -> list[Envelope]:
        conn = None
        try:
            conn = self._idle.pop() if self._idle else await asyncpg.connect(self._dsn, timeout=2)
            envelopes = await read_envelopes(conn, user_ids, timeout=2)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # A replica that is down or broken must not stop delivery: the primary serves.
            log.warning("replica read failed (%s); reading the primary", type(exc).__name__)
            if conn is not None:
                conn.terminate()
            return []
        except BaseException:  # cancelled (shutdown): never leave a connection behind
            if conn is not None:
                conn.terminate()
            raise
        self._idle.append(conn)
        return envelopes

    def close(self) -> None:
        for conn in self._idle:
            conn.terminate()
        self._idle.clear()
