"""Where the database is: STATEBUS_DATABASE_URL, or the embedded server under $STATEBUS_HOME."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from statebus.config import Settings
from statebus.embedded import EmbeddedPostgres


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Yields a DSN; starts the embedded server for the duration when none is configured."""
    if settings.database_url:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.home)
    dsn = embedded.start()
    try:
        yield dsn
    finally:
        embedded.stop()
