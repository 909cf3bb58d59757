"""The Starlette application and its lifespan (pool, hub, listener, verifier)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from statebus import buildinfo, config, core_routes, metrics, public, restore, sessions
from statebus.auth import AuthSettings, TokenVerifier
from statebus.config import Settings
from statebus.delivery import DeliveryHealth
from statebus.http import HTTPError, http_error_handler, starlette_error_handler
from statebus.hub import Hub
from statebus.listener import Listener
from statebus.maintenance import prune_forever
from statebus.monitor import Monitor
from statebus.runtime import Runtime
from statebus.ws import PATH as SOCKET_PATH
from statebus.ws import websocket_endpoint
from statebus.wsconn import route_path

log = logging.getLogger("statebus")


class App(Starlette):
    """Starlette, with `/v1/ws` sockets dispatched before its middleware and router.

    A socket's ASGI call stays suspended as long as the socket is open. Through
    Starlette's stack that is a dozen coroutine frames, closures and two `WebSocket`
    objects per socket (~5 KiB); dispatched here it is this frame and the endpoint's.
    Nothing changes for the socket: Starlette's error middleware passes sockets through
    and none of the app's exception handlers apply to them, so an error in the
    endpoint reaches uvicorn either way (logged; a 500 before the handshake).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and route_path(scope) == SOCKET_PATH:
            return await websocket_endpoint(self.state.runtime, scope, receive, send)
        return await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, dsn: str | None = None) -> App:
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
        metrics.build_info.labels(buildinfo.version(), buildinfo.commit()).set(1)
        pool = await sessions.create_pool(
            dsn, min_size=1, max_size=10, lock_timeout_ms=config.lock_timeout_ms(settings)
        )
        await restore.check(pool)  # before serving anything: versions past any a client holds
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
        health = DeliveryHealth(settings.ready_threshold)
        listener = (
            Listener(dsn, hub, health=health, read_dsn=settings.read_database_url)
            if settings.nats_url is None
            else edge_listener(dsn, hub, settings, health)
        )
        rt = Runtime(settings, dsn, pool, hub, listener, verifier)
        app.state.runtime = rt
        from statebus.stripe import service as stripe_service

        rt.stripe = await stripe_service.start(settings, dsn, pool)
        background = [
            asyncio.create_task(listener.run(), name="statebus-listener"),
            asyncio.create_task(prune_forever(pool), name="statebus-prune-history"),
            asyncio.create_task(listener.health.watchdog(), name="statebus-delivery-watchdog"),
            asyncio.create_task(
                Monitor(pool, listener.health, alert=settings.notify_queue_alert).run(),
                name="statebus-monitor",
            ),
        ]
        try:
            yield
        finally:
            rt.begin_drain()  # sockets close with 1012: clients reconnect with since
            service, rt.stripe = rt.stripe, None
            await stripe_service.stop(service)
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await verifier.aclose()
            await pool.close()

    return App(
        routes=[
            Route("/healthz", core_routes.healthz),
            Route("/readyz", core_routes.readyz),
            Route("/metrics", core_routes.metrics_endpoint),
            Route("/v1/state", core_routes.get_state),
            Route("/", core_routes.index),
            Route("/statebus.js", core_routes.static_file),
            Route("/demo.js", core_routes.static_file),
            Route("/demo-words.js", core_routes.static_file),
            Route("/demo.css", core_routes.static_file),
            Route("/statebus.d.ts", core_routes.static_file),
            Route("/v1/config", public.config),
            *stripe_routes(),
        ],
        exception_handlers={
            HTTPError: http_error_handler,
            StarletteHTTPException: starlette_error_handler,
        },
        lifespan=lifespan,
    )


def edge_listener(dsn: str, hub: Hub, settings: Settings, health: DeliveryHealth) -> Listener:
    """With STATEBUS_NATS_URL this process is an edge of the relay tier: no LISTEN."""
    from statebus.edge import EdgeListener

    return EdgeListener(dsn, hub, settings, health=health)


def stripe_routes() -> list[Route]:
    from statebus.stripe.stripe_routes import ROUTES

    return ROUTES
