"""The one LISTEN connection: notifications in, envelopes out to the hub.

Its own connection, never from the pool (a pool release runs UNLISTEN *). It proves
itself alive with a NOTIFY to itself every `probe_interval` seconds; a probe that does
not come back within `probe_timeout`, or a closed connection, means reconnect (with
backoff). After reconnecting it LISTENs *before* re-reading the subscribed users'
latest versions, so a write committed during the gap is either notified or read.
It never decides that a state changed (the triggers do) and never touches sockets.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from typing import Any

import asyncpg

from statebus import metrics, sqlfiles
from statebus.hub import Hub
from statebus.messages import Envelope, notification_decoder
from statebus.states import envelope_from_row

log = logging.getLogger("statebus.listener")

CHANNEL = "statebus"


class Listener:
    def __init__(
        self,
        dsn: str,
        hub: Hub,
        pool: asyncpg.Pool,
        *,
        probe_interval: float = 1.0,
        probe_timeout: float = 2.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._hub = hub
        self._pool = pool
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._max_backoff = max_backoff
        self._probe_channel = f"statebus_probe_{secrets.token_hex(6)}"
        self._probe_seen = asyncio.Event()
        self._lost = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.live = False
        self.backend_pid: int | None = None

    async def run(self) -> None:
        """Forever: connect, listen, re-sync, probe; on any failure, back off and repeat."""
        failures = 0
        while True:
            try:
                await self._connect()
                failures = 0
                await self._watch()
            except Exception as exc:  # anything at all: a listener must never die silently
                log.warning("LISTEN connection lost: %s: %s", type(exc).__name__, exc)
            finally:
                await self._drop()
            failures += 1
            metrics.listener_reconnects.inc()
            delay = min(self._max_backoff, 0.1 * 2 ** min(failures, 6))
            await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=5)
        self._conn = conn
        self._lost.clear()
        conn.add_termination_listener(self._on_terminated)
        await conn.add_listener(CHANNEL, self._on_notify)
        await conn.add_listener(self._probe_channel, self._on_probe)
        self.backend_pid = conn.get_server_pid()
        # LISTEN is active now; anything committed from here on is notified. Read the
        # rest: the latest version of every user somebody is watching.
        users = self._hub.user_ids()
        if users:
            rows = await conn.fetch(sqlfiles.queries()["states_of"], users, timeout=10)
            for row in rows:
                self._hub.publish(envelope_from_row(row))
        self.live = True
        log.info("LISTEN connection up (re-synced %d users)", len(users))

    async def _watch(self) -> None:
        assert self._conn is not None
        while True:
            self._probe_seen.clear()
            await self._conn.execute(
                sqlfiles.queries()["listener_probe"],
                self._probe_channel,
                timeout=self._probe_timeout,
            )
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

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        metrics.notifications.inc()
        try:
            note = notification_decoder.decode(str(payload))
        except Exception:
            log.error("undecodable statebus notification ignored")
            return
        if self._hub.subscriber_count(note.user_id) == 0:
            return
        if note.ref:
            task = asyncio.get_running_loop().create_task(
                self._read_back(note.user_id, note.version)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._hub.publish(Envelope(note.user_id, note.version, note.state))

    async def _read_back(self, user_id: str, version: int) -> None:
        """A state too big for NOTIFY: read that version (or a newer one) from the database."""
        try:
            row = await self._pool.fetchrow(sqlfiles.queries()["version_of"], user_id, version)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.warning("could not read back version %d; the next re-sync will", version)
            self._lost.set()  # re-sync through a reconnect rather than lose it
            return
        if row is not None:
            self._hub.publish(envelope_from_row(row))
