"""Keepalive pings of the socket protocol (wsserver.py), as uvicorn's websockets-sansio
protocol sends them: a ping every `ws_ping_interval`, and a socket whose pong is
`ws_ping_timeout` late fails with 1011. One timer handle per socket serves both the next
ping and the pong's deadline (upstream keeps two), and nothing else runs while idle."""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Callable
from typing import Literal

from uvicorn.config import Config
from websockets.server import ServerProtocol

__all__ = ["Keepalive", "State"]

# handshake: the app has not answered; denying: it is sending a denial response; open:
# accepted; closing: a close frame went out after the open; refused: an HTTP response
# went out instead of the 101 (or the app failed first); gone: the transport is lost.
State = Literal["handshake", "denying", "open", "closing", "refused", "gone"]


class Keepalive(asyncio.Protocol):
    """The keepalive half of `LeanWebSocketProtocol`, which provides what is declared
    here without a slot."""

    __slots__ = ("ping_timer", "ping_payload", "ping_sent_at")
    ping_timer: asyncio.TimerHandle | None  # the next ping, or the pong's deadline
    ping_payload: bytes | None  # the ping awaiting its pong
    ping_sent_at: float  # loop time of the last ping (0.0: none yet)
    config: Config
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    conn: ServerProtocol
    state: State
    # Methods of LeanWebSocketProtocol this half calls (declared, not defined, here).
    _flush: Callable[[], None]
    _end: Callable[[State], None]

    def _schedule_ping(self, delay: float) -> None:
        self.ping_timer = self.loop.call_later(max(0.0, delay), self._ping)

    def _ping(self) -> None:
        self.ping_timer = None
        if self.state != "open" or self.transport.is_closing():
            return
        # A random payload tells this ping's pong from a stale or unsolicited one.
        self.ping_payload = struct.pack("!I", random.getrandbits(32))
        self.ping_sent_at = self.loop.time()
        self.conn.send_ping(self.ping_payload)
        self._flush()
        timeout, interval = self.config.ws_ping_timeout, self.config.ws_ping_interval
        if timeout is not None:
            self.ping_timer = self.loop.call_later(timeout, self._pong_missed)
        elif interval is not None:
            self._schedule_ping(interval)

    def _pong(self, payload: bytes) -> None:
        if self.ping_payload is None or payload != self.ping_payload:
            return
        self.ping_payload = None
        interval = self.config.ws_ping_interval
        if self.config.ws_ping_timeout is not None and interval is not None:
            # The pong came in time: the next ping, one interval after this one was sent.
            self._stop_keepalive()
            self._schedule_ping(interval - (self.loop.time() - self.ping_sent_at))

    def _pong_missed(self) -> None:
        self.ping_timer = self.ping_payload = None
        if self.state != "open" or self.transport.is_closing():
            return
        self.conn.fail(1011, "keepalive ping timeout")
        self._end("closing")

    def _stop_keepalive(self) -> None:
        if self.ping_timer is not None:
            self.ping_timer.cancel()
            self.ping_timer = None
        self.ping_payload = None
