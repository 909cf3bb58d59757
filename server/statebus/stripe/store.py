"""Writing Stripe's truth into the subscription tables (the only Stripe code that writes them).

Callers (inbox worker, billing routes, reconcile) open a transaction and take the
subscription's lock, then its customer's, *before* reading Stripe (`lock`), and call
`write_subscription` with what they read. Every writer for a customer holds that lock
from its Stripe reads to its commit, so rows follow the order Stripe was observed in and
never go back to an older state, and the choice between a customer's subscriptions is
made on fresh reads. The triggers turn the commit into at most one version per user.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from statebus import metrics, sqlfiles
from statebus.stripe.facts import Item, SubscriptionFacts, rank

# A plain connection (CLI) or one lent by the pool (server).
Conn = asyncpg.Connection | PoolConnectionProxy
Source = Literal["stripe_webhook", "upgrade_api", "checkout", "cancel", "resume", "reconcile"]
# Statuses a customer is charged in: a second such subscription of one user is a duplicate.
BILLED_STATUSES = frozenset({"active", "trialing", "past_due"})
log = logging.getLogger("statebus.stripe")
# Reads another subscription from Stripe (None when Stripe no longer has it).
Fetch = Callable[[str], Awaitable[SubscriptionFacts | None]]


class PlanConflict(Exception):
    """Several of a subscription's items are plans: which one the user is on is unclear."""


class CustomerTaken(Exception):
    """The Stripe customer is already linked to another user."""


@dataclass(frozen=True)
class Resolved:
    """Where a Stripe subscription belongs: its user, and its plan item if it has one."""

    user_id: str | None  # None: no user for this customer yet ("unmatched")
    plan: str | None  # None: no item's price is a plan's stripe_price_id
    item: Item | None
    facts: SubscriptionFacts

    @property
    def why_no_plan(self) -> str | None:
        if self.plan is not None:
            return None
        prices = ", ".join(self.facts.prices) or "none"
        return f"no item's price is a plan's stripe_price_id (prices: {prices}); plan unchanged"

    def row(self, plan: str) -> dict[str, object]:
        f = self.facts
        period_end = _period_end(f, self.item)
        ends_at = f.ends_at(period_end)
        return {
            "plan": plan,
            "status": f.status,
            "stripe_subscription_id": f.id,
            "current_period_end": period_end,
            # Flexible billing mode ends a subscription at period end with cancel_at alone.
            "cancel_at_period_end": f.cancel_at_period_end
            or (ends_at is not None and ends_at == period_end),
            "cancel_at": ends_at,
        }


def _period_end(facts: SubscriptionFacts, item: Item | None) -> datetime | None:
    """The plan item's period; without one, the subscription's (older API versions put it
    there), else the first item's that has one."""
    if item is not None and item.current_period_end is not None:
        return item.current_period_end
    if facts.period_end is not None:
        return facts.period_end
    return next((i.current_period_end for i in facts.items if i.current_period_end), None)


@dataclass(frozen=True)
class WriteResult:
    outcome: Literal["written", "unchanged", "unmatched", "superseded", "no_plan", "duplicate"]
    user_id: str | None
    detail: str | None = None


async def set_source(conn: Conn, source: Source) -> None:
    await conn.execute(sqlfiles.queries()["stripe_set_source"], source)


async def lock(conn: Conn, sub_id: str | None, customer_id: str | None) -> int:
    """Held until the transaction ends; always subscription first, then customer. Returns
    the subscription's count of changes committed under its lock (0 without one), the
    part of an idempotency key that tells one change from the next.

    The locks are rows of statebus.stripe_locks, which only the owner may lock; the wait
    is bounded by the connection's lock_timeout (STATEBUS_LOCK_TIMEOUT), past which
    asyncpg.LockNotAvailableError is raised and the caller's transaction rolls back."""
    changes = 0
    if sub_id:
        changes = await lock_key(conn, f"sub:{sub_id}")
    if customer_id:
        await lock_key(conn, f"customer:{customer_id}")
    return changes


async def lock_key(conn: Conn, key: str) -> int:
    """Locks one row of statebus.stripe_locks (made on first use); returns its count."""
    q = sqlfiles.queries()
    await conn.execute(q["stripe_lock_row"], key)
    changes: int = await conn.fetchval(q["stripe_lock"], key)
    return changes


async def changed(conn: Conn, key: str) -> None:
    """Counts one change made under the lock `key`, committed with the caller's transaction:
    a change that did not commit keeps its idempotency key for its retry."""
    await conn.execute(sqlfiles.queries()["stripe_lock_changed"], key)


async def user_for(conn: Conn, facts: SubscriptionFacts) -> str | None:
    """The user whose row already names this subscription, else the customer's linked
    user, else the subscription's `metadata.user_id` if that user exists."""
    q = sqlfiles.queries()
    owner: str | None = await conn.fetchval(q["stripe_user_for_subscription"], facts.id)
    if owner is not None:
        return owner
    if facts.customer:
        user_id: str | None = await conn.fetchval(q["stripe_user_for_customer"], facts.customer)
        if user_id is not None:
            return user_id
    if facts.metadata_user_id and await conn.fetchval(
        q["stripe_user_exists"], facts.metadata_user_id
    ):
        return facts.metadata_user_id
    return None


async def plan_item(conn: Conn, facts: SubscriptionFacts) -> tuple[str | None, Item | None]:
    """The item whose price is a plan's stripe_price_id (add-ons are the others)."""
    rows = await conn.fetch(sqlfiles.queries()["stripe_plans_for_prices"], facts.prices)
    plans = {row["stripe_price_id"]: row["code"] for row in rows}
    items = [item for item in facts.items if item.price_id in plans]
    if len(items) > 1:
        codes = ", ".join(sorted({plans[i.price_id] for i in items if i.price_id}))
        raise PlanConflict(f"subscription {facts.id} has several plan items ({codes})")
    if not items:
        return None, None
    price_id = items[0].price_id
    assert price_id is not None
    return plans[price_id], items[0]


async def resolve(conn: Conn, facts: SubscriptionFacts) -> Resolved:
    """Maps the plan item to a plan and the customer to a user; raises PlanConflict."""
    plan, item = await plan_item(conn, facts)
    return Resolved(await user_for(conn, facts), plan, item, facts)


async def write_subscription(
    conn: Conn, facts: SubscriptionFacts, source: Source, fetch: Fetch
) -> WriteResult:
    """Writes `facts` (read from Stripe under `lock`) for its user, inside the caller's
    transaction, unless the user's row holds a subscription that ranks higher (read again
    with `fetch`). Writes nothing when nothing changed."""
    q = sqlfiles.queries()
    resolved = await resolve(conn, facts)
    user_id = resolved.user_id
    if user_id is None:
        return WriteResult("unmatched", None, f"no user for customer {facts.customer}")
    local = await conn.fetchrow(q["stripe_local_subscription"], user_id)
    shown = local["stripe_subscription_id"] if local is not None else None
    if shown is not None and shown != facts.id:
        other = await fetch(shown)
        if other is not None and billed(other) and billed(facts):
            return await flag_duplicate(conn, user_id, facts, shown)
        if other is not None and rank(other) > rank(facts):
            if facts.ended:
                await conn.execute(q["stripe_duplicate_resolve"], facts.id)
            return WriteResult("superseded", user_id, f"user keeps subscription {shown}")
    plan = resolved.plan or (local["plan"] if local is not None else None)
    if plan is None:
        return WriteResult("no_plan", user_id, resolved.why_no_plan)
    # Shown from now on (the first ended, say): no longer a duplicate to act on.
    await conn.execute(q["stripe_duplicate_resolve"], facts.id)
    await set_source(conn, source)
    row = resolved.row(plan)
    written = await conn.fetchval(q["stripe_upsert_subscription"], user_id, *row.values())
    return WriteResult("written" if written else "unchanged", user_id, resolved.why_no_plan)


async def checkout_completed(conn: Conn, session_id: str | None) -> None:
    """A session statebus made was paid: a later checkout need not expire it."""
    if session_id is not None:
        await conn.execute(sqlfiles.queries()["checkout_session_status"], session_id, "complete")


def billed(facts: SubscriptionFacts) -> bool:
    """The customer pays for it now (what a second one must not silently add to)."""
    return facts.status in BILLED_STATUSES


async def flag_duplicate(
    conn: Conn, user_id: str, facts: SubscriptionFacts, kept: str
) -> WriteResult:
    """Policy (docs/stripe.md): the user keeps the subscription shown first; a second one
    billed at the same time stays out of the state and is listed for an operator."""
    q = sqlfiles.queries()
    flagged = await conn.fetchval(
        q["stripe_duplicate_insert"], facts.id, user_id, facts.customer or None, kept
    )
    if flagged is not None:
        log.warning("user has a second billed subscription; flagged for an operator")
        metrics.stripe_duplicates.inc()
    detail = f"duplicate: user keeps subscription {kept}; see `statebus stripe-events`"
    return WriteResult("duplicate", user_id, detail)


async def link_customer(conn: Conn, user_id: str, customer_id: str, source: Source) -> int:
    """Links a customer to a user (checkout) and re-queues the customer's parked events;
    returns how many were re-queued. The caller holds the customer's lock. Raises
    CustomerTaken when another user has this customer."""
    q = sqlfiles.queries()
    owner: str | None = await conn.fetchval(q["stripe_user_for_customer"], customer_id)
    if owner is not None and owner != user_id:
        raise CustomerTaken(f"customer {customer_id} is linked to another user")
    if await conn.fetchval(q["stripe_billed_elsewhere"], user_id, customer_id):
        # A second checkout's customer while the first one's subscription bills: the user
        # stays with the first (its subscription is kept; the second is a duplicate).
        return 0
    await set_source(conn, source)
    await conn.execute(q["stripe_link_customer"], user_id, customer_id)
    requeued: int | None = await conn.fetchval(q["stripe_inbox_requeue_customer"], customer_id)
    return requeued or 0
