"""A small Python client for `/v1/ws`: tests, benchmarks and `statebus tail` use it.

`Session` is one socket (auth, then typed messages). `follow()` keeps a user's latest
envelope across drops: it reconnects with backoff and resumes with `since`.

Both listen with a heartbeat (docs/protocol.md): after `PING_AFTER` seconds without a
frame the client pings, and a server that has not answered `PONG_WITHIN` seconds later
counts as gone. A network that drops packets without closing anything (a Wi-Fi switch,
a laptop waking) otherwise looks exactly like a user whose state is not changing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Self

import websockets
from websockets.asyncio.client import ClientConnection

from statebus import backoff
from statebus.core_messages import (
    Auth,
    Current,
    Envelope,
    Error,
    Ping,
    Pong,
    ServerMessage,
    Snapshot,
    encoder,
    server_decoder,
)

# The browser client (statebus.js) uses the same two figures: a silent network is
# noticed at most PING_AFTER + PONG_WITHIN seconds after the last frame heard.
PING_AFTER = 7.0
PONG_WITHIN = 5.0
PING = encoder.encode(Ping()).decode()


class SessionClosed(Exception):
    def __init__(self, code: int | None, reason: str, error: Error | None = None) -> None:
        super().__init__(f"socket closed ({code}): {reason}")
        self.code, self.reason, self.error = code, reason, error


class HeartbeatLost(SessionClosed):
    """The server did not answer a ping in time: the connection is treated as lost."""


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
    ) -> Self:
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
        """The next snapshot or current; raises SessionClosed with the close code,
        TimeoutError after `timeout` seconds without one. Pongs are skipped."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - loop.time())
            message = await self._next(wait)
            if not isinstance(message, Pong):
                return message

    async def listen(
        self, *, ping_after: float = PING_AFTER, pong_within: float = PONG_WITHIN
    ) -> Snapshot | Current:
        """The next snapshot or current, however long the user's state stays unchanged,
        as long as the server answers pings; raises HeartbeatLost when it does not."""
        wait, pinged = ping_after, False
        while True:
            try:
                message = await self._next(wait)
            except TimeoutError:
                if pinged:
                    # A close handshake would wait for the same silent network: drop it.
                    self.conn.transport.abort()
                    raise HeartbeatLost(None, f"no answer to a ping in {pong_within:g} s") from None
                await self.ping()
                wait, pinged = pong_within, True
                continue
            if not isinstance(message, Pong):
                return message
            wait, pinged = ping_after, False

    async def ping(self) -> None:
        """Sends the heartbeat; the server answers `{"type": "pong"}`."""
        try:
            await self.conn.send(PING)
        except websockets.ConnectionClosed:
            pass  # the next receive reports the close

    async def _next(self, timeout: float | None) -> Snapshot | Current | Pong:
        while True:
            try:
                raw = await asyncio.wait_for(self.conn.recv(), timeout)
            except websockets.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                reason = exc.rcvd.reason if exc.rcvd else ""
                raise SessionClosed(code, reason, self.last_error) from None
            message: ServerMessage = server_decoder.decode(raw)
            if not isinstance(message, Error):
                return message
            self.last_error = message  # the close that follows says what happens

    async def close(self) -> None:
        await self.conn.close()

    async def __aenter__(self) -> Self:
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
    ping_after: float = PING_AFTER,
    pong_within: float = PONG_WITHIN,
) -> AsyncIterator[Envelope]:
    """Yields every envelope received, forever, reconnecting and resuming with `since`.

    A socket that stops answering pings counts as dropped (see the module docstring).
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
                    message = await session.listen(ping_after=ping_after, pong_within=pong_within)
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
