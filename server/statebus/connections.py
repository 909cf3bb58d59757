"""Every client connection bounded before it authenticates (docs/security.md,
"Connection limits").

uvicorn closes a keep-alive connection idle after a response (`timeout_keep_alive`), but
with httptools it has no deadline for a request's headers (a connection that trickles
them, or sends nothing at all, stays open for ever), no limit on their size, and its
`limit_concurrency` neither counts nor refuses WebSocket upgrades. This module adds what
is missing, around uvicorn's own HTTP protocol:

- `Connections` counts the process's open client connections, sockets and HTTP alike,
  by transport (uvicorn hands a socket's transport from the HTTP protocol to the
  WebSocket one, and it stays counted). Past the cap a connection is still read, for a
  few headers, and answered 503 (HTTP) or 1013 (a socket, `GuardedWebSocketProtocol`);
  past the cap plus `OVERFLOW` it is closed as soon as it is accepted.
- `GuardedHttpProtocol` gives each request `header_timeout` seconds, from the
  connection (or from the request's first byte on a kept-alive one) to the end of its
  headers, and `MAX_HEADER_BYTES` of them; past either it answers 408 / 431 and closes.

It never reads a header's value, and logs nothing about a client but counts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from prometheus_client import Counter, Gauge
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from websockets.http11 import Request

from statebus.config import ConfigError
from statebus.core_messages import Error, ErrorBody, encoder
from statebus.metrics import registry
from statebus.wshandshake import accepted
from statebus.wsserver import LeanWebSocketProtocol

__all__ = [
    "Connections",
    "GuardedHttpProtocol",
    "GuardedWebSocketProtocol",
    "fit_file_limit",
    "protocols",
]

log = logging.getLogger("statebus.connections")

MAX_HEADER_BYTES = 64 * 1024  # a request line and headers; a bearer token is at most 16 KiB
# Connections past the cap that are still answered (503 / 1013) rather than dropped.
OVERFLOW = 100
# Files the process needs besides its client connections: database pool and LISTEN
# connections, the Stripe client, epoll, logs, imports; the OVERFLOW answers come on top.
RESERVED_FILES = 156
RETRY_AFTER_SECONDS = 5

open_connections = Gauge(
    "statebus_connections",
    "open client connections (HTTP and WebSocket, authenticated or not) within the cap",
    registry=registry,
)
refused = Counter(
    "statebus_connections_refused",
    "client connections refused or closed by a connection limit, by reason",
    ["reason"],
    registry=registry,
)

Verdict = Literal["admitted", "over", "dropped"]


class Connections:
    """The process's open client connections, counted against `cap`."""

    def __init__(self, cap: int, *, overflow: int = OVERFLOW) -> None:
        self.cap, self.overflow = cap, overflow
        self._admitted: set[asyncio.BaseTransport] = set()
        self._over: set[asyncio.BaseTransport] = set()

    def __len__(self) -> int:
        return len(self._admitted)

    def admit(self, transport: asyncio.BaseTransport) -> Verdict:
        if len(self._admitted) < self.cap:
            self._admitted.add(transport)
            open_connections.inc()
            return "admitted"
        refused.labels("over_cap").inc()
        if len(self._over) < self.overflow:
            self._over.add(transport)
            return "over"
        return "dropped"

    def admitted(self, transport: asyncio.BaseTransport) -> bool:
        return transport in self._admitted

    def release(self, transport: asyncio.BaseTransport) -> None:
        """Idempotent: both protocols of an upgraded connection may call it."""
        if transport in self._admitted:
            self._admitted.discard(transport)
            open_connections.dec()
        self._over.discard(transport)


OVERLOADED = encoder.encode(
    ErrorBody("overloaded", "this server holds all the connections it may; retry later")
)


async def overloaded(_scope: Any, _receive: Any, send: Any) -> None:
    """The ASGI app of a connection past the cap: 503, and the connection closes."""
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(OVERLOADED)).encode()),
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": OVERLOADED})


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a header size limit and the
    connection cap. Everything else (parsing, keep-alive, pipelining, upgrades) is
    uvicorn's."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        connections: Connections,
        header_timeout: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.tracker, self.header_timeout = connections, header_timeout
        self.header_timer: asyncio.TimerHandle | None = None
        self.awaiting_headers = False  # between a request's first byte (or connect) and its end
        self.headers_ended = False  # during one data_received: some request's headers ended
        self.header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        verdict = self.tracker.admit(transport)
        if verdict == "dropped":
            transport.close()
            return
        if verdict == "over":
            self.app = overloaded  # uvicorn runs this app for each request of this connection
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        self.tracker.release(self.transport)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before, self.headers_ended = self.awaiting_headers, False
        super().data_received(data)
        # Headers uvicorn (httptools) buffers without limit; count whole reads that went
        # into them (a read that also ended a request is not counted: at most one read
        # under, never a body counted as headers).
        if before and self.awaiting_headers and not self.headers_ended:
            self.header_bytes += len(data)
            if self.header_bytes > MAX_HEADER_BYTES:
                self._refuse(431, "header_too_large", "request headers are too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self.awaiting_headers:  # the next request on a kept-alive connection
            self._await_headers()

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        self.awaiting_headers, self.headers_ended = False, True
        super().on_headers_complete()

    def _await_headers(self) -> None:
        self.awaiting_headers, self.header_bytes = True, 0
        if self.header_timer is None:
            self.header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_late(self) -> None:
        self.header_timer = None
        self._refuse(408, "header_timeout", "request headers did not arrive in time")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answers once, before the app has seen the request, and closes."""
        self._stop_header_timer()
        self.awaiting_headers = False
        if self.transport.is_closing():
            return
        refused.labels(reason).inc()
        body = encoder.encode(ErrorBody(reason, message))
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
        head += [
            f"{k.decode('latin-1')}: {v.decode('latin-1')}"
            for k, v in self.server_state.default_headers
        ]
        head += ["content-type: application/json", f"content-length: {len(body)}"]
        head += ["connection: close", "", ""]
        self.transport.write("\r\n".join(head).encode("latin-1") + body)
        self.transport.close()


# The error message the socket endpoint (ws.py) sends before its own 1013.
OVERLOADED_FRAME = encoder.encode(
    Error("overloaded", "this server holds all the connections it may; retry later")
)


class GuardedWebSocketProtocol(LeanWebSocketProtocol):
    """statebus's socket protocol (wsserver.py), told by the connection count whether the
    HTTP protocol that handed it the transport found it past the cap. Past it, the
    upgrade is accepted (a close code needs an open socket), an `overloaded` error
    message and close 1013 follow at once, and the app is never called."""

    __slots__ = ("tracker", "admitted")

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        connections: Connections,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.tracker, self.admitted = connections, True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.admitted = self.tracker.admitted(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.tracker.release(self.transport)
        super().connection_lost(exc)

    def _handshake(self, request: Request) -> None:
        if self.admitted:
            super()._handshake(request)
            return
        response = self.conn.accept(request)
        if response.status_code == 101:
            self.conn.send_response(accepted(response, self.server_state.default_headers, {}))
            self.conn.send_text(OVERLOADED_FRAME)
            self.conn.send_close(1013, "overloaded")
        else:  # not a valid upgrade: websockets' own refusal
            self.conn.send_response(response)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.state = "closing"
        self.transport.close()


def protocols(cap: int, header_timeout: float) -> tuple[Any, Any]:
    """The (http, ws) protocol factories for one server, sharing one connection count."""
    connections = Connections(cap)
    http = functools.partial(
        GuardedHttpProtocol, connections=connections, header_timeout=header_timeout
    )
    ws = functools.partial(GuardedWebSocketProtocol, connections=connections)
    return http, ws


@dataclass(frozen=True)
class FileLimit:
    soft: int
    hard: int

    @property
    def sockets(self) -> int:
        """Client connections that fit beside what the process needs anyway."""
        return self.soft - RESERVED_FILES - OVERFLOW


def raise_file_limit() -> FileLimit:
    """Raises the soft open-file limit to the hard one (any process may) and returns both."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # an unlimited hard limit the kernel caps lower
            pass
    return FileLimit(soft, hard)


def fit_file_limit(max_sockets: int, *, explicit: bool) -> int:
    """The connection cap this process can hold: `max_sockets` when it fits the open-file
    limit (raised first). A cap set by STATEBUS_MAX_SOCKETS that cannot fit stops the
    start with ConfigError; the default is lowered to fit, with a warning."""
    limit = raise_file_limit()
    if max_sockets <= limit.sockets:
        return max_sockets
    need = max_sockets + RESERVED_FILES + OVERFLOW
    message = (
        f"STATEBUS_MAX_SOCKETS={max_sockets} cannot fit the open-file limit of "
        f"{limit.soft} (hard limit {limit.hard}): it needs {need} open files "
        f"({RESERVED_FILES + OVERFLOW} besides the sockets); set STATEBUS_MAX_SOCKETS to at "
        f"most {max(limit.sockets, 0)} or raise the hard limit (ulimit -n, LimitNOFILE=)"
    )
    if explicit or limit.sockets < 1:
        raise ConfigError(message)
    log.warning("%s; serving at most %d connections", message, limit.sockets)
    return limit.sockets
