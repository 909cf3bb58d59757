"""HTTP routes (contract section 5): health, readiness, metrics, state, static files."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from statebus import metrics, sqlfiles
from statebus.auth import AuthError, Principal, bearer_token
from statebus.messages import ErrorBody, encoder
from statebus.runtime import runtime
from statebus.states import read_state

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {"js": "text/javascript", "css": "text/css", "ts": "application/typescript"}


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
    if not rt.verifier.may_read(principal, user_id):
        raise HTTPError(403, "forbidden", "this token may not read that user")
    env = await read_state(rt.pool, user_id)
    etag = f'"{env.version}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return json_response(env, headers=headers)


async def index(_request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def static_file(request: Request) -> Response:
    """statebus.js, its TypeScript declarations and the demo's own files; names never
    change, so always revalidate."""
    name = request.url.path.lstrip("/")
    media = MEDIA_TYPES[name.rsplit(".", 1)[-1]]
    return FileResponse(STATIC / name, media_type=media, headers={"Cache-Control": "no-cache"})
