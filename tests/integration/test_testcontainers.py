"""The same migrations and capture on a testcontainers PostgreSQL 15, where Docker answers."""

from __future__ import annotations

import os
import socket

import asyncpg
import pytest

from statebus.migrations import migrate


def _docker_answers() -> bool:
    """A raw /_ping on Docker's socket (the docker client leaks a socket when it fails)."""
    path = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        try:
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b"200 OK" in sock.recv(1024)
        except OSError:
            return False


@pytest.mark.skipif(not _docker_answers(), reason="no Docker engine answers on this machine")
async def test_capture_on_testcontainers_postgres() -> None:
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:15", driver=None) as container:
        conn = await asyncpg.connect(container.get_connection_url())
        try:
            await migrate(conn, demo=True)
            await conn.execute("UPDATE user_subscriptions SET plan = 'viral_surge'")
            assert await conn.fetchval("SELECT max(version) FROM statebus.versions") == 2
        finally:
            await conn.close()
