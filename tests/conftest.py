from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from statebus.testing.fake_stripe import FakeStripe
from statebus.testing.server import RunningServer, settings_for_tests
from tests.pg import PgServer, running_server
from tests.stripe_support import stripe_settings


@pytest.fixture(scope="session")
def pg_server_sync() -> Iterator[PgServer]:
    with running_server() as server:
        yield server


@pytest.fixture(scope="session")
async def pg_server(pg_server_sync: PgServer) -> AsyncIterator[PgServer]:
    await pg_server_sync.build_template()
    yield pg_server_sync
    await pg_server_sync.drop_template()


@pytest.fixture
async def dsn(pg_server: PgServer) -> AsyncIterator[str]:
    """A fresh, migrated database for this test."""
    url = await pg_server.create_database()
    yield url
    await pg_server.drop_database(url)


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn)
    yield connection
    await connection.close()


@pytest.fixture
def server(dsn: str, tmp_path: Path) -> Iterator[RunningServer]:
    """The real app on a real uvicorn, against this test's database."""
    running = RunningServer(settings_for_tests(tmp_path), dsn).start()
    yield running
    running.stop()


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    """The stateful fake Stripe API on a loopback port."""
    with FakeStripe() as running:
        yield running


@pytest.fixture
def app(dsn: str, tmp_path: Path, fake: FakeStripe) -> Iterator[RunningServer]:
    """The real server with Stripe configured against the fake API."""
    running = RunningServer(stripe_settings(tmp_path, fake), dsn).start()
    yield running
    running.stop()
