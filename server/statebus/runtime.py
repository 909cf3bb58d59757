"""What the app holds for its lifetime: settings, pool, hub, listener, token verifier."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
from starlette.requests import HTTPConnection

from statebus.auth import TokenVerifier
from statebus.config import Settings
from statebus.hub import Hub
from statebus.listener import Listener


@dataclass
class Runtime:
    settings: Settings
    dsn: str
    pool: asyncpg.Pool
    hub: Hub
    listener: Listener
    verifier: TokenVerifier
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. the Stripe client
    shutting_down: bool = False


def runtime(conn: HTTPConnection) -> Runtime:
    rt = conn.app.state.runtime
    assert isinstance(rt, Runtime)
    return rt
