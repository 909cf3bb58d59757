"""The WebSocket protocol uvicorn runs for statebus (`ws=` in serve.py): uvicorn's
websockets-sansio protocol, rewritten to hold little per open socket.

Same wire behaviour and the same ASGI events: the `websockets` sans-I/O `ServerProtocol`
parses and frames, keepalive pings every `ws_ping_interval` and fails a socket whose
pong is `ws_ping_timeout` late (1011), a server shutdown closes with 1012, a close the
app sends waits up to 10 s for the client's, reads pause while a message waits for the
app, sends wait while the transport is paused. What it does not keep, per socket, for
as long as the socket is open (uvicorn's keeps all of them: ~10 KiB of RSS per idle
socket, docs/architecture.md "Memory per socket"):

- the parsed request and the prepared response (their headers, twice): both are
  dropped once the app has accepted or refused the socket, and so is the
  `ServerProtocol` that parsed the request (its parser frame keeps it);
- an `asyncio.Queue` (three deques and an event, ~3 KiB) for what is at most a message
  or two waiting for the app: here a list and a future made only while the app waits;
- an `asyncio.Event` for write flow control: a future made only while writes pause;
- an instance `__dict__`: the protocol is slotted.

It does not offer the `websocket.http.response` extension (statebus never sends a
denial response; uvicorn's offers it): a socket is accepted, or refused with 403. Nor
per-message deflate, which statebus turns off.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from http import HTTPStatus
from typing import Any, Literal, cast

from starlette.types import Message
from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from statebus.wshandshake import (
    accepted,
    frames_protocol,
    handshake_protocol,
    log_outcome,
    scope_of,
)

__all__ = ["ClientDisconnected", "LeanWebSocketProtocol"]

log = logging.getLogger("uvicorn.error")  # uvicorn's own lines, as its protocol logs them
CLOSE_TIMEOUT = 10.0  # for the client's close frame after ours (uvicorn's figure)


class ClientDisconnected(OSError):
    """A send after the client has gone (ASGI: an OSError; Starlette maps it to 1006)."""


class LeanWebSocketProtocol(asyncio.Protocol):
    __slots__ = tuple(
        "config app loop server_state app_state transport conn scope request response inbox"
        " waiter drained timer ping_payload state read_paused text fragments".split()
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config, self.app = config, config.loaded_app
        self.loop = _loop or asyncio.get_running_loop()
        self.server_state, self.app_state = server_state, app_state
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.conn = handshake_protocol(config, log)  # frames_protocol() once accepted
        self.scope: dict[str, Any] | None = None  # until the app accepts or refuses
        self.request: Request | None = None  # likewise
        self.response: Response | None = None  # likewise: the 101 to send on accept
        self.inbox: list[Message] = []  # events the app has not received yet
        self.waiter: asyncio.Future[None] | None = None  # while the app waits for one
        self.drained: asyncio.Future[None] | None = None  # while writing is paused
        self.timer: asyncio.TimerHandle | None = None  # next ping, pong deadline or close
        self.ping_payload: bytes | None = None  # the ping awaiting its pong
        # handshake: the app has not accepted; open: accepted; closing: a close frame was
        # sent (or the socket refused); gone: the transport is lost
        self.state: Literal["handshake", "open", "closing", "gone"] = "handshake"
        self.read_paused = False
        self.text = False  # the message being received is text
        self.fragments: list[bytes | bytearray | memoryview] = []

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        code = 1006 if self.state == "handshake" else 1005
        self._deliver({"type": "websocket.disconnect", "code": code})
        self.server_state.connections.discard(self)
        self.state = "gone"
        self.scope = self.request = self.response = None
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)  # nothing will drain now: senders must see "gone"
        if exc is None:
            self.transport.close()

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        if self.drained is None or self.drained.done():
            self.drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.drained = None

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        if self.conn.parser_exc is not None:  # a protocol error: websockets queued a close
            close = self.conn.close_sent
            code = close.code if close is not None else 1002
            reason = close.reason if close is not None else ""
            self._deliver({"type": "websocket.disconnect", "code": code, "reason": reason})
            self._flush()
            self.state = "closing"
            self.transport.close()
            return
        for event in self.conn.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._frame(event)

    # server side

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: 1012 to open sockets (a 500 before the handshake)."""
        self._cancel_timer()
        if self.state == "open":
            self._deliver({"type": "websocket.disconnect", "code": 1012})
            self.conn.send_close(1012)
            self._flush()
        elif self.state == "handshake":
            self._send_500()
        self.transport.close()

    def _handshake(self, request: Request) -> None:
        response = self.conn.accept(request)
        if response.status_code != 101:  # not a valid WebSocket handshake: no app call
            self.state = "closing"
            self.conn.send_response(response)
            self._flush()
            self.transport.close()
            return
        self.request, self.response = request, response
        self.scope = scope_of(request, self.transport, self.config, self.app_state)
        self._deliver({"type": "websocket.connect"})
        task = self.loop.create_task(self._run_asgi())
        self.server_state.tasks.add(task)
        task.add_done_callback(self.server_state.tasks.discard)

    async def _run_asgi(self) -> None:
        # The scope is not a local here: once the app drops it (after the handshake),
        # nothing of this frame keeps its headers alive.
        try:
            await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            log.exception("Exception in ASGI application\n")
            self._send_500()
        else:
            if self.state == "handshake":
                log.error("ASGI callable returned without completing handshake.")
                self._send_500()
        if self.state != "closing" or self.timer is None:
            self.transport.close()

    def _send_500(self) -> None:
        if self.state != "handshake":
            return
        self.state = "closing"
        self.conn.send_response(self.conn.reject(500, "Internal Server Error"))
        self._flush()

    # frames from the client

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode in (Opcode.TEXT, Opcode.BINARY):
            self.text, self.fragments = opcode == Opcode.TEXT, [frame.data]
        elif opcode == Opcode.CONT:
            self.fragments.append(frame.data)
        elif opcode == Opcode.PING:
            self._flush()  # websockets queued the pong
            return
        elif opcode == Opcode.PONG:
            if self.ping_payload is not None and bytes(frame.data) == self.ping_payload:
                self.ping_payload = None
                self._cancel_timer()
                self._schedule_ping()
            return
        elif opcode == Opcode.CLOSE:
            self._closed_by_client()
            return
        if frame.fin:
            self._message()

    def _message(self) -> None:
        data = b"".join(self.fragments)
        self.fragments = []
        if self.state == "closing":
            return  # past the app's close: read on only for the client's close frame
        if self.text:
            try:
                message: Message = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                log.exception("Invalid UTF-8 sequence received from client.")
                self.conn.send_close(1007)
                self._deliver({"type": "websocket.disconnect", "code": 1007, "reason": ""})
                self._flush()
                self.state = "closing"
                self.transport.close()
                return
        else:
            message = {"type": "websocket.receive", "bytes": data}
        self._deliver(message)
        if not self.read_paused:  # until the app has taken it
            self.read_paused = True
            self.transport.pause_reading()

    def _closed_by_client(self) -> None:
        if self.state == "closing":  # the client answered our close frame
            if self.timer is not None:
                self._cancel_timer()
                self.transport.close()
            return
        if not self.transport.is_closing():
            close = self.conn.close_rcvd
            assert close is not None
            self._deliver(
                {"type": "websocket.disconnect", "code": close.code, "reason": close.reason}
            )
            self._flush()  # websockets queued the answering close frame
            self.transport.close()

    # keepalive: one timer per socket, for the next ping or the pong's deadline

    def _schedule_ping(self) -> None:
        interval = self.config.ws_ping_interval
        if interval is not None and interval > 0:
            self.timer = self.loop.call_later(interval, self._ping)

    def _ping(self) -> None:
        self.timer = None
        if self.state != "open" or self.transport.is_closing():
            return
        self.ping_payload = struct.pack("!I", random.getrandbits(32))
        self.conn.send_ping(self.ping_payload)
        self._flush()
        timeout = self.config.ws_ping_timeout
        if timeout is not None:
            self.timer = self.loop.call_later(timeout, self._pong_missed)
        else:
            self._schedule_ping()

    def _pong_missed(self) -> None:
        self.timer = self.ping_payload = None
        if self.state != "open" or self.transport.is_closing():
            return
        self.conn.fail(1011, "keepalive ping timeout")
        self._flush()
        self.state = "closing"
        self.transport.close()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # the ASGI side

    def _deliver(self, message: Message) -> None:
        self.inbox.append(message)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def receive(self) -> Message:
        while not self.inbox:
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        message = self.inbox.pop(0)
        if self.read_paused and not self.inbox:
            self.read_paused = False
            self.transport.resume_reading()
        return message

    async def send(self, message: Message) -> None:
        if self.drained is not None:
            await self.drained
        if self.state == "gone":
            raise ClientDisconnected()
        kind = message["type"]
        if self.state == "handshake":
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._refuse()
            else:
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.accept' or 'websocket.close', got {kind!r}"
                )
        elif self.state == "open":
            try:
                self._send_open(kind, message)
            except InvalidState:  # a close frame went out already (a server shutdown)
                raise ClientDisconnected() from None
        else:
            raise RuntimeError(
                f"Unexpected ASGI message {kind!r}, after sending 'websocket.close'."
            )

    def _send_open(self, kind: str, message: Message) -> None:
        if kind == "websocket.send":
            data, text = message.get("bytes"), message.get("text")
            if data is not None:
                self.conn.send_binary(data)
            elif text is not None:
                self.conn.send_text(text.encode())
            self._flush()
        elif kind == "websocket.close":
            self._close(message.get("code", 1000), message.get("reason") or "")
        else:
            raise RuntimeError(
                f"Expected ASGI message 'websocket.send' or 'websocket.close', got {kind!r}"
            )

    def _accept(self, message: Message) -> None:
        assert self.scope is not None and self.response is not None
        log_outcome(log, self.scope, "[accepted]")
        response = accepted(self.response, self.server_state.default_headers, message)
        # The handshake is over: what it parsed and built is not needed any more.
        self.scope = self.request = self.response = None
        if not self.transport.is_closing():
            self.state = "open"
            self.conn.send_response(response)
            self._flush()
            self.conn = frames_protocol(self.config, log)  # holds no request (wshandshake.py)
            self._schedule_ping()

    def _refuse(self) -> None:
        assert self.scope is not None
        self._deliver({"type": "websocket.disconnect", "code": 1006})
        log_outcome(log, self.scope, "403")
        self.scope = self.request = self.response = None
        self.state = "closing"
        self.conn.send_response(self.conn.reject(HTTPStatus.FORBIDDEN, ""))
        self._flush()
        self.transport.close()

    def _close(self, code: int, reason: str) -> None:
        if self.transport.is_closing():
            return
        self._deliver({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self._flush()
        self.state = "closing"
        self._cancel_timer()  # no more pings: the timer now waits for the client's close
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.timer = self.loop.call_later(CLOSE_TIMEOUT, self.transport.close)

    def _flush(self) -> None:
        output = self.conn.data_to_send()
        if output:
            self.transport.write(b"".join(output))
