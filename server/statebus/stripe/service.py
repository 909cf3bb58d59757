"""The Stripe side of a running app: its API client, its inbox worker, its change locks.

Made by the app's lifespan when STRIPE_API_KEY is set (`Runtime.stripe`), else absent:
the billing routes then answer 503 and the webhook still stores events (when a webhook
secret is set), which are applied once the key is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import asyncpg

from statebus import metrics, sqlfiles
from statebus.keylocks import KeyLocks
from statebus.runtime import Runtime
from statebus.stripe.client import StripeGateway
from statebus.stripe.worker import InboxWorker

DUPLICATES_REFRESH_SECONDS = 30.0


@dataclass
class StripeService:
    gateway: StripeGateway
    worker: InboxWorker
    # Billing changes in progress, by user: one at a time, waited for without a connection.
    changes: KeyLocks = field(default_factory=KeyLocks)
    counting: asyncio.Task[None] | None = None


async def start(rt: Runtime) -> None:
    if not rt.settings.stripe_api_key:
        return
    gateway = StripeGateway(rt.settings)
    worker = InboxWorker(rt.dsn, rt.pool, gateway, connect=rt.settings.stripe_connect)
    rt.stripe = StripeService(gateway, worker)
    worker.start()
    rt.stripe.counting = asyncio.create_task(_count_duplicates(rt.pool), name="stripe-duplicates")


async def stop(rt: Runtime) -> None:
    service, rt.stripe = rt.stripe, None
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
