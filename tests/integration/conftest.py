"""Fixtures shared by the database tests: plans seeded, notifications collected."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.helpers import Notifications, seed_plans


@pytest.fixture
async def seeded(conn: asyncpg.Connection) -> asyncpg.Connection:
    await seed_plans(conn)
    return conn


@pytest.fixture
async def notes(dsn: str) -> AsyncIterator[Notifications]:
    collector = await Notifications().start(dsn)
    yield collector
    await collector.close()
