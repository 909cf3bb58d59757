"""The Stripe side of a running app: its API client, its inbox worker, its change locks.

Made by the app's lifespan when STRIPE_API_KEY is set: `start()` returns the service and
the lifespan stores it as `Runtime.stripe` (this module never imports the runtime's
module for that, so the two stay out of each other's import graph); else absent:
the billing routes then answer 503 and the webhook still stores events (when a webhook
secret is set), which are applied once the key is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import asyncpg

from statebus import metrics, sqlfiles
from statebus.config import Settings
from statebus.keylocks import KeyLocks
from statebus.stripe.gateway import StripeGateway
from statebus.stripe.worker import InboxWorker

DUPLICATES_REFRESH_SECONDS = 30.0


@dataclass
class StripeService:
    gateway: StripeGateway
    worker: InboxWorker
    # Billing changes in progress, by user: one at a time, waited for without a connection.
    changes: KeyLocks = field(default_factory=KeyLocks)
    counting: asyncio.Task[None] | None = None


async def start(settings: Settings, dsn: str, pool: asyncpg.Pool) -> StripeService | None:
    """The running service, or None when no STRIPE_API_KEY is set."""
    if not settings.stripe_api_key:
        return None
    gateway = StripeGateway(settings)
    worker = InboxWorker(dsn, pool, gateway, connect=settings.stripe_connect)
    service = StripeService(gateway, worker)
    worker.start()
    service.counting = asyncio.create_task(_count_duplicates(pool), name="stripe-duplicates")
    return service


async def stop(service: StripeService | None) -> None:
    if service is not None:
        if service.counting is not None:
            service.counting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await service.counting
        await service.worker.stop()
        await service.gateway.aclose()


async def _count_duplicates(pool: asyncpg.Pool) -> None:
    """Keeps /metrics' count of open duplicate subscriptions current in every process
    (the process that flags one counts it at once, store.flag_duplicate)."""
    while True:
        with contextlib.suppress(Exception):  # the next round tries again
            count = await pool.fetchval(sqlfiles.queries()["stripe_duplicates_open_count"])
            metrics.stripe_duplicates.set(count)
        await asyncio.sleep(DUPLICATES_REFRESH_SECONDS)
