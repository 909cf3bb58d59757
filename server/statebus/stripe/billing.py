"""`POST /v1/billing/checkout | portal | cancel | resume`: the flows a SaaS needs.

Cancel and resume work like the upgrade (upgrade.py): one change of a user at a time
(`one_change`), inside one database transaction, under the subscription's and customer's
locks, they change the subscription in Stripe and write what Stripe answered before the
locks are released, so the answer is the new envelope and the webhook that follows writes
nothing. Checkout (checkout.py) and portal only create a Stripe session and answer its
URL; the checkout's webhook links and writes the rest.
Error messages are statebus's own: Stripe's text and ids never reach the client.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import stripe
from asyncpg import Record
from starlette.requests import Request
from starlette.responses import Response

from statebus import sqlfiles
from statebus.auth import Principal
from statebus.http import HTTPError, authenticate, json_response, read_body
from statebus.inputs import is_clean_text
from statebus.keylocks import Busy
from statebus.runtime import runtime
from statebus.states import read_state
from statebus.stripe import store
from statebus.stripe.client import StripeGateway, idempotency_key, redact
from statebus.stripe.facts import ENDED_STATUSES, SubscriptionFacts
from statebus.stripe.messages import PlanRequest, UrlAnswer, plan_decoder

log = logging.getLogger("statebus.stripe")

MAX_BODY_BYTES = 16 * 1024
MAX_PLAN_CHARS = 64  # plans.code's own CHECK


def gateway_of(request: Request) -> StripeGateway:
    service = runtime(request).stripe
    if service is None:
        raise HTTPError(503, "stripe_not_configured", "Stripe is not configured on this server")
    return service.gateway


def stripe_failed(exc: stripe.StripeError) -> HTTPError:
    """502 in statebus's words; a card decline's own message is meant for the customer."""
    log.warning("Stripe call failed: %s %s", type(exc).__name__, exc.code or "")
    message = "Stripe did not accept the change; nothing was changed"
    if isinstance(exc, stripe.CardError) and exc.user_message:
        message = redact(exc.user_message)
    return HTTPError(502, "stripe_failed", message)


async def plan_request(request: Request, what: str) -> PlanRequest:
    """The `{"plan": ...}` body; `what` names the route's bodies in a 413."""
    try:
        wanted = plan_decoder.decode(await read_body(request, MAX_BODY_BYTES, what))
    except msgspec.DecodeError as exc:
        raise HTTPError(400, "bad_request", f'send {{"plan": "<code>"}}: {exc}') from None
    if not wanted.plan or len(wanted.plan) > MAX_PLAN_CHARS or not is_clean_text(wanted.plan):
        raise HTTPError(
            400, "bad_request", f"plan must be 1 to {MAX_PLAN_CHARS} characters of text"
        )
    return wanted


@dataclass(frozen=True)
class PlanChange:
    """A request to move a user to a plan sold through Stripe, checked."""

    gateway: StripeGateway
    user_id: str
    plan: str
    price: str


async def plan_change(request: Request, what: str) -> PlanChange:
    """Who asks for which plan and its price: 503, 401, 400 or 404 otherwise, in that
    order. `what` names the route's bodies in a 413."""
    gateway = gateway_of(request)
    user_id = (await authenticate(request)).user_id
    wanted = await plan_request(request, what)
    return PlanChange(gateway, user_id, wanted.plan, await plan_price(request, wanted.plan))


async def plan_price(request: Request, plan: str) -> str:
    row = await runtime(request).pool.fetchrow(sqlfiles.queries()["stripe_plan_price"], plan)
    if row is None or row["stripe_price_id"] is None:
        raise HTTPError(404, "unknown_plan", f"no plan {plan!r} sold through Stripe")
    price: str = row["stripe_price_id"]
    return price


def live_subscription(local: Record | None) -> str | None:
    """The Stripe subscription the user's row shows, unless there is none or it ended."""
    if local is None or local["stripe_subscription_id"] is None:
        return None
    if local["status"] in ENDED_STATUSES:
        return None
    sub_id: str = local["stripe_subscription_id"]
    return sub_id


def return_url(request: Request, outcome: str | None = None) -> str:
    base = str(request.base_url)
    return f"{base}?checkout={outcome}" if outcome else base


# -- one change at a time ---------------------------------------------------------------


def change_in_progress() -> HTTPError:
    return HTTPError(
        409,
        "change_in_progress",
        "another billing change of this user is in progress; try again in a moment",
    )


@contextlib.asynccontextmanager
async def one_change(request: Request, user_id: str) -> AsyncIterator[store.Conn]:
    """A pooled connection in a transaction, for one billing change of `user_id`.

    The user's earlier changes in this process are waited for first, without a connection
    (so a storm of one user's requests holds at most one); the database locks taken inside
    (store.lock) serialize other processes under lock_timeout. Either wait running out
    answers 409 change_in_progress, and nothing was changed."""
    rt = runtime(request)
    service = rt.stripe
    if service is None:
        raise HTTPError(503, "stripe_not_configured", "Stripe is not configured on this server")
    try:
        async with (
            service.changes.hold(user_id, rt.settings.billing_wait),
            rt.pool.acquire() as conn,
            conn.transaction(),
        ):
            yield conn
    except (Busy, asyncpg.LockNotAvailableError) as exc:
        log.info("billing change of a user refused, busy: %s", type(exc).__name__)
        raise change_in_progress() from None


async def update_until(
    gateway: StripeGateway,
    sub_id: str,
    params: dict[str, Any],
    key: str,
    done: Callable[[SubscriptionFacts], bool],
) -> SubscriptionFacts:
    """Sends one change and returns Stripe's subscription once `done` holds for it.

    A replayed answer (this key was used by a change that did not commit here) is checked
    against Stripe's current object; if that no longer shows the change (someone undid it
    in the meantime), it is sent once more under a key of its own. Never returns a
    subscription that does not show the change: the caller would answer with it."""
    for attempt in range(2):
        facts, replayed = await gateway.update(
            sub_id, params, key if attempt == 0 else f"{key}-again"
        )
        if replayed:
            facts = await gateway.subscription(sub_id)
        if done(facts):
            return facts
    log.warning("Stripe answered a billing change without making it")
    raise HTTPError(502, "stripe_failed", "Stripe did not make the change; try again")


# -- cancel and resume -------------------------------------------------------------------

Change = Callable[[SubscriptionFacts], dict[str, Any] | None]  # None: Stripe has it already


async def change_subscription(
    request: Request, principal: Principal, source: store.Source, change: Change
) -> Response:
    rt = runtime(request)
    gateway = gateway_of(request)
    user_id = principal.user_id
    q = sqlfiles.queries()
    async with one_change(request, user_id) as conn:
        sub_id = live_subscription(await conn.fetchrow(q["stripe_local_subscription"], user_id))
        if sub_id is None:
            raise HTTPError(409, "no_subscription", "this user has no live subscription")
        try:
            changes = await store.lock(conn, sub_id, None)
            current = await gateway.subscription(sub_id)
            await store.lock(conn, None, current.customer)
            await conn.execute(q["stripe_lock_user_row"], user_id)
            facts, params = current, change(current)
            if params is not None:
                # Named by what is asked of which subscription after how many changes,
                # all read under the lock: the next cancel is never this one's replay.
                key = idempotency_key(source, sub_id, sorted(params.items()), changes)
                facts = await update_until(
                    gateway, sub_id, params, key, lambda now: change(now) is None
                )
                await store.changed(conn, f"sub:{sub_id}")
            await store.write_subscription(conn, facts, source, gateway.subscription_or_none)
        except stripe.StripeError as exc:
            raise stripe_failed(exc) from None
    return json_response(await read_state(rt.pool, user_id))


def _cancel(facts: SubscriptionFacts) -> dict[str, Any] | None:
    if facts.cancel_at_period_end or facts.cancel_at is not None:
        return None  # already ends
    return {"cancel_at_period_end": True}


def _resume(facts: SubscriptionFacts) -> dict[str, Any] | None:
    if facts.cancel_at_period_end:
        return {"cancel_at_period_end": False}
    if facts.cancel_at is not None:  # flexible billing mode schedules its end with cancel_at
        return {"cancel_at": ""}  # "" unsets a field in Stripe's form encoding
    return None


async def cancel(request: Request) -> Response:
    gateway_of(request)
    return await change_subscription(request, await authenticate(request), "cancel", _cancel)


async def resume(request: Request) -> Response:
    gateway_of(request)
    return await change_subscription(request, await authenticate(request), "resume", _resume)


# -- portal ----------------------------------------------------------------------------------


async def portal(request: Request) -> Response:
    rt = runtime(request)
    gateway = gateway_of(request)
    user_id = (await authenticate(request)).user_id
    q = sqlfiles.queries()
    customer: str | None = await rt.pool.fetchval(q["stripe_customer_for_user"], user_id)
    if customer is None:
        raise HTTPError(409, "no_customer", "this user has no Stripe customer yet")
    try:
        url = await gateway.portal_url(customer, return_url(request))
    except stripe.StripeError as exc:
        raise stripe_failed(exc) from None
    return json_response(UrlAnswer(url))
