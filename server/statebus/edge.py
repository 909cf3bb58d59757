"""An edge of the relay tier: `statebus serve` with STATEBUS_NATS_URL.

The same listener as a single process (listener.py: pairs -> envelope reads -> hub),
fed from NATS instead of LISTEN: an edge never LISTENs on Postgres, so adding edges adds
no work to the writers' commits. It holds one subscription, to the one subject the
leading relay publishes on, and drops the pairs of users nobody here watches with a dict
lookup (docs/scaling.md measures why one subscription beats one per user or per shard).

Whenever something may have been missed, every watched user is re-read, as the
single process does after a LISTEN loss: on (re)connecting to NATS, when NATS drops
messages for a slow consumer, when a new relay leads (a new fencing token), and when
the leader's sequence jumps. A leader is never silent for long (an empty message each
second when nothing is committed), so a lost last message shows as a jump within a
second, and /readyz says not ready while NATS is unreachable or no relay is heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from statebus import backoff, natsbus, tiermetrics
from statebus.config import Settings
from statebus.delivery import DeliveryHealth
from statebus.hub import Hub
from statebus.listener import Listener

log = logging.getLogger("statebus.edge")


class EdgeListener(Listener):
    def __init__(
        self, dsn: str, hub: Hub, settings: Settings, *, health: DeliveryHealth | None = None
    ) -> None:
        super().__init__(dsn, hub, health=health, read_dsn=settings.read_database_url)
        self._settings = settings
        self._connected = False
        self._problem = "NATS not connected yet"
        self._leader = -1  # fencing token of the relay last heard from
        self._seq = 0
        self._heard = time.monotonic()  # the latest message from a relay (or subscribing)
        self._nc: Client | None = None

    @property
    def live(self) -> bool:
        return self._connected

    @property
    def backend_pid(self) -> int | None:
        return None  # no LISTENing session at all

    def _listen_problem(self) -> str | None:
        # /readyz: an edge hears commits through NATS, not LISTEN, and only while a relay
        # leads; a leader sends something every second (relay.KEEP_ALIVE).
        if not self._connected:
            return self._problem
        silent = time.monotonic() - self._heard
        if silent > natsbus.RELAY_SILENCE:
            return f"no relay heard from for {silent:.0f} s (is one leading?)"
        return None

    async def _receive(self) -> None:
        nc = self._nc = await self._connect()
        try:
            await nc.subscribe(natsbus.SUBJECT, cb=self._on_message)
            await nc.flush(timeout=5)  # the server has the subscription: re-read after it
            tiermetrics.edge_subscriptions.set(1)
            self._heard = time.monotonic()
            self._connected = True
            # Sockets that opened before the subscription read their state then; a commit
            # since would be neither in that read nor on NATS for us.
            self._catch_up("connected")
            await asyncio.Event().wait()  # callbacks do the rest, until cancelled
        finally:
            self._connected = False
            tiermetrics.edge_subscriptions.set(0)
            await nc.close()

    async def _connect(self) -> Client:
        failures = 0
        while True:
            try:
                return await natsbus.connect(
                    self._settings,
                    name="statebus edge",
                    disconnected=self._on_disconnected,
                    reconnected=self._on_reconnected,
                    error=self._on_error,
                )
            except Exception as exc:  # no node reachable yet: keep trying, not ready
                failures += 1
                self._problem = f"NATS unreachable ({type(exc).__name__})"
                log.warning("edge: %s; retrying", self._problem)
                await asyncio.sleep(backoff.delay(failures, base=0.1, cap=2.0))

    async def _on_disconnected(self) -> None:
        if self._connected:
            log.warning("edge: NATS connection lost; reconnecting")
        self._connected = False
        self._problem = "NATS connection down (reconnecting)"

    async def _on_reconnected(self) -> None:
        # nats-py has sent the subscription again before calling this; once the server
        # answers a ping it holds it, and a re-read then misses nothing the gap hid.
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)
        self._heard = time.monotonic()  # the relay's messages may take a moment to resume
        self._connected = True
        log.warning("edge: NATS connection back")
        self._catch_up("reconnected")

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            self._catch_up("slow consumer")  # NATS dropped messages meant for us
        else:
            log.warning("edge: NATS: %s: %s", type(exc).__name__, exc)

    async def _on_message(self, msg: Msg) -> None:
        tiermetrics.edge_messages.inc()
        self._heard = time.monotonic()
        try:
            batch = natsbus.batch_decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            # A newer relay's batch? Like an undecodable NOTIFY: counted, said once, not
            # ready for a while, every watched user re-read.
            self._on_undecodable(str(exc), where=f"NATS subject {natsbus.SUBJECT}")
            return
        if batch.leader > self._leader:
            # Also the first leader heard: what was committed between this edge's
            # subscription and that leader's first message may have had no relay at all
            # (a first leader has no watermark to publish from).
            self._catch_up("new relay leader")
            self._leader, self._seq = batch.leader, batch.seq
        elif batch.leader == self._leader:
            if batch.seq > self._seq + 1:
                self._catch_up("sequence gap")
            self._seq = max(self._seq, batch.seq)
        self._notified(batch.pairs)

    def _catch_up(self, reason: str) -> None:
        tiermetrics.edge_catch_ups.labels(reason).inc()
        self._queue(self._hub.user_ids())
