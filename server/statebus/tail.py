"""`statebus tail [--user ID] [--json]`: one line per new version, as it commits.

A line says who, which version, when, which writer, and which top-level keys of the
state changed since the version printed before it (the whole document is one `--json`
away: that prints each envelope as one JSON line).

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
from typing import Any

import asyncpg
import msgspec
import websockets

from statebus import address
from statebus.auth import issue_token
from statebus.client import SessionClosed, follow
from statebus.config import Settings
from statebus.core_messages import Envelope, NotificationFormatError, decode_notification
from statebus.database import database_url
from statebus.envelopes import read_envelopes
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


def short_time(committed_at: str | None) -> str:
    """`2026-12-02T11:02:03.123456Z` as `2026-12-02 11:02:03.123Z`."""
    if not committed_at:
        return "-"
    day, _, clock = committed_at.partition("T")
    clock = clock.rstrip("Z")
    seconds, _, fraction = clock.partition(".")
    return f"{day} {seconds}.{(fraction + '000')[:3]}Z" if clock else day


def changed_keys(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    before, after = before or {}, after or {}
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


class Lines:
    """Turns envelopes into lines; remembers each user's last state to name what changed,
    and skips a version it already printed (a resumed socket repeats the latest)."""

    def __init__(self, *, as_json: bool = False) -> None:
        self.as_json = as_json
        self.last: dict[str, tuple[int, dict[str, Any] | None]] = {}

    def line(self, env: Envelope) -> str | None:
        seen = self.last.get(env.user_id)
        if seen is not None and env.version <= seen[0]:
            return None
        state = env.state
        if isinstance(state, msgspec.Raw):
            state = msgspec.json.decode(state)
        self.last[env.user_id] = (env.version, state)
        if self.as_json:
            return msgspec.json.encode(msgspec.structs.replace(env, state=state)).decode()
        head = f"{env.user_id} v{env.version} · {short_time(env.committed_at)}"
        head += f" · {describe_source(env.source)}"
        if seen is None:
            plan = ((state or {}).get("plan") or {}).get("code", "-")
            return f"{head} · plan {plan} (first version seen)"
        keys = changed_keys(seen[1], state)
        return f"{head} · changed: {', '.join(keys) if keys else 'nothing'}"

    def show(self, env: Envelope) -> None:
        text = self.line(env)
        if text is not None:
            print(text, flush=True)


async def tail_user(url: str, token: str, user_id: str, lines: Lines) -> None:
    async for env in follow(url, token, user_id=user_id, retry_first=False):
        lines.show(env)


async def tail_all(dsn: str, lines: Lines) -> None:
    reader = await asyncpg.connect(dsn)
    due: asyncio.Queue[list[str]] = asyncio.Queue()

    def on_notify(payload: str) -> None:
        try:
            pairs = decode_notification(payload)
        except NotificationFormatError as exc:
            # Said, never silent: the operator watching sees every one, and why.
            print(f"(undecodable notification ignored: {exc})", file=sys.stderr, flush=True)
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
                lines.show(env)
    finally:
        listening.cancel()
        await reader.close()


def run_tail(
    settings: Settings, *, user_id: str | None, url: str | None, as_json: bool = False
) -> int:
    lines = Lines(as_json=as_json)
    try:
        if user_id is None:
            with database_url(settings) as dsn:
                asyncio.run(tail_all(dsn, lines))
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
        asyncio.run(tail_user(url, token, user_id, lines))
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
