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
from statebus.inputs import is_clean_text
from statebus.messages import upgrade_decoder
from statebus.routes import HTTPError, authenticate, json_response
from statebus.runtime import runtime
from statebus.states import read_state
from statebus.stripe import store
from statebus.stripe.client import StripeGateway, redact, upgrade_idempotency_key
from statebus.stripe.webhook import read_body

log = logging.getLogger("statebus.stripe")

GATEWAY_KEY = "stripe_gateway"
MAX_BODY_BYTES = 16 * 1024
MAX_PLAN_CHARS = 64  # plans.code's own CHECK


def gateway_of(request: Request) -> StripeGateway:
    gateway = runtime(request).extras.get(GATEWAY_KEY)
    if not isinstance(gateway, StripeGateway):
        raise HTTPError(503, "stripe_not_configured", "STRIPE_API_KEY is not set")
    return gateway


def client_message(exc: stripe.StripeError) -> str:
    """statebus's own words, except a card error's `user_message`, which Stripe writes for
    the card holder; other errors can quote object ids ("No such subscription: 'sub_...'")."""
    if isinstance(exc, stripe.CardError) and exc.user_message:
        return redact(exc.user_message)
    return "Stripe did not accept the change; nothing was changed"


async def upgrade(request: Request) -> Response:
    rt = runtime(request)
    gateway = gateway_of(request)
    principal = await authenticate(request)
    user_id = principal.user_id
    try:
        wanted = upgrade_decoder.decode(
            await read_body(request, MAX_BODY_BYTES, "upgrade requests")
        )
    except msgspec.DecodeError as exc:
        raise HTTPError(400, "bad_request", f'send {{"plan": "<code>"}}: {exc}') from None
    if not wanted.plan or len(wanted.plan) > MAX_PLAN_CHARS or not is_clean_text(wanted.plan):
        raise HTTPError(
            400, "bad_request", f"plan must be 1 to {MAX_PLAN_CHARS} characters of text"
        )
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
            raise HTTPError(502, "stripe_failed", client_message(exc)) from None
        await store.write_subscription(conn, changed, "upgrade_api")
    return json_response(await read_state(rt.pool, user_id))
