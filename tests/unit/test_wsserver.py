"""The socket protocol uvicorn runs (statebus.wsserver) against a sans-I/O client, over a
fake transport: handshake, messages, pings, closes, shutdown, and what it keeps."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from starlette.types import Message, Receive, Send
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from statebus.wsserver import ClientDisconnected, LeanWebSocketProtocol

pytestmark = pytest.mark.asyncio


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = self.reading_paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name)


class App:
    """Accepts, then records what it receives until told to stop."""

    def __init__(self) -> None:
        self.got: asyncio.Queue[Message] = asyncio.Queue()
        self.send: Send | None = None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self.send = send
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            await self.got.put(message)
            if message["type"] == "websocket.disconnect":
                return


class Denier:
    """Refuses with a 401 response, its body in two parts; or, with `finish=False`,
    returns after the first part."""

    def __init__(self, finish: bool = True) -> None:
        self.finish = finish
        self.got: list[Message] = []

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert "websocket.http.response" in scope["extensions"]
        self.got.append(await receive())
        start = {"type": "websocket.http.response.start", "status": 401}
        await send({**start, "headers": [(b"www-authenticate", b"Bearer")]})
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        if self.finish:
            await send({"type": "websocket.http.response.body", "body": b"token"})
            self.got.append(await receive())


class Pair:
    def __init__(
        self,
        ping: float | None = 20.0,
        pong: float | None = 20.0,
        app: App | Denier | None = None,
        deflate: bool = False,
    ) -> None:
        self.app = app if isinstance(app, App) else App()
        config = uvicorn.Config(
            app or self.app,
            log_config=None,
            proxy_headers=False,
            ws_ping_interval=ping,
            ws_per_message_deflate=deflate,
        )
        config.ws_ping_timeout = pong
        self.state = ServerState()
        self.server = LeanWebSocketProtocol(config, self.state, {})
        self.transport = Transport()
        self.server.connection_made(self.transport)
        offer = [ClientPerMessageDeflateFactory()] if deflate else None
        self.client = ClientProtocol(parse_uri("ws://127.0.0.1:8000/v1/ws"), extensions=offer)

    def connected(self) -> bool:
        """Whether uvicorn's server state counts the socket (its set is typed for
        uvicorn's own protocols)."""
        return any(conn is self.server for conn in list[object](self.state.connections))

    def to_server(self) -> None:
        self.server.data_received(b"".join(self.client.data_to_send()))

    def to_client(self) -> list[object]:
        self.client.receive_data(self.transport.written)
        self.transport.written = b""
        return list(self.client.events_received())

    async def open(self) -> None:
        self.client.send_request(self.client.connect())
        self.to_server()
        await asyncio.sleep(0.01)  # the app's task accepts
        (response,) = self.to_client()
        assert isinstance(response, Response) and response.status_code == 101


async def test_accept_drops_the_handshake_and_messages_reach_the_app() -> None:
    pair = Pair()
    await pair.open()
    assert (pair.server.scope, pair.server.response, pair.server.denial) == (None, None, None)
    pair.client.send_text(b"hello")
    pair.to_server()
    assert await asyncio.wait_for(pair.app.got.get(), 1) == {
        "type": "websocket.receive",
        "text": "hello",
    }
    assert not pair.transport.reading_paused  # the app took it: reading goes on
    assert pair.connected() and len(pair.state.tasks) == 1


async def test_ping_gets_pong_and_client_close_is_answered() -> None:
    pair = Pair()
    await pair.open()
    pair.client.send_ping(b"abc")
    pair.to_server()
    (pong,) = pair.to_client()
    assert isinstance(pong, Frame) and (pong.opcode, pong.data) == (Opcode.PONG, b"abc")
    pair.client.send_close(1000, "bye")
    pair.to_server()
    got = await asyncio.wait_for(pair.app.got.get(), 1)
    assert got == {"type": "websocket.disconnect", "code": 1000, "reason": "bye"}
    assert pair.transport.closing
    (close,) = pair.to_client()
    assert isinstance(close, Frame) and Close.parse(close.data).code == 1000


async def test_app_close_waits_for_the_clients_close_frame() -> None:
    pair = Pair()
    await pair.open()
    assert pair.app.send is not None
    await pair.app.send({"type": "websocket.close", "code": 4401, "reason": "expired"})
    (close,) = pair.to_client()
    assert isinstance(close, Frame) and Close.parse(close.data) == Close(4401, "expired")
    assert not pair.transport.closing
    with pytest.raises(RuntimeError):
        await pair.app.send({"type": "websocket.send", "text": "late"})
    pair.to_server()  # the client's sans-I/O protocol answered the close
    assert pair.transport.closing and pair.server.close_timer is None


async def test_shutdown_closes_with_1012_and_later_sends_raise_disconnected() -> None:
    pair = Pair()
    await pair.open()
    pair.server.shutdown()
    (close,) = pair.to_client()
    assert isinstance(close, Frame) and Close.parse(close.data).code == 1012
    got = await asyncio.wait_for(pair.app.got.get(), 1)
    assert got == {"type": "websocket.disconnect", "code": 1012}
    assert pair.app.send is not None
    with pytest.raises(ClientDisconnected):
        await pair.app.send({"type": "websocket.send", "text": "late"})


async def test_a_missed_pong_fails_the_socket_with_1011() -> None:
    pair = Pair(ping=0.05, pong=0.05)
    await pair.open()
    await asyncio.sleep(0.2)
    events = pair.to_client()
    assert isinstance(events[0], Frame) and events[0].opcode == Opcode.PING
    assert isinstance(events[-1], Frame) and Close.parse(events[-1].data).code == 1011
    assert pair.transport.closing


async def test_an_answered_ping_keeps_the_socket() -> None:
    pair = Pair(ping=0.02, pong=0.5)
    await pair.open()
    pings, deadline = 0, asyncio.get_running_loop().time() + 5
    while pings < 3 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)
        events = pair.to_client()  # the client's sans-I/O protocol answers pings
        pings += sum(isinstance(e, Frame) and e.opcode == Opcode.PING for e in events)
        pair.to_server()
    assert pings == 3  # each one sent after the last was answered, none missed
    assert not pair.transport.closing and pair.server.state == "open"


async def test_a_bad_handshake_is_refused_without_calling_the_app() -> None:
    pair = Pair()
    pair.server.data_received(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n\r\n")
    (response,) = pair.to_client()
    assert isinstance(response, Response) and response.status_code == 426
    assert pair.transport.closing and not pair.state.tasks


async def test_transport_loss_tells_the_app_and_fails_later_sends() -> None:
    pair = Pair()
    await pair.open()
    pair.server.connection_lost(None)
    got = await asyncio.wait_for(pair.app.got.get(), 1)
    assert got == {"type": "websocket.disconnect", "code": 1005}
    assert not pair.connected()
    assert pair.app.send is not None
    with pytest.raises(ClientDisconnected):
        await pair.app.send({"type": "websocket.send", "text": "late"})


async def test_per_message_deflate_is_negotiated_when_the_config_offers_it() -> None:
    pair = Pair(deflate=True)  # uvicorn's default; statebus's serve.py turns it off
    await pair.open()
    assert [type(e).__name__ for e in pair.client.extensions] == ["PerMessageDeflate"]
    pair.client.send_text(b"squeezed " * 50)
    pair.to_server()
    got = await asyncio.wait_for(pair.app.got.get(), 1)
    assert got == {"type": "websocket.receive", "text": "squeezed " * 50}


async def test_a_denial_response_goes_out_whole_with_its_last_body() -> None:
    denier = Denier()
    pair = Pair(app=denier)
    pair.client.send_request(pair.client.connect())
    pair.to_server()
    await asyncio.wait_for(pair.state.tasks.pop(), 1)
    (response,) = pair.to_client()
    assert isinstance(response, Response) and response.status_code == 401
    assert (response.headers["WWW-Authenticate"], response.body) == ("Bearer", b"no token")
    assert denier.got[-1] == {"type": "websocket.disconnect", "code": 1006}
    assert pair.transport.closing and pair.server.denial is None


async def test_an_app_that_ends_mid_denial_sends_what_it_gave() -> None:
    pair = Pair(app=Denier(finish=False))
    pair.client.send_request(pair.client.connect())
    pair.to_server()
    await asyncio.wait_for(pair.state.tasks.pop(), 1)
    (response,) = pair.to_client()
    assert isinstance(response, Response) and (response.status_code, response.body) == (401, b"no ")
    assert pair.transport.closing


async def test_a_close_gives_up_after_close_timeout_without_the_peers_reply() -> None:
    pair = Pair()
    await pair.open()
    pair.server.close_timeout = 0.01
    assert pair.app.send is not None
    await pair.app.send({"type": "websocket.close", "code": 1000})
    assert not pair.transport.closing and pair.server.close_timer is not None
    await asyncio.sleep(0.05)
    assert pair.transport.closing
    pair.server.connection_lost(None)
    assert pair.server.close_timer is None


async def test_sends_wait_while_writes_are_paused_and_fail_if_the_transport_goes() -> None:
    pair = Pair()
    await pair.open()
    assert pair.app.send is not None
    pair.server.pause_writing()
    sending = asyncio.ensure_future(pair.app.send({"type": "websocket.send", "text": "a"}))
    await asyncio.sleep(0.01)
    assert not sending.done() and pair.transport.written == b""
    pair.server.resume_writing()
    await asyncio.wait_for(sending, 1)
    assert [e.data for e in pair.to_client() if isinstance(e, Frame)] == [b"a"]
    pair.server.pause_writing()
    sending = asyncio.ensure_future(pair.app.send({"type": "websocket.send", "text": "b"}))
    await asyncio.sleep(0.01)
    pair.server.connection_lost(None)
    with pytest.raises(ClientDisconnected):
        await asyncio.wait_for(sending, 1)


async def test_a_send_after_the_peers_close_raises_disconnected() -> None:
    pair = Pair()
    await pair.open()
    pair.client.send_close(1000)
    pair.to_server()  # the transport is closing, but not lost yet
    assert pair.app.send is not None
    with pytest.raises(ClientDisconnected):
        await pair.app.send({"type": "websocket.send", "text": "late"})


async def test_an_idle_open_socket_holds_no_timer_but_keepalive_and_no_queue() -> None:
    pair = Pair()
    await pair.open()
    assert not hasattr(pair.server, "__dict__")
    assert pair.server.ping_timer is not None and pair.server.close_timer is None
    assert pair.server.drained is None and pair.server.inbox == []
