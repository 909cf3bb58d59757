"""`statebus serve`: database (embedded by default), migrations, then uvicorn."""

from __future__ import annotations

import asyncio
import copy
import logging
import signal
from typing import Any

import asyncpg
import uvicorn
import uvicorn.config

from statebus.app import create_app
from statebus.auth import issue_token
from statebus.config import Settings
from statebus.database import database_url
from statebus.migrations import migrate

DEMO_USER = "user_2zRnraoVNDAegfHnci1xUMWybwz"


class DropQueryStrings(logging.Filter):
    """Cuts the query string off the paths uvicorn logs: a `?token=` or `?user_id=` (or
    whatever a client puts there) has no place in access logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.split("?", 1)[0] if isinstance(arg, str) and arg.startswith("/") else arg
                for arg in record.args
            )
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's own logging set-up, plus: no query strings in its access and connection
    lines, and Stripe's and httpx's request lines (which name subscription ids) only from
    WARNING up."""
    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["filters"] = {"drop_query_strings": {"()": DropQueryStrings}}
    for name in ("uvicorn.access", "uvicorn.error"):
        config["loggers"].setdefault(name, {})["filters"] = ["drop_query_strings"]
    for name in ("stripe", "httpx", "httpcore"):
        config["loggers"][name] = {"level": "WARNING"}
    return config


def uvicorn_config(settings: Settings, dsn: str, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings, dsn),
        host=host,
        port=port,
        ws="websockets-sansio",
        ws_max_size=64 * 1024,  # the app itself refuses client frames over 20 KiB (ws.py)
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
        log_config=log_config(),
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
