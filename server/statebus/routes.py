"""HTTP routes (contract section 5): health, readiness, metrics, state, static files."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from statebus import inputs, metrics, sqlfiles
from statebus.auth import AuthError, Principal, bearer_token
from statebus.messages import ErrorBody, encoder
from statebus.runtime import runtime
from statebus.states import read_state

STATIC = Path(__file__).parent / "static"

# The demo page loads only its own module script and stylesheet and talks only to its own
# origin (fetch and the socket; 'self' covers ws/wss to the same host). The favicon is a
# data: URL. Nothing may frame it: the page holds a bearer token.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


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


async def authenticate(request: Request) -> Principal:
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise HTTPError(401, "unauthorized", "send Authorization: Bearer <token>")
    try:
        return await runtime(request).verifier.verify(token)
    except AuthError as exc:
        raise HTTPError(401, exc.code, exc.message) from exc


async def healthz(_request: Request) -> Response:
    return json_response({"ok": True})


async def readyz(request: Request) -> Response:
    rt = runtime(request)
    problems = []
    if not rt.listener.live:
        problems.append("listen connection down")
    try:
        await rt.pool.fetchval(sqlfiles.queries()["ping"], timeout=2)
    except Exception:
        problems.append("database unreachable")
    if rt.shutting_down:
        problems.append("shutting down")
    if problems:
        return error_response(503, "not_ready", "; ".join(problems))
    return json_response({"ok": True})


async def metrics_endpoint(_request: Request) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def get_state(request: Request) -> Response:
    rt = runtime(request)
    principal = await authenticate(request)
    user_id = request.query_params.get("user_id") or principal.user_id
    try:
        inputs.user_id(user_id)
    except inputs.InvalidInput as exc:
        raise HTTPError(400, "bad_request", str(exc)) from None
    if not rt.verifier.may_read(principal, user_id):
        raise HTTPError(403, "forbidden", "this token may not read that user")
    env = await read_state(rt.pool, user_id)
    etag = f'"{env.version}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return json_response(env, headers=headers)


async def index(_request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


async def static_file(request: Request) -> Response:
    """statebus.js and the demo's own files; names never change, so always revalidate."""
    name = request.url.path.lstrip("/")
    media = "text/javascript" if name.endswith(".js") else "text/css"
    return FileResponse(STATIC / name, media_type=media, headers=PAGE_HEADERS)
