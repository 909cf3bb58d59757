"""The socket stage at the ASGI level (wsconn.Socket), with ASGI messages in lists and no
server: accept, receive, send, close, and what a vanished client turns into."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pytest

from statebus.wsconn import Disconnected, Socket, header, route_path

Message = MutableMapping[str, Any]


def peer(
    *incoming: Message,
) -> tuple[Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]], list[Message]]:
    """A `receive` that hands out `incoming` in order, and the list `send` appends to."""
    queue, sent = list(incoming), list[Message]()

    async def receive() -> Message:
        return queue.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    return receive, send, sent


async def test_accept_receive_send_and_close_in_order() -> None:
    receive, send, sent = peer(
        {"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hi"}
    )
    sock = Socket(receive, send)
    await sock.accept()
    assert sock.connected and sent == [{"type": "websocket.accept"}]
    assert (await sock.receive())["text"] == "hi"
    await sock.send_text("frame")
    await sock.close(4401, "token_expired")
    assert sent[1:] == [
        {"type": "websocket.send", "text": "frame"},
        {"type": "websocket.close", "code": 4401, "reason": "token_expired"},
    ]
    with pytest.raises(RuntimeError, match="once a close message has been sent"):
        await sock.send_text("after close")


async def test_a_disconnect_raises_with_its_code() -> None:
    receive, send, _ = peer({"type": "websocket.connect"}, {"type": "websocket.disconnect"})
    sock = Socket(receive, send)
    await sock.accept()
    with pytest.raises(Disconnected) as caught:
        await sock.receive()
    assert caught.value.code == 1000 and not sock.connected
    with pytest.raises(Disconnected) as caught:
        sock.arrived({"type": "websocket.disconnect", "code": 1001})
    assert caught.value.code == 1001


async def test_out_of_order_messages_are_refused() -> None:
    receive, send, _ = peer({"type": "websocket.receive", "text": "too early"})
    with pytest.raises(RuntimeError, match='Expected ASGI message "websocket.connect"'):
        await Socket(receive, send).accept()
    sock = Socket(receive, send)
    with pytest.raises(RuntimeError, match='Expected ASGI message "websocket.receive"'):
        sock.arrived({"type": "websocket.connect"})


async def test_a_send_to_a_vanished_client_is_a_1006_disconnect() -> None:
    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def gone(message: Message) -> None:
        if message["type"] == "websocket.send":
            raise OSError("transport closed")  # what uvicorn's ClientDisconnected is

    sock = Socket(receive, gone)
    await sock.accept()
    with pytest.raises(Disconnected) as caught:
        await sock.send_text("frame")
    assert caught.value.code == 1006
    with pytest.raises(RuntimeError):  # nothing more is sent to it
        await sock.close(1000, "")


def test_header_and_route_path_read_the_scope_as_starlette_does() -> None:
    scope: dict[str, Any] = {
        "headers": [(b"Origin", b"https://a.example"), (b"origin", b"https://b.example")],
        "path": "/app/v1/ws",
        "root_path": "/app",
    }
    assert header(scope, b"origin") == "https://a.example"
    assert header(scope, b"cookie") is None
    assert route_path(scope) == "/v1/ws"
    assert route_path({"path": "/app", "root_path": "/app"}) == ""
    assert route_path({"path": "/apple", "root_path": "/app"}) == "/apple"
    assert route_path({"path": "/v1/ws"}) == "/v1/ws"
