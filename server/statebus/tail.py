"""`statebus tail [--user ID]`: one line per new version, as it commits.

With --user it follows that user through the server's socket (an admin token minted
from the dev secret, resuming with `since` across drops). Without, it LISTENs on the
database directly and prints every user's versions, like any backend service may.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import asyncpg

from statebus.auth import issue_token
from statebus.client import follow
from statebus.config import Settings
from statebus.database import database_url
from statebus.messages import Envelope, encoder, notification_decoder


def line(env: Envelope) -> str:
    plan = (env.state or {}).get("plan") or {}
    return (
        f"{env.user_id} v{env.version} plan={plan.get('code', '-')} "
        + encoder.encode(env.state).decode()
    )


async def tail_user(url: str, token: str, user_id: str) -> None:
    async for env in follow(url, token, user_id=user_id):
        print(line(env), flush=True)


async def tail_all(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_notify(_c: Any, _pid: int, _channel: str, payload: object) -> None:
        note = notification_decoder.decode(str(payload))
        suffix = " (state too big for NOTIFY: read statebus.history)" if note.ref else ""
        print(line(Envelope(note.user_id, note.version, note.state)) + suffix, flush=True)

    def on_terminated(_c: Any) -> None:
        if not done.done():
            done.set_result(None)

    conn.add_termination_listener(on_terminated)
    await conn.add_listener("statebus", on_notify)
    try:
        await done
    finally:
        await conn.close()


def run_tail(settings: Settings, *, user_id: str | None, url: str) -> int:
    try:
        if user_id is None:
            with database_url(settings) as dsn:
                asyncio.run(tail_all(dsn))
            return 0
        if settings.jwt_secret is None:
            print("statebus tail --user needs STATEBUS_JWT_SECRET to mint a token", file=sys.stderr)
            return 2
        token = issue_token(settings.jwt_secret, "statebus-tail", ttl=12 * 3600, admin=True)
        asyncio.run(tail_user(url, token, user_id))
    except KeyboardInterrupt:
        pass
    return 0
