"""`GET /v1/config`: what a page may know about this server before anyone signs in.

The demo page (or an app's own UI) uses it to say "billing is not set up here" before
anyone clicks, and to list the plans it can offer. It must never carry a secret, a
Stripe id or anything about a user: it answers without a token.
"""

from __future__ import annotations

import logging

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from statebus import sqlfiles
from statebus.http import json_response
from statebus.runtime import runtime

log = logging.getLogger("statebus.public")


class PublicPlan(msgspec.Struct):
    code: str
    name: str
    rank: int


class PublicConfig(msgspec.Struct):
    stripe: bool  # STRIPE_API_KEY is set: upgrade, checkout, portal, cancel, resume work
    stripe_webhook: bool  # STRIPE_WEBHOOK_SECRET is set: /v1/stripe/webhook accepts events
    plans: list[PublicPlan]  # plans sold through Stripe, cheapest first
    # What the product calls each limit (and usage metric): plans.limit_labels, merged.
    limit_labels: dict[str, str] = {}


async def config(request: Request) -> Response:
    rt = runtime(request)
    try:
        rows = await rt.pool.fetch(sqlfiles.queries()["public_plans"], timeout=2)
        plans = [PublicPlan(r["code"], r["name"], r["rank"]) for r in rows]
        labels = await rt.pool.fetchval(sqlfiles.queries()["public_limit_labels"], timeout=2)
        limit_labels = msgspec.json.decode(labels, type=dict[str, str])
    except Exception as exc:  # the page still learns about Stripe while the database is away
        log.warning("GET /v1/config could not read plans: %s", type(exc).__name__)
        plans, limit_labels = [], {}
    return json_response(
        PublicConfig(
            stripe=rt.settings.stripe_api_key is not None,
            stripe_webhook=bool(rt.settings.stripe_webhook_secrets),
            plans=plans,
            limit_labels=limit_labels,
        ),
        headers={"Cache-Control": "no-cache"},
    )
