"""Writing Stripe's truth into the subscription tables (the only Stripe code that writes them).

Callers (inbox worker, upgrade API, reconcile) open a transaction, take the subscription's
lock with `lock_subscription` *before* reading Stripe, and call `write_subscription` with
what they read. Because every writer holds the lock from its Stripe read to its commit,
rows are written in the order Stripe was observed and never go back to an older state.
The triggers turn the commit into at most one new version per user; this module never
talks to the hub or to sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from statebus import sqlfiles
from statebus.stripe.client import ENDED_STATUSES, SubscriptionFacts

# A plain connection (CLI) or one lent by the pool (server).
Conn = asyncpg.Connection | PoolConnectionProxy
Source = Literal["stripe_webhook", "upgrade_api", "reconcile"]


class UnknownPrice(Exception):
    """The subscription's price is not any plan's `stripe_price_id`."""


@dataclass(frozen=True)
class Resolved:
    """Where a Stripe subscription belongs: the user and the row it should have."""

    user_id: str | None  # None: no user for this customer yet ("unmatched")
    plan: str
    facts: SubscriptionFacts

    def row(self) -> dict[str, object]:
        f = self.facts
        return {
            "plan": self.plan,
            "status": f.status,
            "stripe_subscription_id": f.id,
            "current_period_end": f.current_period_end,
            "cancel_at_period_end": f.cancel_at_period_end,
        }


@dataclass(frozen=True)
class WriteResult:
    outcome: Literal["written", "unchanged", "unmatched", "superseded"]
    user_id: str | None
    detail: str = ""


async def set_source(conn: Conn, source: Source) -> None:
    await conn.execute(sqlfiles.queries()["stripe_set_source"], source)


async def lock_subscription(conn: Conn, sub_id: str) -> None:
    """Held until the transaction ends; take it before reading the subscription from Stripe."""
    await conn.execute(sqlfiles.queries()["stripe_lock_subscription"], sub_id)


async def lock_customer(conn: Conn, customer_id: str) -> None:
    await conn.execute(sqlfiles.queries()["stripe_lock_customer"], customer_id)


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


async def resolve(conn: Conn, facts: SubscriptionFacts) -> Resolved:
    """Maps price to plan and customer to user; raises UnknownPrice for an unmapped price."""
    if facts.price_id is None:
        raise UnknownPrice(f"subscription {facts.id} has no price")
    plan: str | None = await conn.fetchval(
        sqlfiles.queries()["stripe_plan_for_price"], facts.price_id
    )
    if plan is None:
        raise UnknownPrice(
            f"price {facts.price_id} of subscription {facts.id} is no plan's stripe_price_id"
        )
    return Resolved(await user_for(conn, facts), plan, facts)


def supersedes(local: asyncpg.Record | None, facts: SubscriptionFacts) -> bool:
    """False when the user's row holds another, still live subscription and this one has
    ended: a cancelled old subscription must not replace the user's current one."""
    if local is None or local["stripe_subscription_id"] in (None, facts.id):
        return True
    return not (facts.ended and local["status"] not in ENDED_STATUSES)


async def write_subscription(conn: Conn, facts: SubscriptionFacts, source: Source) -> WriteResult:
    """Writes `facts` (read from Stripe under lock_subscription) for its user, inside the
    caller's transaction. Writes nothing when nothing changed."""
    q = sqlfiles.queries()
    if facts.customer:
        await lock_customer(conn, facts.customer)
    resolved = await resolve(conn, facts)
    if resolved.user_id is None:
        return WriteResult("unmatched", None, f"no user for customer {facts.customer}")
    local = await conn.fetchrow(q["stripe_local_subscription"], resolved.user_id)
    if not supersedes(local, facts):
        assert local is not None
        detail = f"user keeps live subscription {local['stripe_subscription_id']}"
        return WriteResult("superseded", resolved.user_id, detail)
    await set_source(conn, source)
    row = resolved.row()
    written = await conn.fetchval(
        q["stripe_upsert_subscription"],
        resolved.user_id,
        row["plan"],
        row["status"],
        row["stripe_subscription_id"],
        row["current_period_end"],
        row["cancel_at_period_end"],
    )
    return WriteResult("written" if written else "unchanged", resolved.user_id)


async def link_customer(conn: Conn, user_id: str, customer_id: str, source: Source) -> int:
    """Links a customer to a user (checkout) and re-queues the customer's parked events;
    returns how many were re-queued. Takes the customer's lock."""
    q = sqlfiles.queries()
    await lock_customer(conn, customer_id)
    await set_source(conn, source)
    await conn.execute(q["stripe_link_customer"], user_id, customer_id)
    requeued: int | None = await conn.fetchval(q["stripe_inbox_requeue_customer"], customer_id)
    return requeued or 0
