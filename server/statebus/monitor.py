"""What /metrics and readiness need from the database, polled in the background.

Every second: how full the NOTIFY queue is (`pg_notification_queue_usage()`). One
LISTENing session idle in a transaction anywhere in the cluster pins the queue, and
once it is full every tracked commit fails; past `alert` (a fraction) the process logs
a warning naming the cause and reports not ready, well before that. Every 15 seconds:
the Stripe inbox's backlog by status. Reads only; a failed poll is retried next time
(a database that does not answer is `/readyz`'s to report, not this loop's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from statebus import metrics, sqlfiles
from statebus.delivery import DeliveryHealth

log = logging.getLogger("statebus.monitor")

INBOX_EVERY = 15  # polls between two counts of the Stripe inbox
BACKLOG = ("pending", "retrying", "unmatched", "failed")


class Monitor:
    def __init__(
        self, pool: asyncpg.Pool, health: DeliveryHealth, *, alert: float, interval: float = 1.0
    ) -> None:
        self._pool, self._health = pool, health
        self.alert, self.interval = alert, interval
        self._alerting = False

    async def run(self) -> None:
        polls = 0
        while True:
            with contextlib.suppress(Exception):  # retried on the next poll
                await self.notify_queue()
                if polls % INBOX_EVERY == 0:
                    await self.inbox()
            polls += 1
            self.pool_gauges()
            await asyncio.sleep(self.interval)

    async def notify_queue(self) -> None:
        usage = float(
            await self._pool.fetchval(sqlfiles.queries()["notify_queue_usage"], timeout=5)
        )
        metrics.notify_queue_usage.set(usage)
        if usage >= self.alert:
            reason = f"NOTIFY queue {usage * 100:.3g}% full (alert at {self.alert * 100:.3g}%)"
            if not self._alerting:
                self._alerting = True
                log.warning(
                    "%s: a session LISTENing and idle in a transaction is pinning it; when "
                    "it is full every tracked commit fails. Find the session with the "
                    "query in docs/operations.md (NOTIFY queue) and end it",
                    reason,
                )
            self._health.set_problem("notify_queue", reason)
        elif self._alerting:
            self._alerting = False
            log.warning("NOTIFY queue back to %.3g%% full", usage * 100)
            self._health.clear_problem("notify_queue")

    async def inbox(self) -> None:
        rows = await self._pool.fetch(sqlfiles.queries()["stripe_inbox_backlog"], timeout=5)
        counts = {row["status"]: row["n"] for row in rows}
        for status in BACKLOG:
            metrics.stripe_inbox.labels(status).set(counts.get(status, 0))

    def pool_gauges(self) -> None:
        size, idle = self._pool.get_size(), self._pool.get_idle_size()
        metrics.pool_connections.labels("in_use").set(size - idle)
        metrics.pool_connections.labels("idle").set(idle)
        metrics.pool_waiting.set(_waiting(self._pool))


def _waiting(pool: asyncpg.Pool) -> int:
    """Acquirers waiting for a free connection. asyncpg has no public count: its pool
    hands connections out through an asyncio.Queue, whose waiting getters are these."""
    queue = getattr(pool, "_queue", None)
    getters = getattr(queue, "_getters", None)
    return sum(1 for getter in getters if not getter.done()) if getters is not None else 0
