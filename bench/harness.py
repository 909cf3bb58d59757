"""What the benchmarks share: an embedded database with the demo seeded, and percentiles."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests` (the server harness)

from server.embedded import EmbeddedPostgres  # noqa: E402
from server.migrations import migrate  # noqa: E402


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
