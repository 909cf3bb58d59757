"""The fake's HTTP plumbing: a threaded loopback server handing each request to a callback.

Responses close the connection (HTTP/1.0), so no client keeps sockets open to a stopped fake.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

Serve = Callable[[BaseHTTPRequestHandler], None]


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, serve: Serve) -> None:
        self.serve = serve
        super().__init__(("127.0.0.1", port), _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout) is not the fake's problem


class _RequestHandler(BaseHTTPRequestHandler):
    def _serve(self) -> None:
        cast(LoopbackServer, self.server).serve(self)

    do_GET = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


def reply(
    handler: BaseHTTPRequestHandler,
    status: int,
    data: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    for name, value in {
        "Content-Type": content_type,
        "Content-Length": str(len(data)),
        **(headers or {}),
    }.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


def drop(handler: BaseHTTPRequestHandler) -> None:
    """Close the connection unanswered (the client sees a network error)."""
    handler.close_connection = True
    with contextlib.suppress(OSError):
        handler.connection.shutdown(socket.SHUT_RDWR)
