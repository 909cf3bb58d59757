"""One LISTEN connection kept alive: the listener, the Stripe worker and `tail` use it.

A dedicated connection, never from a pool (a pool's release runs UNLISTEN *). It
proves itself alive with a NOTIFY to itself every `probe_interval` seconds: a probe
that does not come back within `probe_timeout`, or a closed connection, means
reconnect with backoff. After reconnecting it LISTENs *before* calling `on_connect`,
so whatever the caller re-reads there cannot miss a commit made during the gap: the
commit is either notified or visible to the re-read. It never dies silently.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from statebus import backoff, metrics, sessions, sqlfiles

log = logging.getLogger("statebus.listen")

Handler = Callable[[str], None]  # called with each payload, on the event loop
OnConnect = Callable[[asyncpg.Connection], Awaitable[None]]


class ListenSupervisor:
    def __init__(
        self,
        dsn: str,
        channels: dict[str, Handler],
        *,
        on_connect: OnConnect | None = None,
        name: str = "listener",
        probe_interval: float = 1.0,
        probe_timeout: float = 2.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._channels = channels
        self._on_connect = on_connect
        self._name = name
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._max_backoff = max_backoff
        self._probe_channel = f"statebus_probe_{secrets.token_hex(6)}"
        self._probe_seen = asyncio.Event()
        self._lost = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self.live = False
        self.backend_pid: int | None = None

    async def run(self) -> None:
        """Forever: connect, LISTEN, on_connect, probe; on any failure back off and repeat."""
        failures = 0
        while True:
            try:
                await self._connect()
                failures = 0
                await self._watch()
            except Exception as exc:  # anything at all: a listener must never die silently
                log.warning(
                    "%s: LISTEN connection lost: %s: %s", self._name, type(exc).__name__, exc
                )
            finally:
                await self._drop()
            failures += 1
            metrics.listener_reconnects.inc()
            await asyncio.sleep(backoff.delay(failures, base=0.1, cap=self._max_backoff))

    def lost(self) -> None:
        """Ask for a reconnect (and so a re-sync), e.g. after a failed read."""
        self._lost.set()

    async def _connect(self) -> None:
        conn = await sessions.connect(self._dsn, name=f"statebus {self._name}", timeout=5)
        self._conn = conn
        self._lost.clear()
        conn.add_termination_listener(self._on_terminated)
        for channel, handler in self._channels.items():
            await conn.add_listener(channel, _adapt(handler))
        await conn.add_listener(self._probe_channel, self._on_probe)
        self.backend_pid = conn.get_server_pid()
        if self._on_connect is not None:
            await self._on_connect(conn)
        self.live = True
        log.info("%s: LISTEN connection up", self._name)

    async def _watch(self) -> None:
        assert self._conn is not None
        probe_sql = sqlfiles.queries()["listener_probe"]
        while True:
            self._probe_seen.clear()
            await self._conn.execute(probe_sql, self._probe_channel, timeout=self._probe_timeout)
            probe = asyncio.ensure_future(self._probe_seen.wait())
            lost = asyncio.ensure_future(self._lost.wait())
            done, pending = await asyncio.wait(
                {probe, lost}, timeout=self._probe_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            if probe not in done:
                raise TimeoutError("probe did not come back")
            try:
                await asyncio.wait_for(self._lost.wait(), self._probe_interval)
                raise ConnectionError("connection closed")
            except TimeoutError:
                continue

    async def _drop(self) -> None:
        self.live = False
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    def _on_terminated(self, _conn: Any) -> None:
        self.live = False
        self._lost.set()

    def _on_probe(self, *_args: Any) -> None:
        self._probe_seen.set()


def _adapt(handler: Handler) -> Callable[[Any, int, str, object], None]:
    def on_notify(_conn: Any, _pid: int, _channel: str, payload: object) -> None:
        handler(str(payload))

    return on_notify
