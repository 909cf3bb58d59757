"""`statebus stripe-events [--failed] [--requeue EVENT_ID]`: stuck Stripe events.

Lists the stored events that are not done (failed for good, retrying, or waiting for
their customer's user) with their last error, then users' duplicate subscriptions; `--requeue` makes one due again with a
fresh attempt budget, after whatever made it fail was fixed (a plan's price, a user).
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

import asyncpg

from statebus import sqlfiles
from statebus.config import Settings
from statebus.database import database_url

LIMIT = 200


def run_stripe_events(settings: Settings, *, failed_only: bool, requeue: str | None) -> int:
    """Exit status: 0 done, 1 when the event to re-queue is not stored."""
    with database_url(settings) as dsn:
        return asyncio.run(_run(dsn, failed_only, requeue, sys.stdout))


async def _run(dsn: str, failed_only: bool, requeue: str | None, out: TextIO) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        q = sqlfiles.queries()
        if requeue is not None:
            if await conn.fetchval(q["stripe_inbox_requeue"], requeue) is None:
                print(f"stripe-events: no stored event {requeue}", file=sys.stderr)
                return 1
            print(f"{requeue}: re-queued", file=out)
            return 0
        rows = await conn.fetch(q["stripe_inbox_stuck"], failed_only, LIMIT)
        for row in rows:
            error = (row["last_error"] or "").replace("\n", " ")
            print(
                f"{row['id']}  {row['type']}  {row['status']}  attempts={row['attempts']}"
                f"  received={row['received_at'].isoformat()}  {error}",
                file=out,
            )
        kind = "failed" if failed_only else "stuck"
        more = f" (first {LIMIT})" if len(rows) == LIMIT else ""
        print(f"{len(rows)} {kind} event(s){more}", file=out)
        await _duplicates(conn, out)
        return 0
    finally:
        await conn.close()


async def _duplicates(conn: asyncpg.Connection, out: TextIO) -> None:
    """Second billed subscriptions kept out of users' states (docs/stripe.md): each one is
    for an operator to refund and cancel in Stripe; it disappears once it has ended."""
    rows = await conn.fetch(sqlfiles.queries()["stripe_duplicates_open"], LIMIT)
    for row in rows:
        print(
            f"duplicate {row['subscription_id']}  user={row['user_id']}"
            f"  customer={row['customer_id']}  kept={row['kept_subscription_id']}"
            f"  detected={row['detected_at'].isoformat()}  refund and cancel it in Stripe",
            file=out,
        )
    if rows:
        print(f"{len(rows)} duplicate subscription(s) to refund or cancel", file=out)
