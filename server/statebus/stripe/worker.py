"""The inbox worker: applies stored Stripe events, retrying failures with backoff.

Wakes on NOTIFY `statebus_stripe_inbox` (through the LISTEN supervisor, its own connection,
never one from the pool) and polls every second anyway, so a lost notification or a dropped connection only delays
work. Several loops claim events with FOR UPDATE SKIP LOCKED under a lease; an event whose
worker died becomes due again when the lease ends. It writes tables only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import stripe

from statebus import backoff, metrics, sqlfiles
from statebus.stripe.events import Outcome, Policy, apply_event
from statebus.stripe.gateway import StripeGateway, is_missing, redact
from statebus.stripe.payloads import lean_decoder
from statebus.stripe.store import PlanConflict
from statebus.supervisor import ListenSupervisor

log = logging.getLogger("statebus.stripe")

CHANNEL = "statebus_stripe_inbox"
LEASE_SECONDS = 120.0  # longer than a Stripe call with its retries can take
# Attempts before an event that keeps failing ends as `failed` (with backoff capped at an
# hour, about five hours of trying): a Stripe outage is outlasted, a bug is not retried
# forever. An unmatched event stops being retried by time then, and still applies when
# a checkout links its customer.
MAX_ATTEMPTS = 12
FAILED_REFRESH_SECONDS = 30.0


def retry_in(attempts: int) -> float:
    return backoff.delay(attempts, base=2.0, cap=3600.0)


def describe(exc: BaseException) -> str:
    """A short error for last_error. Stripe errors carry their own message (never the key);
    anything else is named by type only, since its text could hold anything."""
    if isinstance(exc, stripe.StripeError):
        status = f" {exc.http_status}" if exc.http_status else ""
        code = f" {exc.code}" if exc.code else ""
        message = redact(exc.user_message or "no message")
        return f"stripe {type(exc).__name__}{status}{code}: {message}"[:500]
    if isinstance(exc, PlanConflict | asyncpg.PostgresError):
        return f"{type(exc).__name__}: {exc}"[:500]
    return f"{type(exc).__name__}"


def final(exc: BaseException) -> bool:
    """Errors no retry can fix: the object is gone, or the plans are ambiguous."""
    return is_missing(exc) or isinstance(exc, PlanConflict)


def next_step(outcome: Outcome, attempts: int) -> tuple[str, float | None]:
    """The status to store and seconds until the next attempt (None: not by time)."""
    if outcome.status == "unmatched":
        return "unmatched", retry_in(attempts) if attempts < MAX_ATTEMPTS else None
    return outcome.status, 0.0


class InboxWorker:
    def __init__(
        self,
        dsn: str,
        pool: asyncpg.Pool,
        gateway: StripeGateway,
        *,
        connect: bool = False,
        concurrency: int = 4,
        poll_interval: float = 1.0,
    ) -> None:
        self._dsn, self._pool, self._gateway = dsn, pool, gateway
        self._policy = Policy(livemode=gateway.livemode, connect=connect)
        self._concurrency, self._poll = concurrency, poll_interval
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Polling covers any gap; the LISTEN connection only makes work start sooner.
        self._listening = ListenSupervisor(
            dsn,
            {CHANNEL: self._on_notify},
            on_connect=self._on_connect,
            name="stripe inbox",
            probe_interval=5.0,
            max_backoff=10.0,
        )
        self._listen_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._listen_task = asyncio.create_task(self._listening.run(), name="stripe-inbox-listen")
        self._tasks = [asyncio.create_task(self._count_failed(), name="stripe-inbox-failed")]
        self._tasks += [
            asyncio.create_task(self._work(), name=f"stripe-inbox-{n}")
            for n in range(self._concurrency)
        ]

    async def stop(self, timeout: float = 10.0) -> None:
        """Lets each loop finish its current event, then cancels what is left."""
        self._stopping.set()
        self._wake.set()
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
            self._listen_task = None
        _, pending = await asyncio.wait(self._tasks, timeout=timeout) if self._tasks else ((), ())
        for task in pending:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- waking up -------------------------------------------------------------------------

    def _on_notify(self, _payload: str) -> None:
        self._wake.set()

    async def _on_connect(self, _conn: asyncpg.Connection) -> None:
        self._wake.set()  # anything stored while we were not listening

    async def _work(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before claiming: a NOTIFY from now on is not missed
            try:
                worked = await self.process_one()
            except Exception as exc:  # the loop must outlive a lost connection or a bug
                log.warning("stripe inbox loop error: %s", type(exc).__name__)
                worked = False
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
            else:
                self._wake.set()  # more may be due; let the sibling loops look too

    # -- one event -------------------------------------------------------------------------

    async def _count_failed(self) -> None:
        """Keeps /metrics' count of events failed for good current (every server shows it)."""
        while not self._stopping.is_set():
            with contextlib.suppress(Exception):  # the next round tries again
                count = await self._pool.fetchval(sqlfiles.queries()["stripe_inbox_failed_count"])
                metrics.stripe_events_failed.set(count)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), FAILED_REFRESH_SECONDS)

    async def process_one(self) -> bool:
        """Claims and applies one due event; False when none was due."""
        q = sqlfiles.queries()
        async with self._pool.acquire() as conn:
            claimed = await conn.fetchrow(q["stripe_inbox_claim"], LEASE_SECONDS)
            if claimed is None:
                return False
            event_id, attempts = claimed["id"], claimed["attempts"]
            try:
                event = lean_decoder.decode(claimed["payload"])  # data stays raw until read
                async with conn.transaction():
                    outcome = await apply_event(conn, self._gateway, event, self._policy)
                    status, wait = next_step(outcome, attempts)
                    await conn.execute(q["stripe_inbox_done"], event_id, status, outcome.note, wait)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = describe(exc)
                status = "failed" if final(exc) or attempts >= MAX_ATTEMPTS else "retrying"
                log.warning(
                    "stripe event %s %s (attempt %d): %s", event_id, status, attempts, error
                )
                await conn.execute(
                    q["stripe_inbox_done"], event_id, status, error, retry_in(attempts)
                )
            metrics.stripe_events.labels(status).inc()
            if status == "failed":
                metrics.stripe_events_failed.inc()
            return True
