"""What the app holds for its lifetime: settings, pool, hub, listener, token verifier, Stripe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
from starlette.requests import HTTPConnection

from statebus.auth import TokenVerifier
from statebus.config import Settings
from statebus.delivery import DeliveryHealth
from statebus.hub import Hub
from statebus.listener import Listener

if TYPE_CHECKING:  # the Stripe package imports this module; only its type comes back
    from statebus.stripe.service import StripeService


@dataclass
class Runtime:
    settings: Settings
    dsn: str
    pool: asyncpg.Pool
    hub: Hub
    listener: Listener
    verifier: TokenVerifier
    stripe: StripeService | None = None  # set when STRIPE_API_KEY is configured
    shutting_down: bool = False

    @property
    def health(self) -> DeliveryHealth:
        return self.listener.health

    def begin_drain(self) -> None:
        """Shutdown starts: not ready from now on, sockets told 1012 (reconnect elsewhere,
        with since). HTTP is still served while the drain lasts (draining.py)."""
        self.shutting_down = True
        self.health.set_problem("shutting_down", "shutting down")
        self.hub.close_all(1012)


def runtime(conn: HTTPConnection) -> Runtime:
    rt = conn.app.state.runtime
    assert isinstance(rt, Runtime)
    return rt
