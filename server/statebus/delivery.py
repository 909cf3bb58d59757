"""Delivery health: is this process turning notifications into frames right now?

`/readyz` asks this object; whatever delivers notifications feeds it (the LISTEN
listener today; any other subscriber, such as a broker's, can feed it the same way).
Ready means delivering, not merely connected: a process whose notifications wait to be
read, whose event loop froze, or that cannot decode what it receives says so, with the
reason, instead of answering 200 while its sockets go stale.

Three kinds of input:

- checks (`add_check`): polled functions that name a problem or return None
  (e.g. "listen connection down");
- problems set and cleared by their owner (`set_problem` / `clear_problem`), optionally
  for a while only (`hold=`), e.g. "shutting down" or "undecodable notifications";
- pending work (`watch_pending`): the monotonic time the oldest notification not yet
  turned into frames was received; older than `threshold` means not ready.

The watchdog task ticks every `tick` seconds. A tick that comes late by more than
`threshold` means the event loop did not run (the process was frozen, or starved of
CPU): notifications may have waited anywhere, so `on_stall` callbacks run (the listener
re-reads every watched user) and the process stays not ready until that re-read is
done, and for at least `threshold` seconds: a load balancer polling every few seconds
should see that this process just froze, even when it caught up at once. Every change between ready and not ready is logged, once. Never touches the
database or sockets itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from statebus import metrics

log = logging.getLogger("statebus.ready")

Check = Callable[[], str | None]
Oldest = Callable[[], float | None]  # monotonic time, None when nothing is pending


@dataclass
class _Problem:
    reason: str
    until: float | None  # monotonic; None: until cleared


class DeliveryHealth:
    def __init__(self, threshold: float = 5.0, *, tick: float = 0.25) -> None:
        self.threshold = threshold
        self.tick = tick
        self._checks: list[Check] = []
        self._pending: list[Oldest] = []
        self._on_stall: list[Callable[[], None]] = []
        self._problems: dict[str, _Problem] = {}
        self._created = time.monotonic()
        self._last_tick = self._created
        self._stall: tuple[str, float] | None = None  # (reason, caught up once nothing older)
        self._ready: bool | None = None  # None: not yet ready since start
        self._not_ready_since = self._created

    # -- inputs ------------------------------------------------------------------------

    def add_check(self, check: Check) -> None:
        self._checks.append(check)

    def watch_pending(self, oldest: Oldest) -> None:
        self._pending.append(oldest)

    def on_stall(self, callback: Callable[[], None]) -> None:
        self._on_stall.append(callback)

    def set_problem(self, kind: str, reason: str, *, hold: float | None = None) -> None:
        """Not ready because of `kind` until cleared, or for `hold` seconds from now."""
        until = None if hold is None else time.monotonic() + hold
        self._problems[kind] = _Problem(reason, until)

    def clear_problem(self, kind: str) -> None:
        self._problems.pop(kind, None)

    # -- outputs -----------------------------------------------------------------------

    def oldest_pending_age(self) -> float:
        """Seconds the oldest notification not yet turned into frames has waited (0: none)."""
        oldest = self._oldest_pending()
        return 0.0 if oldest is None else max(0.0, time.monotonic() - oldest)

    def reasons(self) -> list[str]:
        """Why this process is not ready; empty when it is."""
        now = time.monotonic()
        found = [reason for check in self._checks if (reason := check()) is not None]
        for kind, problem in list(self._problems.items()):
            if problem.until is not None and problem.until <= now:
                del self._problems[kind]
            else:
                found.append(problem.reason)
        age = self.oldest_pending_age()
        if age > self.threshold:
            found.append(f"notifications waiting {age:.1f} s to become frames")
        late = now - self._last_tick - self.tick
        if late > self.threshold:  # asked while the loop has not run the watchdog: frozen
            found.append(f"event loop stalled for {late:.1f} s")
        elif self._stall is not None:
            found.append(self._stall[0])
        return found

    def check(self) -> list[str]:
        """`reasons()`, logging the change when readiness flips (once per change)."""
        reasons = self.reasons()
        ready = not reasons
        metrics.ready.set(1 if ready else 0)
        metrics.oldest_pending_seconds.set(self.oldest_pending_age())
        now = time.monotonic()
        if ready and self._ready is not True:
            if self._ready is False:
                log.warning("ready again after %.1f s", now - self._not_ready_since)
            self._ready = True
        elif not ready and self._ready is not False:
            # At start, not ready is expected for a moment: say so only if it lasts.
            if self._ready is True or now - self._created > self.threshold:
                log.warning("not ready: %s", "; ".join(reasons))
                metrics.readiness_lost.inc()
                self._ready = False
                self._not_ready_since = now
        return reasons

    async def watchdog(self) -> None:
        """Forever: notice a frozen loop, finish a stall's catch-up, log readiness flips."""
        self._last_tick = time.monotonic()  # start-up may have taken a while: not a stall
        while True:
            await asyncio.sleep(self.tick)
            if self._stall is not None:
                oldest = self._oldest_pending()
                since = self._stall[1]
                if time.monotonic() - since >= self.threshold and (
                    oldest is None or oldest > since
                ):
                    self._stall = None  # everything the re-read queued is delivered
            late = time.monotonic() - self._last_tick - self.tick
            if late > self.threshold:
                self._stalled(late)  # reported by the check() below at least once
            self._last_tick = time.monotonic()
            self.check()

    def _stalled(self, seconds: float) -> None:
        metrics.event_loop_stalls.inc()
        reason = f"event loop stalled for {seconds:.1f} s; re-reading watched users"
        for callback in self._on_stall:
            callback()
        self._stall = (reason, time.monotonic())

    def _oldest_pending(self) -> float | None:
        times = [t for oldest in self._pending if (t := oldest()) is not None]
        return min(times) if times else None
