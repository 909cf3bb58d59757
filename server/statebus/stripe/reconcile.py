"""`statebus reconcile [--user ID] [--dry-run]`: read Stripe, print and repair drift.

Missed webhooks, a hand edit in psql, a restore from backup: whatever made a row differ
from Stripe, this lists every subscription in Stripe (or one user's), compares it with
the row, prints one line per differing field and, unless --dry-run, writes Stripe's
state with the same locked write the webhook worker uses (source `reconcile`).
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from typing import TextIO

import asyncpg
import stripe

from statebus import sqlfiles
from statebus.config import Settings, lock_timeout_ms
from statebus.database import database_url
from statebus.stripe import store
from statebus.stripe.client import StripeGateway
from statebus.stripe.facts import SubscriptionFacts, rank

FIELDS = (
    "plan",
    "status",
    "stripe_subscription_id",
    "current_period_end",
    "cancel_at_period_end",
    "cancel_at",
)


def run_reconcile(settings: Settings, *, user_id: str | None, dry_run: bool) -> int:
    """Exit status: 0 when done (differences or not), 2 when Stripe is not configured."""
    if not settings.stripe_api_key:
        print("reconcile: STRIPE_API_KEY is not set", file=sys.stderr)
        return 2
    with database_url(settings) as dsn:
        return asyncio.run(_reconcile(settings, dsn, user_id, dry_run, sys.stdout))


def _show(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _best(candidates: list[store.Resolved]) -> store.Resolved:
    """The user's subscription that counts, by the ranking webhooks and upgrades use."""
    return max(candidates, key=lambda r: rank(r.facts))


async def _stripe_subscriptions(
    conn: store.Conn, gateway: StripeGateway, user_id: str | None
) -> list[SubscriptionFacts]:
    if user_id is None:
        return [facts async for facts in gateway.subscriptions()]
    q = sqlfiles.queries()
    found: list[SubscriptionFacts] = []
    customer: str | None = await conn.fetchval(q["stripe_customer_for_user"], user_id)
    if customer is not None:
        found = [facts async for facts in gateway.subscriptions(customer)]
    local = await conn.fetchrow(q["stripe_local_subscription"], user_id)
    sub_id = local["stripe_subscription_id"] if local is not None else None
    if sub_id is not None and sub_id not in {f.id for f in found}:
        try:
            found.append(await gateway.subscription(sub_id))
        except stripe.InvalidRequestError:
            pass  # reported below as "not found in Stripe"
    return found


async def _reconcile(
    settings: Settings, dsn: str, user_id: str | None, dry_run: bool, out: TextIO
) -> int:
    gateway = StripeGateway(settings)
    # A lock held by a running server's change fails this run fast instead of hanging it.
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            sqlfiles.queries()["set_session_lock_timeout"], lock_timeout_ms(settings)
        )
        subs = await _stripe_subscriptions(conn, gateway, user_id)
        by_user: dict[str, list[store.Resolved]] = {}
        for facts in subs:
            try:
                resolved = await store.resolve(conn, facts)
            except store.PlanConflict as exc:
                print(f"{facts.id}: skipped, {exc}", file=out)
                continue
            if resolved.user_id is None:
                print(f"{facts.id}: no user for customer {facts.customer}", file=out)
            elif user_id is None or resolved.user_id == user_id:
                by_user.setdefault(resolved.user_id, []).append(resolved)

        differences = repaired = 0
        for owner, candidates in sorted(by_user.items()):
            chosen = _best(candidates)
            found = await _differences(conn, owner, chosen)
            for line in found:
                print(f"{owner} {chosen.facts.id}: {line}", file=out)
            differences += len(found)
            if found and not dry_run and await _repair(conn, gateway, chosen.facts.id):
                repaired += 1

        seen = {f.id for f in subs}
        rows = await conn.fetch(sqlfiles.queries()["stripe_local_subscriptions"], user_id)
        for row in rows:
            if row["stripe_subscription_id"] not in seen:
                print(
                    f"{row['user_id']} {row['stripe_subscription_id']}: not found in Stripe",
                    file=out,
                )
                differences += 1
        outcome = "dry run, nothing changed" if dry_run else f"repaired {repaired} user(s)"
        print(f"reconcile: {differences} difference(s); {outcome}", file=out)
        return 0
    finally:
        await conn.close()
        await gateway.aclose()


async def _differences(conn: store.Conn, owner: str, chosen: store.Resolved) -> list[str]:
    local = await conn.fetchrow(sqlfiles.queries()["stripe_local_subscription"], owner)
    plan = chosen.plan or (local["plan"] if local is not None else None)
    if plan is None:
        return [f"no subscription row, and {chosen.why_no_plan}"]
    wanted = chosen.row(plan)
    if local is None:
        return [f"no subscription row; Stripe has plan {plan}, {chosen.facts.status}"]
    return [
        f"{name} {_show(local[name])} -> {_show(wanted[name])}"
        for name in FIELDS
        if local[name] != wanted[name]
    ]


async def _repair(conn: store.Conn, gateway: StripeGateway, sub_id: str) -> bool:
    """Writes Stripe's state as read again under the locks (it may have moved meanwhile)."""
    async with conn.transaction():
        await store.lock(conn, sub_id, None)
        fresh = await gateway.subscription(sub_id)
        await store.lock(conn, None, fresh.customer)
        result = await store.write_subscription(
            conn, fresh, "reconcile", gateway.subscription_or_none
        )
    return result.outcome == "written"
