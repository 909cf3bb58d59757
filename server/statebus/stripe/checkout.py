"""`POST /v1/billing/checkout`: a Stripe Checkout Session for a user with no subscription.

One user, one open session: under the user's lock (billing.one_change, then the user's
row of statebus.stripe_locks across processes) the user's earlier open sessions are
expired in Stripe before a new one is made, so a customer who opened checkout for two
plans can pay only the last. A session found paid instead (the customer paid it while
this request ran, before its webhook arrived) means a subscription is coming: 409.
Sessions are recorded in statebus.checkout_sessions; the checkout's webhook marks them.
"""

from __future__ import annotations

from typing import Any

import stripe
from starlette.requests import Request
from starlette.responses import Response

from statebus import sqlfiles
from statebus.http import HTTPError, json_response
from statebus.stripe import store
from statebus.stripe.billing import (
    live_subscription,
    one_change,
    plan_change,
    return_url,
    stripe_failed,
)
from statebus.stripe.client import idempotency_key
from statebus.stripe.messages import UrlAnswer


def _has_subscription() -> HTTPError:
    return HTTPError(409, "has_subscription", "this user has a subscription: upgrade it")


async def checkout(request: Request) -> Response:
    change = await plan_change(request, "checkout requests")
    gateway, user_id, price = change.gateway, change.user_id, change.price
    q = sqlfiles.queries()
    paid_meanwhile = False
    url = ""
    async with one_change(request, user_id) as conn:
        if live_subscription(await conn.fetchrow(q["stripe_local_subscription"], user_id)):
            raise _has_subscription()
        user_key = f"user:{user_id}"
        sessions = await store.lock_key(conn, user_key)
        customer: str | None = await conn.fetchval(q["stripe_customer_for_user"], user_id)
        try:
            for row in await conn.fetch(q["checkout_open_sessions"], user_id):
                status = await gateway.expire_checkout(row["id"])
                await conn.execute(q["checkout_session_status"], row["id"], status)
                paid_meanwhile = paid_meanwhile or status == "complete"
            if not paid_meanwhile:
                params: dict[str, Any] = {
                    "mode": "subscription",
                    "line_items": [{"price": price, "quantity": 1}],
                    "client_reference_id": user_id,
                    "success_url": return_url(request, "success"),
                    "cancel_url": return_url(request, "cancel"),
                    "metadata": {"user_id": user_id},
                    "subscription_data": {"metadata": {"user_id": user_id}},
                }
                if customer is not None:
                    params["customer"] = customer
                # The user's n-th session: a retry of this request (not committed here)
                # gets the same session back, the next checkout a new one.
                key = idempotency_key("checkout", user_id, price, customer, sessions)
                session_id, url = await gateway.checkout_session(params, key)
                await conn.execute(q["checkout_session_insert"], session_id, user_id, price)
                await store.changed(conn, user_key)
        except stripe.StripeError as exc:
            raise stripe_failed(exc) from None
    if paid_meanwhile:  # after the commit: the sessions' statuses are kept
        raise _has_subscription()
    return json_response(UrlAnswer(url))
