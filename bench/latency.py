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
import tempfile
import threading
import time
from pathlib import Path

import asyncpg
import uvicorn

from server.client import Session
from server.config import Settings
from server.embedded import EmbeddedPostgres
from server.migrations import migrate
from server.serve import DEMO_USER, uvicorn_config

SECRET = "bench-secret-" + "z" * 40


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
    home = Path(tempfile.mkdtemp(prefix="sbb", dir="/tmp"))
    embedded = EmbeddedPostgres(home)
    dsn = embedded.start()
    try:
        conn = await asyncpg.connect(dsn)
        await migrate(conn, demo=True)
        await conn.close()
        settings = Settings(None, home, False, SECRET, None, None, None, (), None, (), None)
        config = uvicorn_config(settings, dsn, "127.0.0.1", 8791)
        config.log_level = "warning"
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            await asyncio.sleep(0.05)
        from server.auth import issue_token

        token = issue_token(SECRET, DEMO_USER)
        base = await baseline(dsn, writes)
        ours = await statebus(dsn, "ws://127.0.0.1:8791/v1/ws", token, writes)
        server.should_exit = True
        thread.join(10)
    finally:
        embedded.stop()
    b50, s50 = statistics.median(base), statistics.median(ours)
    print(f"writes: {writes}")
    print(
        f"baseline pg_notify round trip: p50 {b50 * 1e3:.2f} ms  p99 {pct(base, 0.99) * 1e3:.2f} ms"
    )
    print(
        f"statebus commit-to-socket:     p50 {s50 * 1e3:.2f} ms  p99 {pct(ours, 0.99) * 1e3:.2f} ms"
    )
    print(f"ratio (median): {s50 / b50:.1f}x the raw NOTIFY round trip")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=300)
    asyncio.run(main(parser.parse_args().writes))
