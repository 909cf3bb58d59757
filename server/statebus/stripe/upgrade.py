"""`POST /v1/billing/upgrade`: change the user's plan in Stripe, then in the database.

One change of a user at a time (billing.one_change). The Stripe call happens inside the
database transaction, under the subscription's and customer's locks (store.py): if Stripe fails, the transaction rolls back and nothing was
written (502); if it succeeds, the returned subscription is written before the locks are
released, so the webhook that follows re-reads the same state and writes nothing. Only
the plan item's price changes: add-on items stay as they are.
"""

from __future__ import annotations

import stripe
from starlette.requests import Request
from starlette.responses import Response

from statebus import sqlfiles
from statebus.http import HTTPError, json_response
from statebus.runtime import runtime
from statebus.states import read_state
from statebus.stripe import store
from statebus.stripe.billing import (
    live_subscription,
    one_change,
    plan_change,
    stripe_failed,
    update_until,
)
from statebus.stripe.client import idempotency_key
from statebus.stripe.facts import SubscriptionFacts


async def upgrade(request: Request) -> Response:
    rt = runtime(request)
    change = await plan_change(request, "upgrade requests")
    gateway, user_id, target_price = change.gateway, change.user_id, change.price
    q = sqlfiles.queries()
    async with one_change(request, user_id) as conn:
        local = await conn.fetchrow(q["stripe_local_subscription"], user_id)
        sub_id = live_subscription(local)
        if local is None or sub_id is None:
            raise HTTPError(409, "no_subscription", "this user has no live subscription")
        if local["plan"] == change.plan:
            raise HTTPError(409, "already_on_plan", f"already on {change.plan}")
        try:
            changes = await store.lock(conn, sub_id, None)
            current = await gateway.subscription(sub_id)
            await store.lock(conn, None, current.customer)
            await conn.execute(q["stripe_lock_user_row"], user_id)
            try:
                _, item = await store.plan_item(conn, current)
            except store.PlanConflict:
                raise HTTPError(
                    409, "unclear_plan", "this subscription has several plans; change it in Stripe"
                ) from None
            if item is None:
                raise HTTPError(409, "no_plan_item", "this subscription has no plan to change")
            changed = current
            if item.price_id != target_price:  # else Stripe has it already: just catch up
                # Deterministic: this item from this price to that one, after `changes`
                # changes of the subscription, all read under its lock.
                key = idempotency_key(
                    "upgrade", sub_id, item.id, item.price_id, target_price, changes
                )
                params = {
                    "items": [{"id": item.id, "price": target_price}],
                    "proration_behavior": rt.settings.proration_behavior,
                }

                def done(now: SubscriptionFacts) -> bool:
                    return now.item_for(target_price) is not None

                changed = await update_until(gateway, sub_id, params, key, done)
                await store.changed(conn, f"sub:{sub_id}")
            await store.write_subscription(
                conn, changed, "upgrade_api", gateway.subscription_or_none
            )
        except stripe.StripeError as exc:
            raise stripe_failed(exc) from None
    return json_response(await read_state(rt.pool, user_id))
