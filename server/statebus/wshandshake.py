"""The handshake pieces of the socket protocol (wsserver.py), as uvicorn's
websockets-sansio protocol makes them: the `ServerProtocol`s, the ASGI scope, the
accepting 101 response and the log line of each outcome."""

from __future__ import annotations

import asyncio
import email.utils
import logging
from collections.abc import Mapping
from http import HTTPStatus
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from starlette.types import Message
from uvicorn.config import Config
from uvicorn.protocols.utils import (
    get_client_addr,
    get_local_addr,
    get_path_with_query_string,
    get_remote_addr,
    is_ssl,
)
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

__all__ = [
    "accepted",
    "denial_response",
    "frames_protocol",
    "handshake_protocol",
    "log_outcome",
    "scope_of",
]

# What every scope's `extensions` offers. The app holds its scope for as long as the
# socket is open, so this is one read-only mapping for all of them rather than two
# dicts (~130 bytes) per socket; an app that writes to it gets a TypeError.
EXTENSIONS: Mapping[str, Mapping[str, object]] = MappingProxyType(
    {"websocket.http.response": MappingProxyType({})}
)


def handshake_protocol(config: Config, logger: logging.Logger) -> ServerProtocol:
    """Parses the request and writes the response, then is dropped for `frames_protocol`.

    A `ServerProtocol` that parsed the handshake keeps the request (its headers, twice
    over) in its parser's frame for as long as it lives; one made in the OPEN state
    never parses one. Per-message deflate is offered as uvicorn offers it (statebus turns
    it off in serve.py: a compressor per socket costs far more than the socket).
    """
    extensions = []
    if config.ws_per_message_deflate:
        extensions = [
            ServerPerMessageDeflateFactory(
                server_max_window_bits=12,
                client_max_window_bits=12,
                compress_settings={"memLevel": 5},
            )
        ]
    return ServerProtocol(extensions=extensions, max_size=config.ws_max_size, logger=logger)


def frames_protocol(
    config: Config, logger: logging.Logger, handshake: ServerProtocol
) -> ServerProtocol:
    """Frames once the 101 is out (the client sends none before it has the 101), with
    the extensions `handshake` negotiated."""
    conn = ServerProtocol(state=State.OPEN, max_size=config.ws_max_size, logger=logger)
    conn.extensions = handshake.extensions
    return conn


def scope_of(
    request: Request, transport: asyncio.Transport, config: Config, app_state: dict[str, Any]
) -> dict[str, Any]:
    """The ASGI scope, offering the denial response extension as uvicorn does (in a
    mapping shared by every scope: EXTENSIONS)."""
    # websockets documents non-ASCII header values as ISO-8859-1 (as uvicorn encodes).
    headers = [(k.encode("ascii"), v.encode("latin-1")) for k, v in request.headers.raw_items()]
    raw_path, _, query_string = request.path.partition("?")
    subprotocols = [
        token.strip()
        for value in request.headers.get_all("Sec-WebSocket-Protocol")
        for token in value.split(",")
    ]
    root = config.root_path
    return {
        "type": "websocket",
        "asgi": {"version": config.asgi_version, "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "wss" if is_ssl(transport) else "ws",
        "server": get_local_addr(transport),
        "client": get_remote_addr(transport),
        "root_path": root,
        "path": root + unquote(raw_path),
        "raw_path": root.encode("ascii") + raw_path.encode("ascii"),
        "query_string": query_string.encode("ascii"),
        "headers": headers,
        "subprotocols": subprotocols,
        "state": app_state.copy(),
        "extensions": EXTENSIONS,
    }


def accepted(
    response: Response, default_headers: list[tuple[bytes, bytes]], message: Message
) -> Response:
    """The 101 `ServerProtocol.accept()` made, with the server's default headers (date,
    server) and those of the app's `websocket.accept`."""
    headers = [
        (name.decode("latin-1").lower(), value.decode("latin-1"))
        for name, value in [*default_headers, *message.get("headers", [])]
    ]
    if message.get("subprotocol"):
        headers.append(("Sec-WebSocket-Protocol", message["subprotocol"]))
    del response.headers["Date"]
    response.headers.update(headers)
    return response


def log_outcome(logger: logging.Logger, scope: dict[str, Any], outcome: str) -> None:
    logger.info(
        '%s - "WebSocket %s" %s',
        get_client_addr(scope),  # type: ignore[arg-type]
        get_path_with_query_string(scope),  # type: ignore[arg-type]
        outcome,
    )


def denial_response(status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
    """The `websocket.http.response` the app sent, with uvicorn's default headers."""
    response_headers = Headers(headers)
    response_headers.setdefault("Date", email.utils.formatdate(usegmt=True))
    response_headers.setdefault("Connection", "close")
    response_headers.setdefault("Content-Length", str(len(body)))
    response_headers.setdefault("Content-Type", "text/plain; charset=utf-8")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return Response(status, phrase, response_headers, body)
