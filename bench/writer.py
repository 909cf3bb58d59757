"""A paced writer process: single-row UPDATE commits at an offered rate.

    python -m bench.writer DSN --users N --rate R --seconds S [--warmup W] [--connections C]

Each commit is due at start + i / rate (an open loop: a slow commit does not slow the
schedule, it only uses another connection). It writes its send time (CLOCK_MONOTONIC
ns) into `user_usage.used` of a random user among u1..uN, so a socket client measures
commit-to-socket latency on arrival with no clock to share. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import time

import asyncpg

UPDATE = "UPDATE user_usage SET used = $1 WHERE user_id = $2 AND metric = 'posts'"


async def write(args: argparse.Namespace) -> dict[str, float | int]:
    conns = [await asyncpg.connect(args.dsn) for _ in range(args.connections)]
    rng = random.Random(args.seed)
    total = int(args.rate * (args.warmup + args.seconds))
    counter = itertools.count()
    start = time.monotonic()
    record_from = time.monotonic_ns() + int(args.warmup * 1e9)
    recorded: list[int] = []

    async def loop(conn: asyncpg.Connection) -> None:
        while (i := next(counter)) < total:
            wait = start + i / args.rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            sent = time.monotonic_ns()
            await conn.execute(UPDATE, sent, f"u{rng.randrange(args.users) + 1}")
            if sent >= record_from:
                recorded.append(sent)

    try:
        await asyncio.wait_for(
            asyncio.gather(*(loop(c) for c in conns)), (args.warmup + args.seconds) * 3 + 30
        )
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    elapsed = (time.monotonic_ns() - record_from) / 1e9
    return {
        "record_from": record_from,
        "sent": len(recorded),
        "achieved": len(recorded) / elapsed if elapsed > 0 else 0.0,
        "behind_s": max(0.0, time.monotonic() - start - args.warmup - args.seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.writer")
    parser.add_argument("dsn")
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seed", type=int, default=9)
    print(json.dumps(asyncio.run(write(parser.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
