"""What the benchmarks share: an embedded database with the demo seeded, and percentiles."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from statebus.embedded import EmbeddedPostgres
from statebus.migrations import migrate


@contextlib.asynccontextmanager
async def demo_database() -> AsyncIterator[tuple[Path, str]]:
    """(home, dsn) of a fresh embedded PostgreSQL with the demo data, stopped afterwards."""
    home = Path(tempfile.mkdtemp(prefix="sbb", dir="/tmp"))
    embedded = EmbeddedPostgres(home)
    dsn = embedded.start()
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn, demo=True)
        finally:
            await conn.close()
        yield home, dsn
    finally:
        embedded.stop()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(values: list[float]) -> str:
    import statistics

    return f"p50 {statistics.median(values) * 1e3:.2f} ms  p99 {pct(values, 0.99) * 1e3:.2f} ms"
