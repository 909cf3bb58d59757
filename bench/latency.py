"""Commit-to-socket latency, against a raw NOTIFY round trip as the baseline.

    python bench/latency.py [--writes 300]

Starts an embedded PostgreSQL and a real statebus server (uvicorn, in a thread), opens a
socket for one user, then times, one at a time: (a) baseline: `pg_notify` from one
asyncpg connection to a LISTENing one; (b) statebus: an UPDATE commit until the socket
delivers the new version. Prints medians, p99 and the ratio, all from this one process.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import asyncpg
from harness import demo_database, ms

from statebus.client import Session
from statebus.serve import DEMO_USER
from statebus.testing.server import RunningServer, settings_for_tests


async def baseline(dsn: str, n: int) -> list[float]:
    listener, sender = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    got: asyncio.Queue[float] = asyncio.Queue()
    await listener.add_listener("bench", lambda *_: got.put_nowait(time.perf_counter()))
    samples = []
    for i in range(n):
        start = time.perf_counter()
        await sender.execute("SELECT pg_notify('bench', $1)", str(i))
        samples.append(await got.get() - start)
    await listener.close()
    await sender.close()
    return samples


async def statebus(dsn: str, ws_url: str, token: str, n: int) -> list[float]:
    writer = await asyncpg.connect(dsn)
    samples = []
    async with await Session.open(ws_url, token) as session:
        version = (await session.recv()).version
        for i in range(n):
            start = time.perf_counter()
            await writer.execute(
                "UPDATE user_usage SET used = $1 WHERE user_id = $2", i + 1000, DEMO_USER
            )
            message = await session.recv()
            samples.append(time.perf_counter() - start)
            assert message.version == version + 1
            version = message.version
    await writer.close()
    return samples


async def main(writes: int) -> None:
    async with demo_database() as (home, dsn):
        server = RunningServer(settings_for_tests(home), dsn).start()
        try:
            base = await baseline(dsn, writes)
            ours = await statebus(dsn, server.ws, server.token(DEMO_USER), writes)
        finally:
            server.stop()
    print(f"writes: {writes}")
    print(f"baseline pg_notify round trip: {ms(base)}")
    print(f"statebus commit-to-socket:     {ms(ours)}")
    print(f"ratio (median): {statistics.median(ours) / statistics.median(base):.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=300)
    asyncio.run(main(parser.parse_args().writes))
