"""What pruning the Stripe inbox costs: N processed events past their retention, deleted
the way every server does it (statebus.maintenance.prune_stripe_events, batches of
10,000), on an embedded PostgreSQL in a fresh $STATEBUS_HOME.

    python scripts/measure_inbox_prune.py [--events 100000] [--payload-bytes 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import asyncpg

from statebus import config
from statebus.database import database_url
from statebus.maintenance import STRIPE_PRUNE_BATCH, prune_stripe_events
from statebus.migrations import migrate

# N events of about `payload-bytes` each, processed 40 days ago, plus as many failed ones
# of the same age (never pruned) so the prune has something to skip.
FILL = """
INSERT INTO statebus.stripe_events
    (id, type, created, payload, status, attempts, applied_at, received_at, next_attempt_at)
SELECT 'evt_' || n || '_' || s, 'customer.subscription.updated', now(),
       jsonb_build_object('id', 'evt_' || n, 'data', jsonb_build_object('object',
           jsonb_build_object('id', 'sub_' || n, 'pad', repeat(md5(n::text), $2 / 32)))),
       s, 1, CASE WHEN s = 'applied' THEN now() - interval '40 days' END,
       now() - interval '40 days', 'infinity'
FROM generate_series(1, $1) AS n,
     (VALUES ('applied'), ('failed')) AS statuses (s)
WHERE s = 'applied' OR n <= $1 / 10
"""


async def measure(dsn: str, events: int, payload_bytes: int) -> dict[str, object]:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        started = time.monotonic()
        await conn.execute(FILL, events, payload_bytes)
        await conn.execute("ANALYZE statebus.stripe_events")
        fill_s = time.monotonic() - started
        size_before = await conn.fetchval("SELECT pg_total_relation_size('statebus.stripe_events')")
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        started = time.monotonic()
        pruned = await prune_stripe_events(pool)
        prune_s = time.monotonic() - started
        left = await pool.fetchval("SELECT count(*) FROM statebus.stripe_events")
        started = time.monotonic()
        again = await prune_stripe_events(pool)  # nothing left to prune: the hourly idle cost
        idle_ms = (time.monotonic() - started) * 1000
    finally:
        await pool.close()
    return {
        "events": events,
        "payload_bytes": payload_bytes,
        "fill_seconds": round(fill_s, 1),
        "table_mb_before": round(size_before / 1e6),
        "pruned": pruned,
        "prune_seconds": round(prune_s, 2),
        "pruned_per_second": round(pruned / prune_s),
        "batch": STRIPE_PRUNE_BATCH,
        "left_failed": left,
        "second_round_pruned": again,
        "second_round_ms": round(idle_ms, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--payload-bytes", type=int, default=3000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sbpr", dir="/tmp"))
    settings = config.load({"STATEBUS_HOME": str(home)})
    with database_url(settings) as dsn:
        result = asyncio.run(measure(dsn, args.events, args.payload_bytes))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
