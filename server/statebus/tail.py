"""`statebus tail [--user ID]`: one line per new version, as it commits.

With --user it follows that user through the server's socket (an admin token minted
from the dev secret, resuming with `since` across drops); it finds the server the
way `statebus serve` recorded it in $STATEBUS_HOME, and says so when nothing answers.
Without --user it LISTENs on the database directly, as any backend service may, and
reads each notified user's envelope with statebus.envelopes(); it reconnects by
itself (the same supervisor the server uses).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import msgspec
import websockets

from statebus import address
from statebus.auth import issue_token
from statebus.client import SessionClosed, follow
from statebus.config import Settings
from statebus.database import database_url
from statebus.messages import Envelope, notification_decoder
from statebus.states import read_envelopes
from statebus.supervisor import ListenSupervisor

# How a version's writer reads in a line (the page uses the same words).
SOURCES = {
    "stripe_webhook": "Stripe webhook",
    "upgrade_api": "upgrade",
    "checkout": "checkout",
    "cancel": "cancel",
    "resume": "resume",
    "reconcile": "reconcile",
    "demo": "demo seed",
    "sql": "SQL",
}


def describe_source(source: str | None) -> str:
    if source is None:
        return "-"
    if source.startswith("app:"):
        return f"app ({source[4:]})"
    return SOURCES.get(source, source)


def line(env: Envelope) -> str:
    state = env.state
    if isinstance(state, msgspec.Raw):
        state = msgspec.json.decode(state)
    plan = ((state or {}).get("plan") or {}).get("code", "-")
    when = env.committed_at or "-"
    return (
        f"{env.user_id} v{env.version} · {when} · {describe_source(env.source)} · plan={plan} "
        + msgspec.json.encode(state).decode()
    )


async def tail_user(url: str, token: str, user_id: str) -> None:
    async for env in follow(url, token, user_id=user_id, retry_first=False):
        print(line(env), flush=True)


async def tail_all(dsn: str) -> None:
    reader = await asyncpg.connect(dsn)
    due: asyncio.Queue[list[str]] = asyncio.Queue()

    def on_notify(payload: str) -> None:
        try:
            pairs = notification_decoder.decode(payload)
        except msgspec.DecodeError:
            print("(undecodable notification ignored)", file=sys.stderr, flush=True)
            return
        due.put_nowait([user_id for user_id, _version in pairs])

    async def on_connect(_conn: asyncpg.Connection) -> None:
        print("(listening on channel statebus)", file=sys.stderr, flush=True)

    supervisor = ListenSupervisor(dsn, {"statebus": on_notify}, on_connect=on_connect, name="tail")
    listening = asyncio.create_task(supervisor.run())
    try:
        while True:
            users = await due.get()
            for env in await read_envelopes(reader, list(dict.fromkeys(users))):
                print(line(env), flush=True)
    finally:
        listening.cancel()
        await reader.close()


def run_tail(settings: Settings, *, user_id: str | None, url: str | None) -> int:
    try:
        if user_id is None:
            with database_url(settings) as dsn:
                asyncio.run(tail_all(dsn))
            return 0
        if settings.jwt_secret is None:
            print("statebus tail --user needs STATEBUS_JWT_SECRET to mint a token", file=sys.stderr)
            return 2
        url = url or address.socket_url(Path(settings.home))
        token = issue_token(
            settings.jwt_secret,
            "statebus-tail",
            ttl=12 * 3600,
            admin=True,
            admin_claim=settings.admin_claim,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )
        print(f"(following {user_id} at {url})", file=sys.stderr, flush=True)
        asyncio.run(tail_user(url, token, user_id))
    except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
        print(
            f"statebus tail: no statebus server answers at {url} ({exc}); start one with "
            "`statebus serve` or pass --url",
            file=sys.stderr,
        )
        return 1
    except SessionClosed as closed:
        print(
            f"statebus tail: the server closed the socket ({closed.code}): {closed.reason}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        pass
    return 0
