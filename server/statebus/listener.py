"""Notifications in, frames out to the hub: the only place a NOTIFY becomes a fan-out.

A notification on channel `statebus` names (user_id, version) pairs. Pairs of users
nobody here watches, or versions this process already has, cost a dict lookup. The
rest are read back in batches with statebus.envelopes(): one query for every user
that became due while the previous query ran, so a burst of commits costs a few reads,
and each envelope is encoded once for all of its user's sockets. The LISTEN
connection itself (probe, reconnect, re-LISTEN) is the supervisor's; after each
reconnect every watched user is re-read, so nothing committed during a gap is lost.
It never decides that a state changed (the triggers do) and never touches sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterable

import asyncpg
import msgspec

from statebus import backoff, metrics
from statebus.hub import Hub
from statebus.messages import notification_decoder
from statebus.replicas import RESYNC, ReplicaReader
from statebus.states import frame_of, read_envelopes
from statebus.supervisor import ListenSupervisor

log = logging.getLogger("statebus.listener")

CHANNEL = "statebus"
BATCH = 1000  # users per read: bounds one query's time while a re-sync of thousands runs
# Reads in flight at once: while one waits for Postgres the other can start, so a burst
# queues behind half as much. Order is safe: the hub keeps only newer versions.
READERS = 2


class Listener:
    def __init__(
        self,
        dsn: str,
        hub: Hub,
        *,
        probe_interval: float = 1.0,
        probe_timeout: float = 2.0,
        max_backoff: float = 5.0,
        read_dsn: str | None = None,
    ) -> None:
        self._dsn = dsn
        self._hub = hub
        # Users to read, in the order they became due, with the version the read must
        # reach (RESYNC: unknown, read the primary).
        self._due: dict[str, int] = {}
        self._replica = None if read_dsn is None else ReplicaReader(read_dsn)
        self._wake = asyncio.Event()
        self.supervisor = ListenSupervisor(
            dsn,
            {CHANNEL: self._on_notify},
            on_connect=self._resync,
            name="listener",
            probe_interval=probe_interval,
            probe_timeout=probe_timeout,
            max_backoff=max_backoff,
        )

    @property
    def live(self) -> bool:
        return self.supervisor.live

    @property
    def backend_pid(self) -> int | None:
        return self.supervisor.backend_pid

    async def run(self) -> None:
        readers = [
            asyncio.create_task(self._read_forever(), name=f"statebus-envelope-reader-{n}")
            for n in range(READERS)
        ]
        try:
            await self._receive()
        finally:
            for reader in readers:
                reader.cancel()
            for reader in readers:
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            if self._replica is not None:
                self._replica.close()

    async def _receive(self) -> None:
        """Feeds `_queue()` forever: here from LISTEN; an edge's from NATS (edge.py)."""
        await self.supervisor.run()

    def readiness_problem(self) -> str | None:
        """Why this process should not be sent traffic (None: no reason), for /readyz."""
        return None if self.live else "listen connection down"

    async def _resync(self, _conn: asyncpg.Connection) -> None:
        # LISTEN is active: anything committed from here on is notified. Re-read the
        # rest, the current version of every user somebody is watching.
        self._queue(self._hub.user_ids())

    def _on_notify(self, payload: str) -> None:
        metrics.notifications.inc()
        try:
            pairs = notification_decoder.decode(payload)
        except msgspec.DecodeError:
            log.error("undecodable statebus notification ignored")
            return
        self._notified(pairs)

    def _notified(self, pairs: Iterable[tuple[str, int]]) -> None:
        """Queues the watched users of (user_id, version) pairs whose version is new here."""
        hub, due = self._hub, self._due
        for user_id, version in pairs:
            if hub.watched(user_id) and version > hub.latest_version(user_id):
                # At least this version must be read (a replica may lag; replicas.py).
                if due.get(user_id, 0) != RESYNC:
                    due[user_id] = max(version, due.get(user_id, 0))
        if due:
            self._wake.set()

    def _queue(self, user_ids: Iterable[str]) -> None:
        """Queues users to re-read from the primary: what was missed is not known."""
        due = self._due
        for user_id in user_ids:
            due[user_id] = RESYNC
        if due:
            self._wake.set()

    def _requeue(self, wanted: dict[str, int]) -> None:
        for user_id, version in wanted.items():
            if version == RESYNC:
                self._queue([user_id])
            else:
                self._notified([(user_id, version)])

    async def _read_forever(self) -> None:
        """Reads due users' envelopes on a connection of its own, kept while it works.

        Not a pool's: a pool's release resets the connection (one more round trip
        between a commit and its sockets), and a connection held from a pool across a
        PostgreSQL restart can keep the pool from closing. This one is terminated, at
        once, on any failure and at shutdown.
        """
        failures = 0
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                failures = 0
                await self._read_with(conn)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                failures += 1
                log.warning("could not read envelopes (%s); retrying", type(exc).__name__)
                await asyncio.sleep(backoff.delay(failures, base=0.1, cap=2.0))
            finally:
                if conn is not None:
                    conn.terminate()

    async def _read_with(self, conn: asyncpg.Connection) -> None:
        while True:
            await self._wake.wait()
            while self._due:
                batch = list(itertools.islice(self._due, BATCH))
                wanted = {user_id: self._due.pop(user_id) for user_id in batch}
                wanted = {u: v for u, v in wanted.items() if self._hub.watched(u)}
                if not wanted:
                    continue
                try:
                    if self._replica is None:
                        envelopes = await read_envelopes(conn, list(wanted))
                    else:
                        envelopes = await self._replica.read(conn, wanted)
                except BaseException:
                    self._requeue(wanted)  # read again on the next connection
                    raise
                for env in envelopes:
                    if env.version > self._hub.latest_version(env.user_id):
                        self._hub.publish(frame_of(env))
            self._wake.clear()  # nothing due: every reader sleeps until the next queue
