"""Starts and stops the Stripe side of the app: the API client and the inbox worker.

Both need STRIPE_API_KEY. Without it the webhook still stores events (when a webhook
secret is set); they stay pending and are applied once the key is configured.
"""

from __future__ import annotations

from statebus.runtime import Runtime
from statebus.stripe.client import StripeGateway
from statebus.stripe.upgrade import GATEWAY_KEY
from statebus.stripe.worker import InboxWorker

WORKER_KEY = "stripe_worker"


async def start(rt: Runtime) -> None:
    if not rt.settings.stripe_api_key:
        return
    gateway = StripeGateway(rt.settings)
    worker = InboxWorker(rt.dsn, rt.pool, gateway)
    rt.extras[GATEWAY_KEY], rt.extras[WORKER_KEY] = gateway, worker
    worker.start()


async def stop(rt: Runtime) -> None:
    worker = rt.extras.pop(WORKER_KEY, None)
    if isinstance(worker, InboxWorker):
        await worker.stop()
    gateway = rt.extras.pop(GATEWAY_KEY, None)
    if isinstance(gateway, StripeGateway):
        await gateway.aclose()
