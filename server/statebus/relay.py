"""`statebus relay`: the one process of the tier that LISTENs on Postgres.

Several run; one leads. Leadership is the row statebus.relay_lease (sql/migrations/
0010_relay.sql explains why not an advisory lock): a relay standing by takes it as soon
as the leader's session is gone from pg_stat_activity or its lease has expired, and
says meanwhile who holds it. The leader renews the lease on its LISTENing session, in
single statements (that session never sits in an open transaction), and stops
publishing the moment that session is lost, a renewal fails, or the lease could have
expired unnoticed: a relay never publishes from stale leadership.

On taking the lease a relay LISTENs *first*, then publishes the latest version of every
user changed by a transaction at or after the recorded watermark: whatever was
committed while no relay led, or published but never acknowledged, goes out again.
Then each notification's pairs are published as they come (relaypublish.py). About
once a second the leader ties a snapshot's xmin to the published sequence and, once
everything before it is acknowledged, records it as the new watermark.

It never reads a document and never talks to sockets: edges do (edge.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from typing import Any

import asyncpg
from nats.aio.client import Client
from nats.js import JetStreamContext

from statebus import backoff, metrics, migrations, natsbus, sqlfiles, tiermetrics
from statebus.config import Settings
from statebus.core_messages import NotificationFormatError, decode_notification
from statebus.listener import CHANNEL, STRAY_LOG_EVERY
from statebus.relaypublish import Publisher

log = logging.getLogger("statebus.relay")

# A leader's session that died is seen at the next poll (pg_stat_activity); the lease
# expiry only matters for a session that lingers (a network cut): 2 s, renewed 5x.
LEASE_TTL = 2.0
RENEW_EVERY = 0.4
# A quiet leader still sends a message this often (relaypublish.Publisher.keep_alive):
# edges count the tier dead after natsbus.RELAY_SILENCE without one.
KEEP_ALIVE = 1.0
POLL_EVERY = 0.2
# Server-side keepalives on the relay's session, so a cut connection ends its backend
# (and frees the lease) in seconds rather than the kernel's two hours.
SESSION_SETTINGS = {
    "tcp_keepalives_idle": "1",
    "tcp_keepalives_interval": "1",
    "tcp_keepalives_count": "2",
    "tcp_user_timeout": "3000",
}


class LeadershipLost(Exception):
    pass


def default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Relay:
    def __init__(
        self,
        dsn: str,
        settings: Settings,
        *,
        name: str | None = None,
        lease_ttl: float = LEASE_TTL,
        renew_every: float = RENEW_EVERY,
        poll_every: float = POLL_EVERY,
    ) -> None:
        self._dsn = dsn
        self._settings = settings
        self.name = name or default_name()
        self._ttl = lease_ttl
        self._renew_every = renew_every
        self._poll_every = poll_every
        self._probe_channel = f"statebus_relay_probe_{secrets.token_hex(6)}"
        self.leading = False
        self.token: int | None = None
        self._publisher: Publisher | None = None
        self._valid_until = 0.0
        self._said_newer = False
        self._stray_logged = -STRAY_LOG_EVERY

    async def run(self) -> None:
        connected: list[Client] = []

        async def connect() -> None:
            connected.append(
                await natsbus.connect(self._settings, name=f"statebus relay {self.name}")
            )

        await _until_done(connect, what="connect to NATS")
        nc = connected[0]
        try:
            js = nc.jetstream()
            await _until_done(lambda: natsbus.ensure_stream(js), what="create the NATS stream")
            failures = 0
            while True:
                started = time.monotonic()
                try:
                    await self._session(js)
                except Exception as exc:  # anything: a relay must never die silently
                    log.warning("relay %s: %s: %s", self.name, type(exc).__name__, exc)
                failures = 1 if time.monotonic() - started > 10 else failures + 1
                await asyncio.sleep(backoff.delay(failures, base=0.05, cap=2.0))
        finally:
            await nc.close()

    async def _session(self, js: JetStreamContext) -> None:
        conn = await asyncpg.connect(
            self._dsn,
            timeout=5,
            server_settings={"application_name": f"statebus relay {self.name}"[:63]}
            | SESSION_SETTINGS,
        )
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            token, watermark = await self._stand_by(conn, lost)
            await self._lead(conn, js, token, watermark, lost)
        finally:
            self.leading = False
            tiermetrics.relay_leader.set(0)
            tiermetrics.relay_unpublished_age.set(0)
            conn.terminate()

    async def _stand_by(
        self, conn: asyncpg.Connection, lost: asyncio.Event
    ) -> tuple[int, str | None]:
        queries = sqlfiles.queries()
        told: tuple[Any, ...] | None = None
        while True:
            row = await conn.fetchrow(queries["relay_acquire"], self.name, self._ttl)
            if row is not None:
                return int(row["token"]), row["watermark"]
            holder = await conn.fetchrow(queries["relay_holder"])
            assert holder is not None  # the migration inserts the one row
            said = (holder["holder"], holder["holder_pid"], holder["token"])
            if said != told:
                log.warning(
                    "relay %s: standing by; the lease is held by %s (backend pid %s, token %s)",
                    self.name,
                    *said,
                )
                told = said
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self._poll_every)
            if lost.is_set():
                raise ConnectionError("Postgres session lost while standing by")

    async def _lead(
        self,
        conn: asyncpg.Connection,
        js: JetStreamContext,
        token: int,
        watermark: str | None,
        lost: asyncio.Event,
    ) -> None:
        queries = sqlfiles.queries()
        self._valid_until = time.monotonic() + self._ttl
        publisher = Publisher(js, token, valid=self._valid)
        probes: list[str] = []  # xmins whose probe NOTIFY is on its way back, in order

        # Why undecodable payloads were, until the loop below judges them: a newer
        # release's (it migrated the database) or a stray NOTIFY from some role.
        unjudged: list[str] = []

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: object) -> None:
            try:
                pairs = decode_notification(str(payload))
            except NotificationFormatError as exc:
                metrics.undecodable_notifications.inc()
                unjudged.append(str(exc))
                return
            publisher.add(pairs)

        def on_probe(*_args: Any) -> None:
            # Notifications are delivered in queue order: every transaction older than
            # this xmin queued its notification before the probe, so it has been added.
            # While an undecodable one waits to be judged the watermark stays where it
            # was: if it was a newer release's, the relay steps down and the next leader
            # publishes from that watermark what it named.
            if probes:
                xmin = probes.pop(0)
                if not unjudged:
                    publisher.mark(xmin)

        await conn.add_listener(CHANNEL, on_notify)
        await conn.add_listener(self._probe_channel, on_probe)
        # LISTEN is active: anything committed from now on is notified. What was
        # committed since the watermark, while no relay led, is read and published.
        rows = (
            []
            if watermark is None
            else await conn.fetch(queries["relay_versions_since"], watermark)
        )
        tiermetrics.relay_catch_up_pairs.inc(len(rows))
        publisher.add([(row["user_id"], row["version"]) for row in rows])  # or an empty hello
        self.token, self.leading = token, True
        self._publisher = publisher
        tiermetrics.relay_leader.set(1)
        log.warning(
            "relay %s: leading (token %d); %d version(s) published from the watermark",
            self.name,
            token,
            len(rows),
        )
        sending = asyncio.create_task(publisher.run(), name="statebus-relay-publish")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self._renew_every)
                if lost.is_set():
                    raise LeadershipLost("Postgres session lost")
                if unjudged:
                    why = unjudged[-1]
                    unjudged.clear()
                    if await migrations.newer_release_migrated(conn):
                        self._say_newer_release(why)
                        raise LeadershipLost(f"stepping down after {why}")
                    self._say_stray(why)
                if sending.done():
                    sending.result()
                    raise LeadershipLost("publisher stopped")
                if not self._valid():
                    raise LeadershipLost("lease not renewed in time")
                asked = time.monotonic()
                renewed = await conn.fetchval(
                    queries["relay_renew"], token, self._ttl, timeout=self._ttl / 2
                )
                if renewed is None:
                    raise LeadershipLost("another relay took the lease")
                self._valid_until = asked + self._ttl
                if len(probes) > 3:
                    raise LeadershipLost("notifications stopped arriving")
                xmin = await conn.fetchval(queries["relay_snapshot_xmin"], timeout=self._ttl / 2)
                probes.append(xmin)
                await conn.execute(queries["listener_probe"], self._probe_channel)
                done = publisher.watermark()
                if done is not None:
                    await conn.fetchval(queries["relay_record_watermark"], token, done)
                tiermetrics.relay_unpublished_age.set(publisher.oldest_unpublished_age())
                publisher.keep_alive(KEEP_ALIVE)
        finally:
            self.leading = False
            tiermetrics.relay_leader.set(0)
            self._publisher = None
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending

    def _say_newer_release(self, why: str) -> None:
        """Said once per process; the leader then steps down (above)."""
        if not self._said_newer:
            self._said_newer = True
            log.error(
                "relay %s: undecodable notification on channel %s (%s): a newer statebus "
                "release has migrated this database. Stepping down so the next leader "
                "publishes from the watermark; counted in "
                "statebus_notifications_undecodable_total",
                self.name,
                CHANNEL,
                why,
            )

    def _say_stray(self, why: str) -> None:
        """Any role may NOTIFY on any channel: what no release wrote is counted and
        ignored (said once a minute), so no role can make the leader step down."""
        now = time.monotonic()
        if now - self._stray_logged >= STRAY_LOG_EVERY:
            self._stray_logged = now
            log.warning(
                "relay %s: ignored a payload on channel %s that no statebus release wrote "
                "(%s): no newer release has migrated this database",
                self.name,
                CHANNEL,
                why,
            )

    def _valid(self) -> bool:
        return self.leading and time.monotonic() < self._valid_until


async def _until_done(step: Any, *, what: str) -> None:
    failures = 0
    while True:
        try:
            await step()
            return
        except Exception as exc:
            failures += 1
            log.warning("relay: could not %s (%s: %s); retrying", what, type(exc).__name__, exc)
            await asyncio.sleep(backoff.delay(failures, base=0.1, cap=2.0))


def run_relay(
    settings: Settings, *, name: str | None, metrics_port: int | None, log_level: str
) -> int:
    """The `statebus relay` command: migrate, then relay until stopped."""
    import signal

    from prometheus_client import start_http_server

    from statebus.database import database_url
    from statebus.metrics import registry
    from statebus.serve import apply_migrations, configure_logging

    configure_logging(log_level)
    if settings.nats_url is None:
        log.error("statebus relay needs STATEBUS_NATS_URL (the NATS cluster to publish to)")
        return 2

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    if metrics_port is not None:
        start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
    with database_url(settings) as dsn:
        asyncio.run(apply_migrations(dsn, demo=False))
        relay = Relay(dsn, settings, name=name)
        print(f"statebus: relay {relay.name} started", flush=True)
        try:
            asyncio.run(relay.run())
        except KeyboardInterrupt:
            return 130
    return 0
