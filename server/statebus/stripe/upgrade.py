"""`POST /v1/billing/upgrade`: change the user's plan in Stripe, then in the database.

The Stripe call happens inside the database transaction, under the subscription's lock
(store.py): if Stripe fails, the transaction rolls back and nothing was written (502);
if it succeeds, the returned subscription is written before the lock is released, so the
webhook that follows re-reads the same state and writes nothing (no second version).
"""

from __future__ import annotations

import logging

import msgspec
import stripe
from starlette.requests import Request
from starlette.responses import Response

from statebus import sqlfiles
from statebus.http import HTTPError, authenticate, json_response, read_body
from statebus.runtime import runtime
from statebus.states import read_state
from statebus.stripe import store
from statebus.stripe.client import StripeGateway, redact, upgrade_idempotency_key
from statebus.stripe.messages import plan_decoder

log = logging.getLogger("statebus.stripe")

MAX_BODY_BYTES = 16 * 1024


def gateway_of(request: Request) -> StripeGateway:
    service = runtime(request).stripe
    if service is None:
        raise HTTPError(503, "stripe_not_configured", "Stripe is not configured on this server")
    return service.gateway


async def upgrade(request: Request) -> Response:
    rt = runtime(request)
    gateway = gateway_of(request)
    principal = await authenticate(request)
    user_id = principal.user_id
    try:
        wanted = plan_decoder.decode(await read_body(request, MAX_BODY_BYTES))
    except msgspec.DecodeError as exc:
        raise HTTPError(400, "bad_request", f'send {{"plan": "<code>"}}: {exc}') from None
    q = sqlfiles.queries()
    plan = await rt.pool.fetchrow(q["stripe_plan_price"], wanted.plan)
    if plan is None or plan["stripe_price_id"] is None:
        raise HTTPError(404, "unknown_plan", f"no plan {wanted.plan!r} sold through Stripe")
    target_price: str = plan["stripe_price_id"]

    async with rt.pool.acquire() as conn, conn.transaction():
        local = await conn.fetchrow(q["stripe_local_subscription"], user_id)
        if local is None or local["stripe_subscription_id"] is None:
            raise HTTPError(409, "no_subscription", "this user has no Stripe subscription")
        if local["plan"] == wanted.plan:
            raise HTTPError(409, "already_on_plan", f"already on {wanted.plan}")
        sub_id: str = local["stripe_subscription_id"]
        await store.lock_subscription(conn, sub_id)
        version: int = await conn.fetchval(q["stripe_user_version"], user_id)
        try:
            current = await gateway.subscription(sub_id)
            if current.price_id == target_price:
                changed = current  # Stripe has it already (an earlier try): just catch up
            else:
                key = upgrade_idempotency_key(
                    user_id, sub_id, current.price_id or "", target_price, version
                )
                changed, replayed = await gateway.change_price(
                    current,
                    target_price,
                    proration=rt.settings.proration_behavior,
                    idempotency_key=key,
                )
                if replayed:  # an old answer for this key may be stale: read the truth
                    changed = await gateway.subscription(sub_id)
        except stripe.StripeError as exc:
            log.warning("upgrade of %s failed in Stripe: %s", sub_id, type(exc).__name__)
            message = redact(exc.user_message or "Stripe did not accept the change")
            raise HTTPError(502, "stripe_failed", message) from None
        await store.write_subscription(conn, changed, "upgrade_api")
    return json_response(await read_state(rt.pool, user_id))
