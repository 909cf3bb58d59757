"""The Starlette application and its lifespan (pool, hub, listener, verifier)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute

from server import routes
from server.auth import AuthSettings, TokenVerifier
from server.config import Settings
from server.hub import Hub
from server.listener import Listener
from server.maintenance import prune_forever
from server.runtime import Runtime
from server.ws import websocket_endpoint


def create_app(settings: Settings, dsn: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
        hub = Hub()
        verifier = TokenVerifier(
            AuthSettings(
                secret=settings.jwt_secret,
                jwks_url=settings.jwks_url,
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
            )
        )
        listener = Listener(dsn, hub, pool)
        rt = Runtime(settings, dsn, pool, hub, listener, verifier)
        app.state.runtime = rt
        from server.stripe import setup as stripe_setup

        await stripe_setup.start(rt)
        background = [
            asyncio.create_task(listener.run(), name="statebus-listener"),
            asyncio.create_task(prune_forever(pool), name="statebus-prune-history"),
        ]
        try:
            yield
        finally:
            rt.shutting_down = True
            hub.close_all(1012)  # sockets close with 1012: clients reconnect with since
            await stripe_setup.stop(rt)
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
            Route("/demo.css", routes.static_file),
            *stripe_routes(),
        ],
        exception_handlers={routes.HTTPError: routes.http_error_handler},
        lifespan=lifespan,
    )


def stripe_routes() -> list[Route]:
    from server.stripe.routes import ROUTES

    return ROUTES
