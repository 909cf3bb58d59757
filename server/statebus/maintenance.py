"""Periodic housekeeping: pruning statebus.history and the Stripe inbox to their retention.

Every server process runs it; the DELETEs are idempotent, so several at once only
repeat each other's work. It never touches statebus.versions (each user's latest
version is kept whatever its age), nor a Stripe event that is not processed.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from statebus import sqlfiles

log = logging.getLogger("statebus.maintenance")

PRUNE_INTERVAL = 3600.0
# Stripe events deleted per transaction (docs/configuration.md has the measured cost).
STRIPE_PRUNE_BATCH = 10_000


async def prune_stripe_events(pool: asyncpg.Pool, batch: int = STRIPE_PRUNE_BATCH) -> int:
    """Deletes processed Stripe events past `stripe_events_retention`, a batch at a time."""
    total = 0
    while True:
        pruned: int = await pool.fetchval(
            sqlfiles.queries()["prune_stripe_events"], batch, timeout=300
        )
        total += pruned
        if pruned < batch:
            return total


async def prune_forever(pool: asyncpg.Pool, interval: float = PRUNE_INTERVAL) -> None:
    while True:
        try:
            pruned = await pool.fetchval(sqlfiles.queries()["prune_history"], timeout=300)
            if pruned:
                log.info("pruned %d history rows past retention", pruned)
        except Exception as exc:  # a failed round is retried at the next one
            log.warning("history pruning failed: %s", type(exc).__name__)
        try:
            pruned = await prune_stripe_events(pool)
            if pruned:
                log.info("pruned %d processed Stripe events past retention", pruned)
        except Exception as exc:
            log.warning("Stripe inbox pruning failed: %s", type(exc).__name__)
        await asyncio.sleep(interval)
