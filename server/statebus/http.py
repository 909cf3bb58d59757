"""The small HTTP layer every route module shares: JSON answers, errors, bodies, tokens.

Core routes (core_routes.py) and the Stripe routes (statebus.stripe) both build on this and
on nothing of each other, so either side can change its routes alone.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from statebus.auth import AuthError, Principal, bearer_token
from statebus.core_messages import ErrorBody, encoder
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


# Starlette's own refusals (unknown path, wrong method) in the same JSON shape as ours.
_STARLETTE_ERRORS = {404: "not_found", 405: "method_not_allowed"}


async def starlette_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error = _STARLETTE_ERRORS.get(exc.status_code, "http_error")
    response = error_response(exc.status_code, error, str(exc.detail))
    response.headers.update(exc.headers or {})  # e.g. Allow on a 405
    return response


async def read_body(request: Request, limit: int, what: str = "request bodies") -> bytes:
    """The raw body, refused with 413 past `limit` (by Content-Length and while reading);
    `what` names the route's bodies in the message."""
    too_large = HTTPError(413, "payload_too_large", f"{what} are limited to {limit} bytes")
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
