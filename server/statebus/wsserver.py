"""The WebSocket protocol uvicorn runs for statebus (`ws=` in serve.py): a vendored fork
of uvicorn 0.55.0's `uvicorn/protocols/websockets/websockets_sansio_impl.py`
(`WebSocketsSansIOProtocol`, on websockets 17), rewritten to hold little per open socket.
pyproject.toml bounds both to the releases it was checked against by uvicorn's own
WebSocket tests (scripts/upstream_ws_tests.py); docs/architecture.md "The socket
protocol fork" says how to re-sync it on an upgrade.

Same wire behaviour and ASGI events as upstream. What it does not keep per open socket
(upstream does): the parsed request, the prepared response and the `ServerProtocol`
that parsed them (its parser frame keeps the request), all dropped once the app has
answered; an `asyncio.Queue` (~3 KiB; here a list, and a future only while the app
waits); an `asyncio.Event` for flow control (a future only while writes pause); a
second keepalive timer (wskeepalive.py); an instance `__dict__` (it is slotted).
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any, cast

from starlette.types import Message
from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.server import ServerState
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from statebus.wshandshake import (
    accepted,
    denial_response,
    frames_protocol,
    handshake_protocol,
    log_outcome,
    scope_of,
)
from statebus.wskeepalive import Keepalive, State

__all__ = ["ClientDisconnected", "LeanWebSocketProtocol"]

log = logging.getLogger("uvicorn.error")  # uvicorn's own lines, as its protocol logs them
CLOSE_TIMEOUT = 10.0  # for the peer's close frame after ours (uvicorn's figure)


class LeanWebSocketProtocol(Keepalive):
    __slots__ = tuple(
        "config app loop server_state app_state transport conn scope response denial inbox"
        " waiter drained close_timer close_timeout state read_paused text fragments".split()
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
        self.response: Response | None = None  # likewise: the 101 to send on accept
        self.denial: tuple[int, list[tuple[str, str]], bytes] | None = None  # while denying
        self.inbox: list[Message] = []  # events the app has not received yet
        self.waiter: asyncio.Future[None] | None = None  # while the app waits for one
        self.drained: asyncio.Future[None] | None = None  # while writing is paused
        self.ping_timer: asyncio.TimerHandle | None = None  # wskeepalive.py
        self.ping_payload: bytes | None = None
        self.ping_sent_at = 0.0
        self.close_timer: asyncio.TimerHandle | None = None  # while awaiting the peer's close
        self.close_timeout = CLOSE_TIMEOUT
        self.state: State = "handshake"
        self.read_paused = False
        self.text = False  # the message being received is text
        self.fragments: list[bytes | bytearray | memoryview] = []

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_keepalive()
        self._cancel_close_timer()
        code = 1005 if self.state in ("open", "closing") else 1006
        self._deliver({"type": "websocket.disconnect", "code": code})
        self.server_state.connections.discard(self)
        self.state = "gone"
        self.scope = self.response = self.denial = None
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
            self._end("closing" if self.state in ("open", "closing") else "refused")
            return
        if (
            self.conn.handshake_exc is not None
            and self.state == "handshake"
            and self.response is None
        ):
            # An unparseable request: websockets queued a 414 or 431, or nothing (then 400).
            output = b"".join(self.conn.data_to_send())
            if not output:
                reason = "Failed to open a WebSocket connection: invalid request.\n"
                output = self.conn.reject(400, reason).serialize()
            self.transport.write(output)
            self._end("refused")
            return
        for event in self.conn.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._frame(event)

    # server side

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: 1012 to open sockets (a 500 before the handshake)."""
        self._stop_keepalive()
        if self.state == "open":
            self._deliver({"type": "websocket.disconnect", "code": 1012})
            self.conn.send_close(1012)
            self._flush()
        elif self.state == "handshake":
            self._send_500()
        self._cancel_close_timer()
        self.transport.close()

    def _handshake(self, request: Request) -> None:
        response = self.response = self.conn.accept(request)
        if response.status_code != 101:  # not a valid WebSocket handshake: no app call
            self.conn.send_response(response)
            self._end("refused")
            return
        self.scope = scope_of(request, self.transport, self.config, self.app_state)
        self._deliver({"type": "websocket.connect"})
        task = self.loop.create_task(self._run_asgi())
        self.server_state.tasks.add(task)
        task.add_done_callback(self.server_state.tasks.discard)

    async def _run_asgi(self) -> None:
        # The scope is not a local here: once the app drops it (after the handshake),
        # nothing of this frame keeps its headers alive.
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            log.exception("Exception in ASGI application\n")
            self._send_500()
        else:
            if self.state == "handshake":
                log.error("ASGI callable returned without completing handshake.")
                self._send_500()
            elif result is not None:
                log.error("ASGI callable should return None, but returned '%s'.", result)
        if self.state == "denying":  # the app ended mid-response: what it gave goes out
            self._denial_body({"body": b""})
        if self.close_timer is None:  # else the peer's close frame, or the timeout, ends it
            self.transport.close()

    def _send_500(self) -> None:
        if self.state == "handshake":
            self.conn.send_response(self.conn.reject(500, "Internal Server Error"))
            self._flush()

    def _end(self, state: State) -> None:
        """Sends what websockets queued (a close frame or a response) and closes."""
        self._flush()
        self.state = state
        self._stop_keepalive()
        self.transport.close()

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
            self._pong(bytes(frame.data))
            return
        elif opcode == Opcode.CLOSE:
            self._closed_by_client()
            return
        if frame.fin:
            self._message()

    def _message(self) -> None:
        data = b"".join(self.fragments)
        self.fragments = []
        if self.state != "open":
            return  # past the app's close: read on only for the client's close frame
        if self.text:
            try:
                message: Message = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                log.exception("Invalid UTF-8 sequence received from client.")
                self.conn.send_close(1007)
                self._deliver({"type": "websocket.disconnect", "code": 1007, "reason": ""})
                self._end("closing")
                return
        else:
            message = {"type": "websocket.receive", "bytes": data}
        self._deliver(message)
        if not self.read_paused:  # until the app has taken it
            self.read_paused = True
            self.transport.pause_reading()

    def _closed_by_client(self) -> None:
        if self.state == "closing":  # the client answered our close frame
            if self.close_timer is not None:
                self._cancel_close_timer()
                self.transport.close()
            return
        if not self.transport.is_closing():
            close = self.conn.close_rcvd
            assert close is not None
            self._deliver(
                {"type": "websocket.disconnect", "code": close.code, "reason": close.reason}
            )
            self._flush()  # websockets queued the answering close frame
            self._stop_keepalive()
            self.transport.close()

    def _cancel_close_timer(self) -> None:
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None

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
            elif kind == "websocket.http.response.start":
                self._deny(message)
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' "
                    f"or 'websocket.http.response.start' but got '{kind}'."
                )
        elif self.state == "open":
            try:
                self._send_open(kind, message)
            except InvalidState:  # a close frame went out already (the peer's or a shutdown)
                raise ClientDisconnected() from None
        elif self.state == "denying":
            if kind != "websocket.http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.http.response.body' but got '{kind}'."
                )
            self._denial_body(message)
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}', after sending 'websocket.close'."
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
                f"Expected ASGI message 'websocket.send' or 'websocket.close', but got '{kind}'."
            )

    def _accept(self, message: Message) -> None:
        assert self.scope is not None and self.response is not None
        log_outcome(log, self.scope, "[accepted]")
        response = accepted(self.response, self.server_state.default_headers, message)
        # The handshake is over: what it parsed and built is not needed any more.
        self.scope = self.response = None
        if not self.transport.is_closing():
            self.state = "open"
            self.conn.send_response(response)
            self._flush()
            self.conn = frames_protocol(self.config, log, self.conn)  # no request kept
            interval = self.config.ws_ping_interval
            if interval is not None and interval > 0:
                self._schedule_ping(interval)

    def _refuse(self) -> None:
        assert self.scope is not None
        self._deliver({"type": "websocket.disconnect", "code": 1006})
        log_outcome(log, self.scope, "403")
        self.scope = self.response = None
        self.conn.send_response(self.conn.reject(HTTPStatus.FORBIDDEN, ""))
        self._end("refused")

    def _deny(self, message: Message) -> None:
        """`websocket.http.response.start`: sent whole with the last body message."""
        assert self.scope is not None
        status = message["status"]
        if not 100 <= status < 600:
            raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
        log_outcome(log, self.scope, str(status))
        self.scope = self.response = None
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])
        ]
        self.denial = (status, headers, b"")
        self.state = "denying"

    def _denial_body(self, message: Message) -> None:
        assert self.denial is not None
        status, headers, body = self.denial
        body += message["body"]
        self.denial = (status, headers, body)
        if not message.get("more_body", False):
            self.denial = None
            self._deliver({"type": "websocket.disconnect", "code": 1006})
            self.conn.send_response(denial_response(status, headers, body))
            self._end("refused")

    def _close(self, code: int, reason: str) -> None:
        if self.transport.is_closing():
            return
        self._deliver({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self._flush()
        self.state = "closing"
        self._stop_keepalive()  # no more pings: the close timer waits for the peer's close
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

    def _flush(self) -> None:
        output = self.conn.data_to_send()
        if output:
            self.transport.write(b"".join(output))
