"""Real PostgreSQL for tests: one server per session, one database per test.

The server is the embedded wheel by default, STATEBUS_TEST_DATABASE_URL when given (for
example Debian's PostgreSQL 15 in CI), or a testcontainers one when
STATEBUS_TEST_BACKEND=docker. A template database is migrated once; each test gets a
`CREATE DATABASE ... TEMPLATE` copy, dropped WITH (FORCE) afterwards.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from statebus.embedded import EmbeddedPostgres
from statebus.migrations import migrate


def with_database(dsn: str, name: str) -> str:
    """The same server DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


class PgServer:
    """A running server plus, when embedded, the handle to stop and restart it."""

    def __init__(self, admin_dsn: str, embedded: EmbeddedPostgres | None) -> None:
        self.admin_dsn = admin_dsn
        self.embedded = embedded
        self.template = f"statebus_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def build_template(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(with_database(self.admin_dsn, self.template))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def create_database(self, *, migrated: bool = True) -> str:
        """A new database: a copy of the migrated template, or empty (template0)."""
        name = f"statebus_t_{uuid.uuid4().hex[:12]}"
        template = self.template if migrated else "template0"
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await conn.close()
        return with_database(self.admin_dsn, name)

    async def drop_database(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def drop_template(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        finally:
            await conn.close()


@contextmanager
def running_server() -> Iterator[PgServer]:
    url = os.environ.get("STATEBUS_TEST_DATABASE_URL")
    if url:
        yield PgServer(url, None)
        return
    if os.environ.get("STATEBUS_TEST_BACKEND") == "docker":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver=None) as container:
            yield PgServer(container.get_connection_url(), None)
        return
    # Short path: Unix socket paths are limited to ~107 bytes.
    home = Path(tempfile.mkdtemp(prefix="sbt", dir="/tmp"))
    embedded = EmbeddedPostgres(home)
    dsn = embedded.start()
    try:
        yield PgServer(dsn, embedded)
    finally:
        embedded.stop()
        import shutil

        shutil.rmtree(home, ignore_errors=True)
