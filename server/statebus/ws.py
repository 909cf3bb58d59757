"""WebSocket `/v1/ws` (docs/protocol.md): auth, then snapshots in version order.

Subscribing happens *before* reading the current version, and the hub keeps only
strictly newer versions, so a write committing while a client connects is never missed
and never delivered out of order. The socket never queries anything but its user's
current envelope; fan-out comes from the hub.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import msgspec
from starlette.types import Message, Receive, Scope, Send

from statebus import inputs, metrics
from statebus.auth import AuthError, Principal
from statebus.core_messages import Auth, Current, Error, Ping, Pong, client_decoder, encoder
from statebus.envelopes import frame_of, read_state
from statebus.hub import Subscriber
from statebus.runtime import Runtime
from statebus.wsconn import Disconnected, Socket, header

log = logging.getLogger("statebus.ws")

PATH = "/v1/ws"
AUTH_TIMEOUT = 10.0
# Above auth.MAX_TOKEN_CHARS (16 KiB) plus the auth message around it: a token the HTTP
# routes accept must fit the socket too.
MAX_FRAME = 20 * 1024
# The page's scheme that goes with the socket's: a same-host check that ignored it would
# let an http:// page (say, on a hijacked network) open a socket to the wss:// service.
PAGE_SCHEME = {"ws": "http", "wss": "https"}


class Close(Exception):
    """Ends a socket with a contract close code and an error message."""

    def __init__(self, code: int, error: str, message: str) -> None:
        super().__init__(message)
        self.code, self.error, self.message = code, error, message


# Why the hub closed a socket, as (error code, message) by close code.
SERVER_CLOSES = {
    1012: ("restarting", "server restarting; reconnect with since"),
    4401: ("token_expired", "token expired; reconnect with a fresh one"),
}


class SubscriberSocket(Socket):
    """A socket with the two hooks its `Subscriber` calls: bound methods rather than
    closures, so an idle socket holds no cells and function objects of its own."""

    __slots__ = ()

    async def send_frame(self, text: str) -> None:
        await self.send_text(text)
        metrics.snapshots_sent.inc()

    def closed_by_hub(self, reason: object) -> None:
        if isinstance(reason, int) and reason in SERVER_CLOSES:
            _spawn(close_with(self, reason, *SERVER_CLOSES[reason]))


async def websocket_endpoint(rt: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """The socket, as a raw ASGI callable (app.py calls it before Starlette's stack).

    Everything before the first frame happens in helper coroutines that return, so an
    idle socket is this one suspended frame (plus the server's own), a `Socket`, a
    `Subscriber` and the expiry timer: nothing else per socket stays alive.
    """
    ws = SubscriberSocket(receive, send)
    try:
        await ws.accept()
        user_id, since, expires_at = await authenticate(ws, rt, scope)
        # The server's frames above this one (uvicorn's proxy-headers middleware, App)
        # hold the scope while the socket is open; its headers (~1 KiB, a browser's
        # with cookies several) are read by nothing after the origin check and auth.
        scope["headers"] = []
        del scope
        sub = Subscriber(user_id, ws.send_frame, ws.closed_by_hub)
        rt.hub.add(sub)
        metrics.sockets.inc()
        # The token's expiry closes the socket through the hub (4401), as a restart does.
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, expires_at - time.time()), sub.close, 4401
        )
        try:
            await send_first(ws, rt, sub, since)
            # Idle from here: the hub's send tasks deliver frames; this frame only
            # waits for the client's pings, its disconnect or a message it may not send.
            while True:
                after_auth(ws.arrived(await receive()))
                await pong(ws)
        finally:
            expiry.cancel()
            metrics.sockets.dec()
            rt.hub.remove(sub)
    except Close as close:
        await close_with(ws, close.code, close.error, close.message)
    except Disconnected:
        pass


def origin_allowed(scope: Scope, allowed: tuple[str, ...]) -> bool:
    origin = header(scope, b"origin")
    if origin is None:
        return True  # not a browser: tokens alone decide
    if allowed:
        return origin in allowed or "*" in allowed
    host = (header(scope, b"host") or "").lower()
    scheme = PAGE_SCHEME.get(scope.get("scheme", "http"))
    return scheme is not None and bool(host) and origin.lower() == f"{scheme}://{host}"


async def receive_text(ws: Socket, timeout: float | None = None) -> str:
    return text_of(await asyncio.wait_for(ws.receive(), timeout))


def text_of(message: Message) -> str:
    data = message.get("text")
    if data is None:
        raw = message.get("bytes") or b""
        if len(raw) > MAX_FRAME:
            raise Close(4400, "too_large", f"messages are limited to {MAX_FRAME} bytes")
        try:
            data = raw.decode()
        except UnicodeDecodeError as exc:
            raise Close(4400, "malformed", "messages are UTF-8 JSON") from exc
    if len(data.encode()) > MAX_FRAME:
        raise Close(4400, "too_large", f"messages are limited to {MAX_FRAME} bytes")
    return str(data)


def decode(text: str) -> Auth | Ping:
    try:
        return client_decoder.decode(text)
    except msgspec.ValidationError as exc:
        raise Close(4400, "malformed", _invalid(exc)) from exc
    except msgspec.DecodeError as exc:
        raise Close(4400, "malformed", "messages are JSON objects") from exc


def _invalid(exc: msgspec.ValidationError) -> str:
    """msgspec's reason, unless it quotes the client (an unknown field's name): the message
    also becomes the close reason, which must fit 123 bytes, and echoes nothing back."""
    reason = str(exc)
    if "unknown field" in reason:
        return "invalid message: unknown field"
    if len(reason) > 90 or not reason.isascii() or not reason.isprintable():
        return "invalid message"
    return f"invalid message: {reason}"


async def authenticate(ws: Socket, rt: Runtime, scope: Scope) -> tuple[str, int | None, float]:
    """Origin, the auth message and the token: (user to follow, since, token expiry)."""
    if not origin_allowed(scope, rt.settings.allowed_origins):
        raise Close(4403, "origin_not_allowed", "this origin may not open sockets")
    try:
        text = await receive_text(ws, AUTH_TIMEOUT)
    except TimeoutError as exc:
        raise Close(4408, "auth_timeout", "send an auth message within 10 s") from exc
    auth = decode(text)
    if not isinstance(auth, Auth):
        raise Close(4400, "malformed", "the first message must be auth")
    if auth.since is not None and auth.since < 0:
        raise Close(4400, "malformed", "since must not be negative")
    if auth.user_id:  # as on HTTP, an empty user_id means the token's own user
        try:
            inputs.user_id(auth.user_id)
        except inputs.InvalidInput as exc:
            raise Close(4400, "malformed", str(exc)) from None
    principal = await verify(rt, auth.token)
    target = auth.user_id or principal.user_id
    if not rt.verifier.may_read(principal, target):
        raise Close(4403, "forbidden", "this token may not read that user")
    if rt.hub.subscriber_count() >= rt.settings.max_sockets:
        raise Close(1013, "overloaded", "this server holds all the sockets it can; retry later")
    if rt.hub.subscriber_count(target) >= rt.settings.max_sockets_per_user:
        raise Close(4429, "too_many_sockets", "too many sockets for this user")
    # Only what the socket needs from here on: the token itself stays out of the
    # long-lived frame.
    return target, auth.since, principal.expires_at


async def verify(rt: Runtime, token: str) -> Principal:
    try:
        return await rt.verifier.verify(token)
    except AuthError as exc:
        raise Close(4401, exc.code, exc.message) from exc


async def send_first(ws: Socket, rt: Runtime, sub: Subscriber, since: int | None) -> None:
    """The user's current envelope, or `current` when the client already has it."""
    sub.offer(frame_of(await read_state(rt.pool, sub.user_id)))
    first = sub.take()  # ours, or a newer one the listener offered meanwhile
    if first is None:
        return  # closed meanwhile (shutdown): the close frame is on its way
    if since is not None and first.version == since:
        await send(ws, Current(first.version))
    else:
        await ws.send_text(first.text)
    sub.release()


PONG = encoder.encode(Pong()).decode()  # encoded once: every idle socket sends it often


def after_auth(message: Message) -> None:
    """After auth a client only pings (the caller answers); anything else is refused."""
    if not isinstance(decode(text_of(message)), Ping):
        raise Close(4400, "unexpected", "already authenticated; open a new socket to re-auth")


async def pong(ws: Socket) -> None:
    try:
        await ws.send_text(PONG)
    except RuntimeError:
        pass  # the hub closed this socket meanwhile (restart, expiry): the close says why


def close_reason(message: str) -> str:
    """A close frame's reason is at most 123 bytes of UTF-8; cut whole characters."""
    return message.encode()[:120].decode(errors="ignore")


_closing: set[asyncio.Task[None]] = set()  # strong references until each close is sent


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def send(ws: Socket, message: Current | Error) -> None:
    await ws.send_text(encoder.encode(message).decode())


async def close_with(ws: Socket, code: int, error: str, message: str) -> None:
    metrics.socket_closes.labels(str(code)).inc()
    if not ws.connected:
        return
    try:
        await send(ws, Error(error, message))
        await ws.close(code, close_reason(message))
    except (RuntimeError, Disconnected, OSError):
        pass  # the client left first
