"""A small Python client for `/v1/ws`: tests, benchmarks and `statebus tail` use it.

`Session` is one socket (auth, then typed messages). `follow()` keeps a user's latest
envelope across drops: it reconnects with backoff and resumes with `since`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from statebus import backoff
from statebus.messages import (
    Auth,
    Current,
    Envelope,
    Error,
    ServerMessage,
    Snapshot,
    encoder,
    server_decoder,
)


class SessionClosed(Exception):
    def __init__(self, code: int | None, reason: str, error: Error | None = None) -> None:
        super().__init__(f"socket closed ({code}): {reason}")
        self.code, self.reason, self.error = code, reason, error


class Session:
    """One authenticated socket."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.last_error: Error | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        token: str,
        *,
        since: int | None = None,
        user_id: str | None = None,
        origin: str | None = None,
    ) -> Session:
        headers = {"Origin": origin} if origin else None
        conn = await websockets.connect(
            url, additional_headers=headers, open_timeout=10, max_size=2**24
        )
        session = cls(conn)
        try:
            await conn.send(
                encoder.encode(Auth(token=token, since=since, user_id=user_id)).decode()
            )
        except websockets.ConnectionClosed:
            pass  # refused before auth (origin): recv() reports the close code
        return session

    async def recv(self, timeout: float | None = 10.0) -> Snapshot | Current:
        """The next snapshot or current; raises SessionClosed with the close code."""
        try:
            raw = await asyncio.wait_for(self.conn.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            reason = exc.rcvd.reason if exc.rcvd else ""
            raise SessionClosed(code, reason, self.last_error) from None
        message: ServerMessage = server_decoder.decode(raw)
        if isinstance(message, Error):
            self.last_error = message
            return await self.recv(timeout)
        return message

    async def close(self) -> None:
        await self.conn.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *_exc: Any) -> None:
        await self.close()


async def follow(
    url: str,
    token: str | Callable[[], str],
    *,
    user_id: str | None = None,
    since: int | None = None,
    max_backoff: float = 2.0,
    retry_first: bool = True,
) -> AsyncIterator[Envelope]:
    """Yields every envelope received, forever, reconnecting and resuming with `since`.

    With `retry_first=False` a failure before the first message is raised instead of
    retried: a command line wants to say "nothing answers" rather than wait forever.
    """
    failures = 0
    last: Envelope | None = None
    while True:
        try:
            tok = token() if callable(token) else token
            async with await Session.open(url, tok, since=since, user_id=user_id) as session:
                while True:
                    message = await session.recv(timeout=None)
                    failures = 0
                    if isinstance(message, Snapshot):
                        last = Envelope(
                            message.user_id,
                            message.version,
                            message.committed_at,
                            message.source,
                            message.state,
                        )
                        since = message.version
                        yield last
                    elif last is not None:
                        yield last  # `current`: what we hold is the latest
        except SessionClosed as closed:
            if closed.code in (4403, 4429) or (last is None and not retry_first):
                raise
        except (OSError, websockets.InvalidHandshake, TimeoutError):
            if last is None and not retry_first:
                raise
        failures += 1
        await asyncio.sleep(backoff.delay(failures, base=0.05, cap=max_backoff))
