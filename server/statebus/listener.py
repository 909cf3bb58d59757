"""Notifications in, frames out to the hub: the only place a NOTIFY becomes a fan-out.

A notification on channel `statebus` names (user_id, version) pairs. Pairs of users
nobody here watches, or versions this process already has, cost a dict lookup. The
rest are read back in batches with statebus.envelopes(): one query for every user
that became due while the previous query ran, so a burst of commits costs a few reads,
and each envelope is encoded once for all of its user's sockets. The LISTEN
connection itself (probe, reconnect, re-LISTEN) is the supervisor's; after each
reconnect every watched user is re-read, so nothing committed during a gap is lost.
It never decides that a state changed (the triggers do) and never touches sockets.

It feeds the process's delivery health (delivery.py): how long the oldest notification
has waited to become frames, whether the LISTEN connection is live, and notifications it
could not decode (never dropped silently: counted, logged, not ready, every watched
user re-read). After the event loop stalled it re-reads every watched user.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Iterable
from datetime import datetime

import asyncpg

from statebus import backoff, metrics, migrations, restore, sessions
from statebus.core_messages import Envelope, NotificationFormatError, decode_notification
from statebus.delivery import DeliveryHealth
from statebus.envelopes import frame_of, read_envelopes
from statebus.hub import Hub
from statebus.replicas import RESYNC, ReplicaReader
from statebus.supervisor import ListenSupervisor

log = logging.getLogger("statebus.listener")

CHANNEL = "statebus"
BATCH = 1000  # users per read: bounds one query's time while a re-sync of thousands runs
# Reads in flight at once: while one waits for Postgres the other can start, so a burst
# queues behind half as much. Order is safe: the hub keeps only newer versions.
READERS = 2
# A payload this release cannot read is a newer release's only if that release has
# migrated the database (migrations.newer_release_migrated); otherwise it is a stray
# NOTIFY, which any role that may connect can send on any channel. Only the first costs
# readiness and a re-read: were every stray one to, a role could hold the whole fleet out
# of readiness, and re-reading, by notifying once a minute.
# How long a process stays not ready after a newer release's notification: long enough
# for an operator to see it. Each one re-reads the watched users, so nothing is lost.
UNDECODABLE_HOLD = 60.0
# A check found no newer release: payloads in the next few seconds are judged the same.
STRAY_VERDICT_SECONDS = 5.0
# Stray payloads are counted always, logged at most once per this many seconds.
STRAY_LOG_EVERY = 60.0
# A burst of undecodable notifications costs one re-read per this many seconds, not one
# each: a re-read queued after a notification arrived covers it.
UNDECODABLE_RESYNC_DELAY = 0.2


class Listener:
    def __init__(
        self,
        dsn: str,
        hub: Hub,
        *,
        health: DeliveryHealth | None = None,
        probe_interval: float = 1.0,
        probe_timeout: float = 2.0,
        max_backoff: float = 5.0,
        read_dsn: str | None = None,
    ) -> None:
        self._dsn = dsn
        self._hub = hub
        # Users to read -> when they became due (monotonic), oldest first.
        self._due: dict[str, float] = {}
        self._reading: dict[int, float] = {}  # reader -> when its batch's oldest became due
        # Due users' version the read must reach (RESYNC: unknown, read the primary), for
        # reads from a replica (replicas.py).
        self._wanted: dict[str, int] = {}
        self._replica = None if read_dsn is None else ReplicaReader(read_dsn)
        self._wake = asyncio.Event()
        self._undecodable = 0
        self._resync_timer: asyncio.TimerHandle | None = None
        # Undecodable payloads waiting for the check that tells a newer release's from a
        # stray one: (why, where) of the latest, and the check's task while it runs.
        self._unjudged: tuple[str, str] | None = None
        self._judging: asyncio.Task[None] | None = None
        self._newer_release = False  # once seen, for the process's life
        self._said_newer = False
        self._stray_until = 0.0  # monotonic: until then, a payload is judged stray
        self._stray_logged = -STRAY_LOG_EVERY
        self.health = DeliveryHealth() if health is None else health
        self.health.add_check(self._listen_problem)
        self.health.watch_pending(self.oldest_due)
        self.health.on_stall(self.resync)
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
            asyncio.create_task(self._read_forever(n), name=f"statebus-envelope-reader-{n}")
            for n in range(READERS)
        ]
        try:
            await self._receive()
        finally:
            tasks = [*readers, *([] if self._judging is None else [self._judging])]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._replica is not None:
                self._replica.close()

    async def _receive(self) -> None:
        """Feeds the queue forever: here from LISTEN; an edge's from NATS (edge.py)."""
        await self.supervisor.run()

    async def _resync(self, conn: asyncpg.Connection) -> None:
        # LISTEN is active: anything committed from here on is notified. A recovery
        # restarts PostgreSQL under us: move versions first if it was one. Then re-read
        # the rest, the current version of every user somebody is watching.
        await restore.check(conn)
        self.resync()

    def resync(self) -> None:
        """Re-read the current version of every watched user (newer ones are pushed)."""
        self._queue(self._hub.user_ids())

    def oldest_due(self) -> float | None:
        """When the oldest notification not yet turned into frames became due (monotonic)."""
        first = next(iter(self._due.values()), None)
        times = [*self._reading.values(), *([] if first is None else [first])]
        return min(times) if times else None

    def _listen_problem(self) -> str | None:
        metrics.listen_connected.set(1 if self.live else 0)
        return None if self.live else "listen connection down"

    def _on_notify(self, payload: str) -> None:
        metrics.notifications.inc()
        try:
            pairs = decode_notification(payload)
        except NotificationFormatError as exc:
            self._on_undecodable(str(exc))
            return
        self._notified(pairs)

    def _notified(self, pairs: Iterable[tuple[str, int]]) -> None:
        """Queues the watched users of (user_id, version) pairs whose version is new here."""
        hub, due, wanted = self._hub, self._due, self._wanted
        now = time.monotonic()
        for user_id, version in pairs:
            if hub.watched(user_id) and version > hub.latest_version(user_id):
                due.setdefault(user_id, now)
                # At least this version must be read (a replica may lag; replicas.py).
                if wanted.get(user_id, 0) != RESYNC:
                    wanted[user_id] = max(version, wanted.get(user_id, 0))
        if due:
            self._wake.set()

    def _on_undecodable(self, why: str, where: str = f"channel {CHANNEL}") -> None:
        """A payload of another shape: counted, then judged (a newer release's, or stray)."""
        metrics.undecodable_notifications.inc()
        self._undecodable += 1
        self._unjudged = (why, where)
        if self._judging is None:
            self._judging = asyncio.get_running_loop().create_task(
                self._judge(), name="statebus-undecodable-check"
            )

    async def _judge(self) -> None:
        try:
            while self._unjudged is not None:
                why, where = self._unjudged
                self._unjudged = None
                if await self._from_newer_release():
                    self._newer_release_writing(why, where)
                else:
                    self._stray(why, where)
        finally:
            self._judging = None

    async def _from_newer_release(self) -> bool:
        if self._newer_release or time.monotonic() < self._stray_until:
            return self._newer_release
        try:
            conn = await sessions.connect(self._dsn, name="statebus release check", timeout=5)
            try:
                self._newer_release = await migrations.newer_release_migrated(conn)
            finally:
                await conn.close()
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            log.warning("could not tell whose an undecodable notification is (%s)", exc)
            return True  # cannot tell: never drop what a newer release may have named
        if not self._newer_release:
            self._stray_until = time.monotonic() + STRAY_VERDICT_SECONDS
        return self._newer_release

    def _stray(self, why: str, where: str) -> None:
        now = time.monotonic()
        if now - self._stray_logged >= STRAY_LOG_EVERY:
            self._stray_logged = now
            log.warning(
                "ignored a payload on %s that no statebus release wrote (%s): no newer "
                "release has migrated this database, so a role that may NOTIFY sent it; "
                "counted in statebus_notifications_undecodable_total",
                where,
                why,
            )

    def _newer_release_writing(self, why: str, where: str) -> None:
        """A newer release's payload may name users watched here: never drop it silently.
        Say so once, be not ready for a while, and re-read every watched user so their
        sockets still get what it named."""
        if not self._said_newer:
            self._said_newer = True
            log.error(
                "undecodable notification on %s (%s): a newer statebus release has "
                "migrated this database and writes what this one cannot read. Re-reading "
                "watched users instead; counted in statebus_notifications_undecodable_total",
                where,
                why,
            )
        self.health.set_problem(
            "undecodable",
            f"{self._undecodable} undecodable notifications on {where} (the last: {why})",
            hold=UNDECODABLE_HOLD,
        )
        if self._resync_timer is None:
            self._resync_timer = asyncio.get_running_loop().call_later(
                UNDECODABLE_RESYNC_DELAY, self._delayed_resync
            )

    def _delayed_resync(self) -> None:
        self._resync_timer = None
        self.resync()

    def _queue(self, user_ids: Iterable[str], at: float | None = None) -> None:
        due = self._due
        now = time.monotonic() if at is None else at
        for user_id in user_ids:
            due.setdefault(user_id, now)
            self._wanted[user_id] = RESYNC  # what was missed is not known: the primary
        if due:
            self._wake.set()

    async def _read_forever(self, reader: int) -> None:
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
                conn = await sessions.connect(self._dsn, name="statebus envelope reader", timeout=5)
                metrics.readers_connected.inc()
                failures = 0
                await self._read_with(conn, reader)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                failures += 1
                log.warning("could not read envelopes (%s); retrying", type(exc).__name__)
                await asyncio.sleep(backoff.delay(failures, base=0.1, cap=2.0))
            finally:
                if conn is not None:
                    metrics.readers_connected.dec()
                    conn.terminate()

    async def _read_with(self, conn: asyncpg.Connection, reader: int) -> None:
        while True:
            await self._wake.wait()
            while self._due:
                taken = dict(itertools.islice(self._due.items(), BATCH))
                for user_id in taken:
                    del self._due[user_id]
                batch = [user_id for user_id in taken if self._hub.watched(user_id)]
                if not batch:
                    continue
                self._reading[reader] = min(taken.values())
                wanted = {u: self._wanted.pop(u, RESYNC) for u in taken}
                try:
                    if self._replica is None:
                        envelopes = await read_envelopes(conn, batch)
                    else:
                        envelopes = await self._replica.read(conn, {u: wanted[u] for u in batch})
                except BaseException:
                    # Read again on the next connection, first, still as old as it is.
                    self._due = {**{u: taken[u] for u in batch}, **self._due}
                    for user_id in batch:
                        if self._wanted.get(user_id, 0) != RESYNC:
                            self._wanted[user_id] = max(
                                wanted[user_id], self._wanted.get(user_id, 0)
                            )
                        if wanted[user_id] == RESYNC:
                            self._wanted[user_id] = RESYNC
                    self._wake.set()
                    raise
                finally:
                    del self._reading[reader]
                self._publish(envelopes)
            self._wake.clear()  # nothing due: every reader sleeps until the next queue

    def _publish(self, envelopes: list[Envelope]) -> None:
        hub = self._hub
        now = time.time()
        for env in envelopes:
            if env.version > hub.latest_version(env.user_id) and hub.publish(frame_of(env)):
                if env.committed_at is not None:  # a socket took it: a real delivery
                    committed = datetime.fromisoformat(env.committed_at).timestamp()
                    metrics.commit_to_socket.observe(max(0.0, now - committed))
