"""The handshake stage of the socket protocol on its own: the ASGI scope made from a
request, the 101 with the app's headers, a denial response, and the two protocols
(one that parses the handshake, one made OPEN that only frames)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest
from uvicorn.config import Config
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request, Response
from websockets.protocol import State

from statebus.wshandshake import (
    EXTENSIONS,
    accepted,
    denial_response,
    frames_protocol,
    handshake_protocol,
    scope_of,
)

LOG = logging.getLogger("test.wshandshake")


class Transport:
    """What the scope reads of a transport: addresses, and TLS or not."""

    def __init__(self, *, tls: bool = False) -> None:
        self.extra = {
            "sockname": ("127.0.0.1", 8000),
            "peername": ("127.0.0.1", 50000),
            "sslcontext": object() if tls else None,
        }

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)


def config(**kwargs: Any) -> Config:
    return Config(app=lambda *_: None, interface="asgi3", **kwargs)


def request(path: str, **headers: str) -> Request:
    raw = Headers({"Host": "example.test", **{k.replace("_", "-"): v for k, v in headers.items()}})
    return Request(path, raw)


def test_the_scope_is_uvicorns_with_a_shared_read_only_extensions_mapping() -> None:
    req = request("/v1/ws%20x?since=3", Sec_WebSocket_Protocol="a, b", Origin="https://é.test")
    transport = cast(asyncio.Transport, Transport(tls=True))
    scope = scope_of(req, transport, config(root_path="/app"), {"k": 1})
    assert scope["type"] == "websocket" and scope["scheme"] == "wss"
    assert scope["path"] == "/app/v1/ws x" and scope["raw_path"] == b"/app/v1/ws%20x"
    assert scope["query_string"] == b"since=3"
    assert scope["subprotocols"] == ["a", "b"]
    assert (b"origin", "https://é.test".encode("latin-1")) in [
        (k.lower(), v) for k, v in scope["headers"]
    ]
    assert scope["server"] == ("127.0.0.1", 8000) and scope["client"] == ("127.0.0.1", 50000)
    assert scope["extensions"] is EXTENSIONS
    with pytest.raises(TypeError):
        scope["extensions"]["mine"] = {}  # type: ignore[index]
    other = scope_of(req, cast(asyncio.Transport, Transport()), config(), {"k": 1})
    assert other["scheme"] == "ws" and other["extensions"] is scope["extensions"]
    assert other["state"] == {"k": 1} and other["state"] is not scope["state"]


def test_the_101_carries_the_servers_and_the_apps_headers() -> None:
    response = Response(101, "Switching Protocols", Headers({"Date": "old", "Upgrade": "x"}))
    message = {
        "type": "websocket.accept",
        "headers": [(b"X-App", b"yes")],
        "subprotocol": "statebus.v1",
    }
    out = accepted(response, [(b"Date", b"today"), (b"Server", b"uvicorn")], message)
    assert out.headers["date"] == "today" and out.headers["server"] == "uvicorn"
    assert out.headers["x-app"] == "yes"
    assert out.headers["Sec-WebSocket-Protocol"] == "statebus.v1"
    assert out.headers.get_all("Date") == ["today"]


def test_a_denial_gets_uvicorns_default_headers_unless_the_app_set_them() -> None:
    out = denial_response(403, [("content-type", "application/json")], b'{"no":1}')
    assert (out.status_code, out.reason_phrase, out.body) == (403, "Forbidden", b'{"no":1}')
    assert out.headers["Content-Type"] == "application/json"
    assert out.headers["Content-Length"] == "8" and out.headers["Connection"] == "close"
    assert "Date" in out.headers
    assert denial_response(599, [], b"").reason_phrase == ""


@pytest.mark.parametrize("deflate", [False, True])
def test_the_framing_protocol_is_made_open_with_the_negotiated_extensions(deflate: bool) -> None:
    cfg = config(ws_per_message_deflate=deflate, ws_max_size=1234)
    handshake = handshake_protocol(cfg, LOG)
    factories = handshake.available_extensions or []
    assert any(isinstance(f, ServerPerMessageDeflateFactory) for f in factories) is deflate
    assert handshake.state is State.CONNECTING and handshake.max_message_size == 1234
    frames = frames_protocol(cfg, LOG, handshake)
    assert frames.state is State.OPEN and frames.max_message_size == 1234
    assert frames.extensions is handshake.extensions
