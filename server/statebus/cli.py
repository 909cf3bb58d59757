"""The `statebus` command line (every command is described in docs/configuration.md)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

import asyncpg

from statebus import config
from statebus.auth import issue_token
from statebus.database import database_url
from statebus.embedded import bin_dir
from statebus.migrations import MigrationError, migrate
from statebus.pooler import PoolerError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="statebus", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server (embedded Postgres by default)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--demo", action="store_true", help="seed demo data and print a token")
    serve.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="warning",
        help="warning (default) is quiet; debug adds the embedded PostgreSQL's output",
    )
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="json: one JSON object per line (default: STATEBUS_LOG_FORMAT, else text)",
    )

    relay = commands.add_parser(
        "relay", help="LISTEN on Postgres and publish to NATS (the relay tier's leader)"
    )
    relay.add_argument("--name", help="how other relays name this one (default host:pid)")
    relay.add_argument("--metrics-port", type=int, help="serve /metrics on 127.0.0.1:PORT")
    relay.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="warning"
    )

    migrate_cmd = commands.add_parser("migrate", help="apply migrations")
    migrate_cmd.add_argument("--demo", action="store_true", help="also seed the demo data")

    token = commands.add_parser("token", help="print a signed user token (HS256)")
    token.add_argument("user_id")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.add_argument("--admin", action="store_true", help="may read any user")

    commands.add_parser("psql", help="psql on the configured database", add_help=False)

    reconcile = commands.add_parser("reconcile", help="repair drift from Stripe")
    reconcile.add_argument("--user", dest="user_id")
    reconcile.add_argument("--dry-run", action="store_true")

    events = commands.add_parser(
        "stripe-events", help="list stored Stripe events that are not done; re-queue one"
    )
    events.add_argument("--failed", action="store_true", help="only events failed for good")
    events.add_argument("--requeue", metavar="EVENT_ID", help="make this event due again")

    tail = commands.add_parser("tail", help="print live state changes, one line each")
    tail.add_argument("--user", dest="user_id")
    tail.add_argument("--json", action="store_true", help="print each whole envelope as JSON")
    tail.add_argument(
        "--url",
        default=os.environ.get("STATEBUS_URL"),
        help="the server's socket (with --user); default: the one `statebus serve` "
        "recorded in $STATEBUS_HOME, else ws://127.0.0.1:8000/v1/ws",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `psql` belongs to psql itself.
    args = None if argv[:1] == ["psql"] else _parser().parse_args(argv)
    try:
        settings = config.load()
    except config.ConfigError as exc:
        print(f"statebus: {exc}", file=sys.stderr)
        return 2
    if args is None:
        return run_psql(settings, argv[1:])
    if args.command == "migrate":
        return run_migrate(settings, demo=args.demo)
    if args.command == "token":
        return run_token(settings, args.user_id, ttl=args.ttl, admin=args.admin)
    if args.command == "serve":
        from statebus.serve import serve

        try:
            if args.log_format is not None:
                settings = dataclasses.replace(settings, log_format=args.log_format)
            return serve(
                settings, host=args.host, port=args.port, demo=args.demo, log_level=args.log_level
            )
        except KeyboardInterrupt:  # Ctrl-C: uvicorn already shut down gracefully
            return 130
        except PoolerError as exc:
            print(f"statebus serve: {exc}", file=sys.stderr)
            return 2
    if args.command == "relay":
        from statebus.relay import run_relay

        return run_relay(
            settings, name=args.name, metrics_port=args.metrics_port, log_level=args.log_level
        )
    if args.command == "reconcile":
        from statebus.stripe.reconcile import run_reconcile

        return run_reconcile(settings, user_id=args.user_id, dry_run=args.dry_run)
    if args.command == "stripe-events":
        from statebus.stripe.inbox_cli import run_stripe_events

        return run_stripe_events(settings, failed_only=args.failed, requeue=args.requeue)
    if args.command == "tail":
        from statebus.tail import run_tail

        return run_tail(settings, user_id=args.user_id, url=args.url, as_json=args.json)
    raise AssertionError(args.command)


def run_migrate(settings: config.Settings, *, demo: bool) -> int:
    async def go(dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            report = await migrate(conn, demo=demo)
        finally:
            await conn.close()
        for name in report.repaired:
            print(f"repaired {name} (applied by an earlier release from an earlier edit)")
        for name in report.applied:
            print(f"applied {name}")
        if report.newer:
            print(
                f"this database was migrated by a newer release ({', '.join(report.newer)}): "
                "its triggers and functions are left in place"
            )
        else:
            print(
                "triggers and functions " + ("updated" if report.routines_applied else "up to date")
            )
        if report.demo_seeded:
            print("demo data seeded")

    with database_url(settings) as dsn:
        try:
            asyncio.run(go(dsn))
        except MigrationError as exc:
            print(f"statebus migrate: {exc}", file=sys.stderr)
            return 1
    return 0


def run_token(settings: config.Settings, user_id: str, *, ttl: int, admin: bool) -> int:
    if settings.jwt_secret is None:
        print("statebus token: tokens come from your identity provider (JWKS)", file=sys.stderr)
        return 2
    if ttl <= 0:
        print("statebus token: --ttl must be positive", file=sys.stderr)
        return 2
    try:
        token = issue_token(
            settings.jwt_secret,
            user_id,
            ttl=ttl,
            admin=admin,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            admin_claim=settings.admin_claim,
        )
    except ValueError as exc:  # a short secret or an empty user id: say which, no traceback
        print(f"statebus token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def psql_binary() -> str:
    bundled = bin_dir() / "psql"
    return str(bundled) if bundled.exists() else (shutil.which("psql") or "psql")


def run_psql(settings: config.Settings, psql_args: Sequence[str]) -> int:
    with database_url(settings) as dsn:
        return subprocess.call([psql_binary(), dsn, *psql_args])


if __name__ == "__main__":
    sys.exit(main())
