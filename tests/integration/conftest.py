"""Fixtures shared by the database tests: plans seeded, notifications collected."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from statebus.embedded import EmbeddedPostgres
from statebus.testing.fake_stripe import FakeStripe
from statebus.testing.server import RunningServer
from tests.helpers import Notifications, seed_plans
from tests.stripe_support import seed


@pytest.fixture
async def seeded(conn: asyncpg.Connection) -> asyncpg.Connection:
    await seed_plans(conn)
    return conn


@pytest.fixture
async def notes(dsn: str) -> AsyncIterator[Notifications]:
    collector = await Notifications().start(dsn)
    yield collector
    await collector.close()


@pytest.fixture
def home() -> Iterator[Path]:
    """A short $STATEBUS_HOME (Unix socket paths are limited); its embedded server is
    stopped afterwards even when the test failed."""
    path = Path(tempfile.mkdtemp(prefix="sbh", dir="/tmp"))
    yield path
    pid = EmbeddedPostgres(path).postmaster_pid()
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def client(
    app: RunningServer, conn: asyncpg.Connection, fake: FakeStripe
) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP to a Stripe-configured server whose fake Stripe holds the plans' prices
    (modules that need another client define their own)."""
    await seed(conn, fake)
    async with httpx.AsyncClient(base_url=app.http, timeout=30) as http:
        yield http
