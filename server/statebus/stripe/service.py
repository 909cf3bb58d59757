"""The Stripe side of a running app: its API client and its inbox worker.

Made by the app's lifespan when STRIPE_API_KEY is set (`Runtime.stripe`), else absent:
the billing routes then answer 503 and the webhook still stores events (when a webhook
secret is set), which are applied once the key is configured.
"""

from __future__ import annotations

from dataclasses import dataclass

from statebus.runtime import Runtime
from statebus.stripe.client import StripeGateway
from statebus.stripe.worker import InboxWorker


@dataclass
class StripeService:
    gateway: StripeGateway
    worker: InboxWorker


async def start(rt: Runtime) -> None:
    if not rt.settings.stripe_api_key:
        return
    gateway = StripeGateway(rt.settings)
    worker = InboxWorker(rt.dsn, rt.pool, gateway, connect=rt.settings.stripe_connect)
    rt.stripe = StripeService(gateway, worker)
    worker.start()


async def stop(rt: Runtime) -> None:
    service, rt.stripe = rt.stripe, None
    if service is not None:
        await service.worker.stop()
        await service.gateway.aclose()
