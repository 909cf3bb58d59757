"""The small HTTP layer every route module shares: JSON answers, errors, bodies, tokens.

Core routes (routes.py) and the Stripe routes (statebus.stripe) both build on this and
on nothing of each other, so either side can change its routes alone.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from statebus.auth import AuthError, Principal, bearer_token
from statebus.messages import ErrorBody, encoder
from statebus.runtime import runtime


class HTTPError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(encoder.encode(body), status, headers, media_type="application/json")


def error_response(status: int, error: str, message: str) -> Response:
    return json_response(ErrorBody(error, message), status)


async def http_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return error_response(exc.status, exc.error, exc.message)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 past `limit` (by Content-Length and while reading)."""
    too_large = HTTPError(413, "payload_too_large", f"request bodies are limited to {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def authenticate(request: Request) -> Principal:
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise HTTPError(401, "unauthorized", "send Authorization: Bearer <token>")
    try:
        return await runtime(request).verifier.verify(token)
    except AuthError as exc:
        raise HTTPError(401, exc.code, exc.message) from exc
