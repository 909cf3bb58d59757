"""Stripe's HTTP routes (docs/protocol.md)."""

from __future__ import annotations

from starlette.routing import Route

from statebus.stripe.billing import cancel, portal, resume
from statebus.stripe.checkout import checkout
from statebus.stripe.upgrade import upgrade
from statebus.stripe.webhook import stripe_webhook

ROUTES: list[Route] = [
    Route("/v1/stripe/webhook", stripe_webhook, methods=["POST"]),
    Route("/v1/billing/upgrade", upgrade, methods=["POST"]),
    Route("/v1/billing/checkout", checkout, methods=["POST"]),
    Route("/v1/billing/portal", portal, methods=["POST"]),
    Route("/v1/billing/cancel", cancel, methods=["POST"]),
    Route("/v1/billing/resume", resume, methods=["POST"]),
]
