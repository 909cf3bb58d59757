"""Debian's PgBouncer in front of the test database: one alias in session mode, one in
transaction mode, on a free loopback port (apt-get install pgbouncer; .ci/run does)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg

from statebus.testing.server import free_port
from tests.helpers import wait_for

PGBOUNCER = "/usr/sbin/pgbouncer"


@dataclass
class Bouncer:
    port: int
    user: str

    def url(self, alias: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{alias}"

    @property
    def session(self) -> str:
        return self.url("session")

    @property
    def transaction(self) -> str:
        return self.url("transaction")


def _server(dsn: str) -> tuple[str, int, str, str]:
    """(host or socket directory, port, database, user) of a test DSN."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = query["host"][0] if "host" in query else (parts.hostname or "127.0.0.1")
    return host, parts.port or 5432, parts.path.lstrip("/"), parts.username or "postgres"


@asynccontextmanager
async def pgbouncer(dsn: str, *, pool_size: int = 20) -> AsyncIterator[Bouncer]:
    assert os.path.exists(PGBOUNCER), "pgbouncer is not installed (apt-get install pgbouncer)"
    host, port, database, user = _server(dsn)
    # PgBouncer refuses to run as root: run it as whoever may open the server's socket
    # (the embedded server's socket directory is its own user's), else as nobody.
    owner = pwd.getpwuid(os.stat(host).st_uid).pw_name if host.startswith("/") else "nobody"
    workdir = Path(tempfile.mkdtemp(prefix="sbb", dir="/tmp"))
    listen = free_port()
    target = f"host={host} port={port} dbname={database} user={user}"
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"session = {target} pool_mode=session\n"
        f"transaction = {target} pool_mode=transaction\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {listen}\n"
        "unix_socket_dir =\n"
        "auth_type = any\n"
        f"default_pool_size = {pool_size}\n"
        "max_client_conn = 500\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n"
        f"pidfile = {workdir / 'pgbouncer.pid'}\n"
    )
    shutil.chown(workdir, owner)
    proc = subprocess.Popen(
        [PGBOUNCER, "-u", owner, str(workdir / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bouncer = Bouncer(listen, user)

    async def answers() -> bool:
        assert proc.poll() is None, (workdir / "pgbouncer.log").read_text()
        try:
            conn = await asyncpg.connect(bouncer.session, timeout=2)
        except (OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    try:
        await wait_for(answers, timeout=20, what="pgbouncer answering")
        yield bouncer
    finally:
        proc.terminate()
        await asyncio.get_running_loop().run_in_executor(None, proc.wait)
        shutil.rmtree(workdir, ignore_errors=True)
