"""`statebus serve`: database (embedded by default), migrations, then uvicorn."""

from __future__ import annotations

import asyncio
import logging
import signal

import asyncpg
import uvicorn

from statebus import address
from statebus.app import create_app
from statebus.auth import issue_token
from statebus.config import Settings
from statebus.database import database_url
from statebus.migrations import migrate

DEMO_USER = "user_2zRnraoVNDAegfHnci1xUMWybwz"


def uvicorn_config(settings: Settings, dsn: str, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings, dsn),
        host=host,
        port=port,
        ws="websockets-sansio",
        ws_max_size=64 * 1024,  # the app itself refuses client frames over 4 KiB
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
        log_level="info",
        lifespan="on",
    )


async def apply_migrations(dsn: str, *, demo: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, demo=demo)
    finally:
        await conn.close()


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def serve(settings: Settings, *, host: str, port: int, demo: bool) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the
    # handler it found. The default handler would end the process on the spot and leave
    # the embedded PostgreSQL running; this one unwinds, so it is stopped.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with database_url(settings) as dsn:
        asyncio.run(apply_migrations(dsn, demo=demo))
        if demo:
            print_demo_banner(settings, host, port)
        with address.recorded(settings.home, host, port):
            uvicorn.Server(uvicorn_config(settings, dsn, host, port)).run()
    return 0


def print_demo_banner(settings: Settings, host: str, port: int) -> None:
    if settings.jwt_secret is None:
        print("demo: tokens come from your identity provider (STATEBUS_JWKS_URL)")
        return
    token = issue_token(settings.jwt_secret, DEMO_USER, ttl=24 * 3600)
    url = f"http://{host}:{port}/"
    print(
        "\nstatebus demo\n"
        f"  user:   {DEMO_USER} (plan glow_up)\n"
        f"  token:  {token}\n"
        f"  page:   {url}#token={token}\n"
        "  psql:   statebus psql -c \"UPDATE user_subscriptions SET plan = 'viral_surge'"
        f" WHERE user_id = '{DEMO_USER}'\"\n",
        flush=True,
    )
