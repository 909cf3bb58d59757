"""Periodic housekeeping: pruning statebus.history to its retention.

Every server process runs it; the DELETE is idempotent, so several at once only
repeat each other's work. It never touches statebus.versions (each user's latest
version is kept whatever its age).
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from statebus import sqlfiles

log = logging.getLogger("statebus.maintenance")

PRUNE_INTERVAL = 3600.0


async def prune_forever(pool: asyncpg.Pool, interval: float = PRUNE_INTERVAL) -> None:
    while True:
        try:
            pruned = await pool.fetchval(sqlfiles.queries()["prune_history"], timeout=300)
            if pruned:
                log.info("pruned %d history rows past retention", pruned)
        except Exception as exc:  # a failed round is retried at the next one
            log.warning("history pruning failed: %s", type(exc).__name__)
        await asyncio.sleep(interval)
