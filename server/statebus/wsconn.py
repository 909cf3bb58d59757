"""One `/v1/ws` connection at the ASGI level: what the endpoint used of Starlette's
`WebSocket`, in a slotted object.

Starlette's `WebSocket` is a `Request`-like object with a `__dict__`, lazy URL, header
and state caches, and it comes with a chain of middleware frames that stay suspended
for as long as the socket is open. A server holding 15,000 idle sockets pays for each
of them 15,000 times (docs/architecture.md, "Memory per socket"), so the endpoint
speaks ASGI itself through this small class instead. The state rules are Starlette's:
a socket is `connected` from the client's connect until its disconnect, nothing may be
sent after a close, and a send that finds the client gone raises `Disconnected(1006)`.
"""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

__all__ = ["Disconnected", "Socket", "header", "route_path"]


class Disconnected(Exception):
    """The client left (or was found gone while sending); `code` as the server saw it."""

    def __init__(self, code: int = 1000) -> None:
        super().__init__(code)
        self.code = code


class Socket:
    __slots__ = ("_receive", "_send", "connected", "_closed")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive, self._send = receive, send
        self.connected = False  # between the client's connect and its disconnect
        self._closed = False  # a close was sent (or a send found the client gone)

    async def accept(self) -> None:
        message = await self._receive()
        if message["type"] != "websocket.connect":
            raise RuntimeError(
                f'Expected ASGI message "websocket.connect", got {message["type"]!r}'
            )
        self.connected = True
        await self._send({"type": "websocket.accept"})

    async def receive(self) -> Message:
        return self.arrived(await self._receive())

    def arrived(self, message: Message) -> Message:
        """Books a message taken from the server's `receive` (the endpoint awaits that
        callable itself while idle, so no frame of this class stays suspended)."""
        kind = message["type"]
        if kind == "websocket.disconnect":
            self.connected = False
            raise Disconnected(message.get("code", 1000))
        if kind != "websocket.receive":
            raise RuntimeError(f'Expected ASGI message "websocket.receive", got {kind!r}')
        return message

    async def send_text(self, text: str) -> None:
        await self._send_message({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        await self._send_message({"type": "websocket.close", "code": code, "reason": reason})

    async def _send_message(self, message: Message) -> None:
        if self._closed:
            raise RuntimeError('Cannot call "send" once a close message has been sent.')
        if message["type"] == "websocket.close":
            self._closed = True
        try:
            await self._send(message)
        except OSError:  # uvicorn's ClientDisconnected: the transport is gone
            self._closed = True
            raise Disconnected(1006) from None


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower case), as Starlette's `Headers.get`."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def route_path(scope: Scope) -> str:
    """The path below the app's mount point (`root_path`), as Starlette routes on."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path
