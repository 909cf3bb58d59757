"""HTTP routes (docs/protocol.md): health, readiness, metrics, state, static files."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from statebus import inputs, metrics, sqlfiles
from statebus.http import HTTPError, authenticate, error_response, json_response
from statebus.runtime import runtime
from statebus.states import read_state

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {"js": "text/javascript", "css": "text/css", "ts": "application/typescript"}

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


async def healthz(_request: Request) -> Response:
    return json_response({"ok": True})


async def readyz(request: Request) -> Response:
    """200 only while notifications turn into frames (delivery.py says what it checks);
    503 with every reason otherwise, and for the whole drain at shutdown."""
    rt = runtime(request)
    health = rt.health
    if not rt.shutting_down:
        try:
            await rt.pool.fetchval(sqlfiles.queries()["ping"], timeout=2)
        except Exception:
            health.set_problem("database", "database unreachable")
        else:
            health.clear_problem("database")
    problems = health.check()
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
    """statebus.js, its TypeScript declarations and the demo's own files; names never
    change, so always revalidate."""
    name = request.url.path.lstrip("/")
    media = MEDIA_TYPES[name.rsplit(".", 1)[-1]]
    return FileResponse(STATIC / name, media_type=media, headers=PAGE_HEADERS)
