"""In-process fan-out from the one LISTEN connection to this process's socket subscribers.

The listener calls `Hub.publish()` for every new version; each WebSocket holds a
`Subscriber` from `Hub.subscribe()` and awaits `Subscriber.next()`. The hub never
talks to the database or to sockets, and it never buffers more than one envelope
per subscriber: a slow socket skips intermediate versions (latest wins) instead of
growing a queue or slowing `publish()` down for everybody else.

Everything here runs on the event loop's single thread, so no locks are needed;
nothing in this module may be called from another thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from statebus.messages import Envelope

__all__ = ["Hub", "Subscriber", "SubscriberClosed"]


class SubscriberClosed(Exception):
    """Raised by `Subscriber.next()` once the subscriber is closed; carries the reason."""

    def __init__(self, reason: object | None = None) -> None:
        super().__init__(reason)
        self.reason = reason


class Subscriber:
    """One socket's mailbox: at most one undelivered envelope, the newest offered.

    Invariant: `_wakeup` is set exactly when there is a pending envelope or the
    subscriber is closed, so `next()` never sleeps past something it could return.
    """

    __slots__ = ("user_id", "_delivered", "_pending", "_wakeup", "_closed", "_reason")

    def __init__(self, user_id: str, *, since_version: int = 0) -> None:
        self.user_id = user_id
        self._delivered = since_version
        self._pending: Envelope | None = None
        self._wakeup = asyncio.Event()
        self._closed = False
        self._reason: object | None = None

    @property
    def delivered_version(self) -> int:
        """Version of the last envelope `next()` returned (or the `since_version` seed)."""
        return self._delivered

    @property
    def pending(self) -> Envelope | None:
        """The envelope `next()` will return without waiting, if any."""
        return self._pending

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, env: Envelope) -> None:
        """Keep `env` if it is newer than anything delivered or pending; never blocks.

        Because older-or-equal versions are dropped, the socket may offer the
        snapshot it read from the database after subscribing: if the listener
        already offered something newer, the stale read is simply ignored.
        """
        if self._closed:
            return
        floor = self._delivered if self._pending is None else self._pending.version
        if env.version > floor:
            self._pending = env
            self._wakeup.set()

    async def next(self) -> Envelope:
        """Wait for the next envelope; versions returned strictly increase.

        Raises `SubscriberClosed` once closed, even if an envelope was pending:
        a closing socket has no use for one more snapshot. Cancelling the wait
        loses nothing; the pending envelope stays for the next call.
        """
        while True:
            if self._closed:
                raise SubscriberClosed(self._reason)
            env = self._pending
            if env is not None:
                self._pending = None
                self._wakeup.clear()
                self._delivered = env.version
                return env
            await self._wakeup.wait()

    def close(self, reason: object | None = None) -> None:
        """Wake any `next()` so it raises `SubscriberClosed(reason)`; later offers are ignored."""
        if self._closed:
            return
        self._closed = True
        self._reason = reason
        self._pending = None
        self._wakeup.set()

    def __repr__(self) -> str:
        return (
            f"<Subscriber user_id={self.user_id!r} delivered={self._delivered}"
            f" pending={None if self._pending is None else self._pending.version}"
            f"{' closed' if self._closed else ''}>"
        )


class Hub:
    """`user_id -> set[Subscriber]`, fed by the listener, drained by sockets."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._latest: dict[str, int] = {}
        self._total = 0
        self._closing = False
        self._closing_reason: object | None = None

    def subscribe(
        self, user_id: str, *, since_version: int = 0
    ) -> AbstractAsyncContextManager[Subscriber]:
        """Register a subscriber for `user_id` for the duration of an `async with`.

        Nothing at or below `since_version` is delivered: pass the client's last
        version, or -1 when it holds nothing (version 0, "no rows yet", is a real
        version). The subscriber is removed on exit however the block ends,
        including cancellation. After `close_all()` the subscriber is already
        closed, so a socket accepted during shutdown ends at once.
        """
        return self._subscription(user_id, since_version)

    @asynccontextmanager
    async def _subscription(self, user_id: str, since_version: int) -> AsyncIterator[Subscriber]:
        sub = Subscriber(user_id, since_version=since_version)
        if self._closing:
            sub.close(self._closing_reason)
        self._subscribers.setdefault(user_id, set()).add(sub)
        self._total += 1
        try:
            yield sub
        finally:
            self._remove(sub)

    def _remove(self, sub: Subscriber) -> None:
        sub.close("unsubscribed")
        subs = self._subscribers.get(sub.user_id)
        if subs is None or sub not in subs:
            return
        subs.remove(sub)
        self._total -= 1
        if not subs:
            del self._subscribers[sub.user_id]
            self._latest.pop(sub.user_id, None)

    def publish(self, env: Envelope) -> int:
        """Offer `env` to every subscriber of `env.user_id`; returns how many were offered it.

        Synchronous and O(subscribers of that user): each offer only swaps a
        reference, so one stalled socket never delays the others.
        """
        subs = self._subscribers.get(env.user_id)
        if not subs:
            return 0
        if env.version > self._latest.get(env.user_id, -1):
            self._latest[env.user_id] = env.version
        for sub in subs:
            sub.offer(env)
        return len(subs)

    def latest_version(self, user_id: str) -> int | None:
        """Highest version published for `user_id` since it last gained subscribers, if any."""
        return self._latest.get(user_id)

    def user_ids(self) -> list[str]:
        """Users with at least one subscriber: what the listener re-syncs after a reconnect."""
        return list(self._subscribers)

    def subscriber_count(self, user_id: str | None = None) -> int:
        """Subscribers of `user_id`, or of everyone when None; O(1) either way."""
        if user_id is None:
            return self._total
        subs = self._subscribers.get(user_id)
        return 0 if subs is None else len(subs)

    def close_all(self, reason: object) -> None:
        """Graceful shutdown: every current and future subscriber's `next()` raises.

        Subscribers stay registered until their `async with` exits, so counts
        fall as sockets actually close.
        """
        self._closing = True
        self._closing_reason = reason
        for subs in self._subscribers.values():
            for sub in subs:
                sub.close(reason)
