"""The leading relay's outbox: ordered, pipelined, acknowledged publishes to JetStream.

Up to `in_flight` messages are on their way at once (one at a time, a three-replica
stream acknowledges ~800/s here; 200 in flight ~7,000/s). They are sent in sequence
order and counted acknowledged in that order. When the oldest one fails or is not
acknowledged in time, it and everything sent after it go again, in order, with the same
`Nats-Msg-Id`, so the stream stores each once; an edge may receive one twice, which is
harmless (the hub ignores versions it has delivered). A plain publish is not enough:
one sent while a NATS node dies is lost without an error.

Markers tie a Postgres snapshot to the sequence: `mark(xmin)` after every notification
of transactions older than `xmin` was added; `watermark()` returns the newest such xmin
all of whose messages are acknowledged, for the relay to record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck

from statebus import backoff, natsbus, tiermetrics
from statebus.natsbus import SUBJECT, Batch, batch_encoder

log = logging.getLogger("statebus.relay")

PAIRS_PER_MESSAGE = 1000  # a catch-up of 100,000 users is 100 messages of ~40 KB


@dataclass(slots=True)
class Outgoing:
    seq: int
    payload: bytes
    created: float  # monotonic time the notification arrived
    future: asyncio.Future[PubAck] | None = None
    sent: float = 0.0


class Publisher:
    def __init__(
        self,
        js: JetStreamContext,
        leader: int,
        *,
        valid: Callable[[], bool],
        in_flight: int = 200,
        ack_timeout: float = 2.0,
    ) -> None:
        self._js = js
        self._leader = leader
        self._valid = valid
        self._in_flight = in_flight
        self._ack_timeout = ack_timeout
        self._queue: deque[Outgoing] = deque()  # not sent yet, or to send again
        self._flight: deque[Outgoing] = deque()  # sent, oldest first
        self._marks: deque[tuple[int, str]] = deque()  # (last seq before, xmin)
        self._seq = 0
        self.acked_seq = 0
        self._wake = asyncio.Event()
        self._failures = 0
        self._stream_missing = False

    def add(self, pairs: list[tuple[str, int]], *, created: float | None = None) -> None:
        """Queues the pairs of one notification (cut into messages of a bounded size)."""
        now = time.monotonic() if created is None else created
        chunks = [pairs[i : i + PAIRS_PER_MESSAGE] for i in range(0, len(pairs), PAIRS_PER_MESSAGE)]
        for chunk in chunks or [[]]:
            self._seq += 1
            payload = batch_encoder.encode(Batch(self._leader, self._seq, chunk))
            self._queue.append(Outgoing(self._seq, payload, now))
        self._wake.set()

    def mark(self, xmin: str) -> None:
        self._marks.append((self._seq, xmin))
        self._wake.set()

    def watermark(self) -> str | None:
        """The newest marked xmin whose messages are all acknowledged (None: no new one)."""
        found = None
        while self._marks and self._marks[0][0] <= self.acked_seq:
            found = self._marks.popleft()[1]
        return found

    def oldest_unpublished_age(self) -> float:
        oldest = self._flight[0] if self._flight else (self._queue[0] if self._queue else None)
        return 0.0 if oldest is None else time.monotonic() - oldest.created

    @property
    def backlog(self) -> int:
        return len(self._queue) + len(self._flight)

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()  # before looking: a later ack or add sets it again
                await self._send_what_fits()
                if self._settle_head():
                    await asyncio.sleep(backoff.delay(self._failures, base=0.05, cap=1.0))
                    if self._stream_missing:
                        await self._recreate_stream()
                    continue
                wait = 1.0
                if self._flight:
                    head = self._flight[0]
                    assert head.future is not None
                    if head.future.done():
                        continue
                    wait = head.sent + self._ack_timeout - time.monotonic()
                    if wait <= 0:
                        self._retry("no acknowledgement in time")
                        continue
                if self._queue and len(self._flight) < self._in_flight and self._valid():
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            self._abandon()

    async def _send_what_fits(self) -> None:
        while self._queue and len(self._flight) < self._in_flight and self._valid():
            out = self._queue[0]
            try:
                future = await self._js.publish_async(
                    SUBJECT,
                    out.payload,
                    headers={"Nats-Msg-Id": f"{self._leader}-{out.seq}"},
                    wait_stall=self._ack_timeout,
                )
            except Exception as exc:  # reconnecting with a full buffer, stalled, closed
                self._failures += 1
                log.warning("relay: publish failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(backoff.delay(self._failures, base=0.05, cap=1.0))
                return
            self._queue.popleft()
            out.future, out.sent = future, time.monotonic()
            future.add_done_callback(self._on_done)
            self._flight.append(out)
            tiermetrics.relay_published.inc()

    def _on_done(self, _future: object) -> None:
        self._wake.set()

    def _settle_head(self) -> bool:
        """Counts acknowledged messages, oldest first; True when the oldest failed."""
        while self._flight:
            head = self._flight[0]
            future = head.future
            if future is None or not future.done():
                return False
            if future.cancelled() or future.exception() is not None:
                error = None if future.cancelled() else future.exception()
                # No stream answers: the whole cluster restarted and lost it, or it was
                # deleted by hand. It is created again before the retry.
                self._stream_missing = isinstance(error, nats.js.errors.NoStreamResponseError)
                self._retry(type(error).__name__ if error else "cancelled")
                return True
            self._flight.popleft()
            self.acked_seq = head.seq
            self._failures = 0
            tiermetrics.relay_acknowledged.inc()
        return False

    async def _recreate_stream(self) -> None:
        try:
            await natsbus.ensure_stream(self._js)
            self._stream_missing = False
        except Exception as exc:
            log.warning("relay: could not create the NATS stream (%s)", type(exc).__name__)

    def _retry(self, reason: str) -> None:
        """The oldest message failed: it and all sent after it go again, in order."""
        self._failures += 1
        log.warning("relay: %d message(s) to publish again (%s)", len(self._flight), reason)
        tiermetrics.relay_retried.inc(len(self._flight))
        while self._flight:
            out = self._flight.pop()
            if out.future is not None and not out.future.done():
                out.future.remove_done_callback(self._on_done)
                out.future.cancel()
            out.future = None
            self._queue.appendleft(out)

    def _abandon(self) -> None:
        """Leadership ended: nothing more is sent; the next leader publishes from the
        recorded watermark, which never passed what was not acknowledged."""
        for out in self._flight:
            if out.future is not None and not out.future.done():
                out.future.remove_done_callback(self._on_done)
                out.future.cancel()
        self._flight.clear()
        self._queue.clear()
