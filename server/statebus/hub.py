"""In-process fan-out from the one LISTEN connection to this process's socket subscribers.

The listener calls `Hub.publish()` with each new version's `Frame` (encoded once);
each WebSocket registers a `Subscriber` with `Hub.subscribe()`, giving it a sink that
sends one text frame. The hub never talks to the database, and it never holds more
than one unsent frame per subscriber: a slow socket skips intermediate versions
(latest wins) instead of growing a queue or slowing `publish()` down for others.

An idle subscriber is a small slotted object and no task: a send task exists only
while a frame is on its way. Everything here runs on the event loop's thread, so no
locks are needed; nothing in this module may be called from another thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

__all__ = ["Frame", "Hub", "Subscriber"]

Sink = Callable[[str], Awaitable[None]]  # sends one text frame to one socket
OnClose = Callable[[object], None]  # told once why the subscriber closed


@dataclass(frozen=True, slots=True)
class Frame:
    """One version of one user's state, as the text every socket of that user is sent."""

    user_id: str
    version: int
    text: str


class Subscriber:
    """One socket's mailbox: at most one unsent frame, the newest offered.

    Starts held: the socket sends its first message itself (`take()`), then calls
    `release()`; from then on every newer frame offered is sent by a short-lived task.
    Versions sent strictly increase.
    """

    __slots__ = ("user_id", "_sent", "_pending", "_sink", "_on_close", "_task", "_held", "closed")

    def __init__(
        self, user_id: str, sink: Sink, on_close: OnClose | None = None, *, since_version: int = -1
    ) -> None:
        self.user_id = user_id
        self._sent = since_version
        self._pending: Frame | None = None
        self._sink = sink
        self._on_close = on_close
        self._task: asyncio.Task[None] | None = None
        self._held = True
        self.closed = False

    @property
    def sent_version(self) -> int:
        """Version of the last frame sent or taken (or the `since_version` seed)."""
        return self._sent

    @property
    def pending(self) -> Frame | None:
        return self._pending

    def offer(self, frame: Frame) -> bool:
        """Keep `frame` if it is newer than anything sent or pending; never blocks.
        True when kept.

        Older-or-equal versions are dropped, so a socket may offer the envelope it read
        from the database after subscribing: if the listener already offered something
        newer, the stale read is simply ignored.
        """
        if self.closed:
            return False
        floor = self._sent if self._pending is None else self._pending.version
        if frame.version <= floor:
            return False
        self._pending = frame
        self._start()
        return True

    def take(self) -> Frame | None:
        """The pending frame, now counted as sent (the socket sends it itself)."""
        frame, self._pending = self._pending, None
        if frame is not None:
            self._sent = frame.version
        return frame

    def release(self) -> None:
        """From now on, frames offered are sent as they come."""
        self._held = False
        self._start()

    def _start(self) -> None:
        if not self._held and self._task is None and self._pending is not None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while not self.closed and (frame := self.take()) is not None:
                await self._sink(frame.text)
        except Exception as exc:  # the socket went away mid-send
            self.close(exc)
        finally:
            self._task = None

    def close(self, reason: object | None = None) -> None:
        """Stop sending; `on_close(reason)` is told once. Later offers are ignored."""
        if self.closed:
            return
        self.closed = True
        self._pending = None
        if self._on_close is not None:
            self._on_close(reason)

    def __repr__(self) -> str:
        pending = None if self._pending is None else self._pending.version
        return (
            f"<Subscriber user_id={self.user_id!r} sent={self._sent} pending={pending}"
            f"{' closed' if self.closed else ''}>"
        )


class Hub:
    """`user_id -> set[Subscriber]`, fed by the listener, drained into sockets."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._latest: dict[str, int] = {}
        self._total = 0
        self._closing: object | None = None

    def subscribe(
        self, user_id: str, sink: Sink, on_close: OnClose | None = None, *, since_version: int = -1
    ) -> AbstractAsyncContextManager[Subscriber]:
        """Register a subscriber for `user_id` for the duration of an `async with`.

        Nothing at or below `since_version` is sent (-1, the default, sends version 0,
        "no rows yet", which is a real version). The subscriber is removed on exit
        however the block ends. After `close_all()` it is closed at once.
        """
        return self._subscription(Subscriber(user_id, sink, on_close, since_version=since_version))

    @asynccontextmanager
    async def _subscription(self, sub: Subscriber) -> AsyncIterator[Subscriber]:
        self.add(sub)
        try:
            yield sub
        finally:
            self.remove(sub)

    def add(self, sub: Subscriber) -> None:
        """Register `sub` until `remove(sub)`: `subscribe()` without the context manager,
        for the socket endpoint, whose idle frame should hold no generator (ws.py)."""
        self._subscribers.setdefault(sub.user_id, set()).add(sub)
        self._total += 1
        if self._closing is not None:
            sub.close(self._closing)

    def remove(self, sub: Subscriber) -> None:
        """Unregister `sub` (once; later calls do nothing) and close it silently."""
        sub.closed = True  # silently: the socket is already ending
        subs = self._subscribers.get(sub.user_id)
        if subs is None or sub not in subs:
            return
        subs.remove(sub)
        self._total -= 1
        if not subs:
            del self._subscribers[sub.user_id]
            self._latest.pop(sub.user_id, None)

    def publish(self, frame: Frame) -> int:
        """Offer `frame` to every subscriber of its user; returns how many kept it (newer
        than what they had: a re-read of a version they have counts for none).

        Synchronous and O(subscribers of that user): each offer swaps a reference and
        at most starts a send task, so one stalled socket never delays the others.
        """
        subs = self._subscribers.get(frame.user_id)
        if not subs:
            return 0
        if frame.version > self._latest.get(frame.user_id, -1):
            self._latest[frame.user_id] = frame.version
        kept = 0
        for sub in subs:
            kept += sub.offer(frame)
        return kept

    def latest_version(self, user_id: str) -> int:
        """Highest version published for `user_id` while it had subscribers (-1: none)."""
        return self._latest.get(user_id, -1)

    def user_ids(self) -> list[str]:
        """Users with at least one subscriber: what the listener re-syncs after a reconnect."""
        return list(self._subscribers)

    def watched(self, user_id: str) -> bool:
        return user_id in self._subscribers

    def subscriber_count(self, user_id: str | None = None) -> int:
        """Subscribers of `user_id`, or of everyone when None; O(1) either way."""
        if user_id is None:
            return self._total
        subs = self._subscribers.get(user_id)
        return 0 if subs is None else len(subs)

    def close_all(self, reason: object) -> None:
        """Graceful shutdown: every current and future subscriber is closed with `reason`.

        Subscribers stay registered until their `async with` exits, so counts fall as
        sockets actually close.
        """
        self._closing = reason
        for subs in list(self._subscribers.values()):
            for sub in list(subs):
                sub.close(reason)
