"""The Starlette application and its lifespan (pool, hub, listener, verifier)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route, WebSocketRoute

from statebus import config, public, routes
from statebus.auth import AuthSettings, TokenVerifier
from statebus.config import Settings
from statebus.http import HTTPError, http_error_handler, starlette_error_handler
from statebus.hub import Hub
from statebus.listener import Listener
from statebus.maintenance import prune_forever
from statebus.runtime import Runtime
from statebus.ws import websocket_endpoint

log = logging.getLogger("statebus")


def create_app(settings: Settings | None = None, dsn: str | None = None) -> Starlette:
    """The statebus app. Settings default to the environment; the DSN to theirs.

    To mount statebus inside another Starlette app, the database must be an external
    one (`STATEBUS_DATABASE_URL` or `dsn=`): the embedded server is `statebus serve`'s.
    """
    settings = config.load() if settings is None else settings
    dsn = dsn or settings.database_url
    if not dsn:
        raise config.ConfigError("create_app needs a DSN: pass dsn= or set STATEBUS_DATABASE_URL")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.generated_secret:
            log.warning(
                "using the development JWT secret generated in %s: anyone who can read it "
                "can sign tokens; set STATEBUS_JWT_SECRET (or STATEBUS_JWKS_URL) for real use",
                settings.home / "jwt_secret",
            )
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
        hub = Hub()
        verifier = TokenVerifier(
            AuthSettings(
                secret=settings.jwt_secret,
                jwks_url=settings.jwks_url,
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                admin_claim=settings.admin_claim,
            )
        )
        listener = Listener(dsn, hub)
        rt = Runtime(settings, dsn, pool, hub, listener, verifier)
        app.state.runtime = rt
        from statebus.stripe import service as stripe_service

        await stripe_service.start(rt)
        background = [
            asyncio.create_task(listener.run(), name="statebus-listener"),
            asyncio.create_task(prune_forever(pool), name="statebus-prune-history"),
        ]
        try:
            yield
        finally:
            rt.shutting_down = True
            hub.close_all(1012)  # sockets close with 1012: clients reconnect with since
            await stripe_service.stop(rt)
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await verifier.aclose()
            await pool.close()

    return Starlette(
        routes=[
            Route("/healthz", routes.healthz),
            Route("/readyz", routes.readyz),
            Route("/metrics", routes.metrics_endpoint),
            Route("/v1/state", routes.get_state),
            WebSocketRoute("/v1/ws", websocket_endpoint),
            Route("/", routes.index),
            Route("/statebus.js", routes.static_file),
            Route("/demo.js", routes.static_file),
            Route("/demo-words.js", routes.static_file),
            Route("/demo.css", routes.static_file),
            Route("/statebus.d.ts", routes.static_file),
            Route("/v1/config", public.config),
            *stripe_routes(),
        ],
        exception_handlers={
            HTTPError: http_error_handler,
            StarletteHTTPException: starlette_error_handler,
        },
        lifespan=lifespan,
    )


def stripe_routes() -> list[Route]:
    from statebus.stripe.routes import ROUTES

    return ROUTES
