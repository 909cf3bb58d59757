"""A real uvicorn running the real app on a free port, in a thread with its own loop.

Used by statebus's tests, its benchmarks and scripts, and available to apps that test
against statebus. Starlette's TestClient would run the app on another event loop anyway
(so an asyncpg pool made in a test could not be used in it); a real server also gives
real sockets, real close codes and a real restart. Never used by `statebus serve`.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn

from statebus.auth import issue_token
from statebus.config import Settings
from statebus.serve import uvicorn_config

# The HS256 secret of settings_for_tests(); RunningServer.token() signs with it.
SECRET = "test-secret-" + "x" * 40


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_for_tests(home: Path, **changes: object) -> Settings:
    """Development settings with a known secret, no Stripe, `changes` applied on top."""
    base = Settings(
        database_url=None,
        home=home,
        production=False,
        jwt_secret=SECRET,
        jwks_url=None,
        jwt_audience=None,
        jwt_issuer=None,
        allowed_origins=(),
        stripe_api_key=None,
        stripe_webhook_secrets=(),
        stripe_api_base=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


class RunningServer:
    """Starts, stops and restarts one statebus server on a fixed port."""

    def __init__(self, settings: Settings, dsn: str, *, log_level: str = "warning") -> None:
        self.settings = settings
        self.dsn = dsn
        self.log_level = log_level
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def app(self) -> Any:
        assert self._server is not None
        return self._server.config.app

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def token(self, user_id: str, *, ttl: int = 3600, admin: bool = False) -> str:
        assert self.settings.jwt_secret is not None
        return issue_token(self.settings.jwt_secret, user_id, ttl=ttl, admin=admin)

    def start(self, timeout: float = 15.0) -> RunningServer:
        config = uvicorn_config(
            self.settings, self.dsn, "127.0.0.1", self.port, log_level=self.log_level
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"uvicorn-{self.port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("statebus server did not start")
            time.sleep(0.02)
        self._server, self._thread = server, thread
        return self

    def stop(self, timeout: float = 15.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("statebus server did not stop")
        self._server = self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()
